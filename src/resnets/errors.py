"""The library's errors: each carries one line that says what is wrong and where."""

# Ends an unreadable image's message; the command line names the flag instead, on the commands that have it.
SKIP_HINT = "skip_bad_images=True to go on without it"
# Ends a classifier-size mismatch; an argument of the API only, so the command line leaves it out.
RESET_CLASSIFIER_HINT = "pass reset_classifier=True to load all but the classifier"


class ResnetsError(Exception):
    """Base of every error the `resnets` command reports as one line with a non-zero exit."""


class RuntimeUnsupported(ResnetsError, ValueError):
    """A runtime cannot serve a precision on this machine (OpenVINO's bf16 on a CPU without native BF16): the automatic
    choice leaves it out, a runtime asked for by name reports it."""


class WriteError(ResnetsError, OSError):
    """A file that could not be written; whatever stood at its path before is left as it was."""


def first_line(error: BaseException, limit: int | None = None) -> str:
    """The first non-blank line of an exception's message (at most `limit` characters), or its type name when the
    message is empty: the part of a library's long error that fits one line of ours.

    Example:
        >>> first_line(RuntimeError("unexpected pos 94592 vs 94488\\nframe #0 ..."))
        'unexpected pos 94592 vs 94488'
    """
    for line in str(error).splitlines():
        if line.strip():
            return line.strip()[:limit]
    return type(error).__name__
