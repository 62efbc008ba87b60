"""The library's errors: each carries one line that says what is wrong and where."""


class ResnetsError(Exception):
    """Base of every error the `resnets` command reports as one line with a non-zero exit."""


class RuntimeUnsupported(ResnetsError, ValueError):
    """A runtime cannot serve a precision on this machine (OpenVINO's bf16 on a CPU without native BF16): the automatic
    choice leaves it out, a runtime asked for by name reports it."""
