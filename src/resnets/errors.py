"""The library's errors: each carries one line that says what is wrong and where."""


class ResnetsError(Exception):
    """Base of every error the `resnets` command reports as one line with a non-zero exit."""
