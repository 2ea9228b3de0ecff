"""The one exception type for user mistakes: the CLI prints it as a one-line error."""


class LiifError(Exception):
    """A user-facing error (bad input, bad file, bad option) with a message worth showing as is."""


class CheckpointError(LiifError):
    """A checkpoint that cannot be read, is unsafe, or does not fit its model."""


class Caller:
    """Whom errors speak to: the liif command's user while it runs (``liif.cli.main`` sets ``command_line``),
    else a Python caller; ``option`` words options for them."""

    command_line = False


def option(name: str, value: object = None, flag: str | None = None) -> str:
    """The API's option ``name`` (set to ``value``, if given) in the caller's terms: ``max_pixels``,
    ``precision='bf16'``, ``overwrite=True`` from Python; ``--max-pixels``, ``--precision bf16``, ``--overwrite``
    from the liif command, whose flag is ``flag`` where it is not named after the parameter."""
    if not Caller.command_line:
        return name if value is None else f"{name}={value!r}"
    switch = "--" + (flag or name).replace("_", "-")
    return switch if value is None or value is True else f"{switch} {value}"


class OutputExists(LiifError):
    """An output that is there already, refused unless it is to be replaced: the message says how in the
    caller's words (``option``)."""

    def __init__(self, what: str) -> None:
        super().__init__(f"{what}; pass {option('overwrite', True)} to replace it")


CONTROL_ESCAPES = {code: f"\\x{code:02x}" for code in (*range(32), 127)} | {10: "\\n", 13: "\\r", 9: "\\t"}


def printable(text: str) -> str:
    """``text`` with control characters escaped, so that a file name holding a newline (or a terminal escape)
    keeps an error on one line and the terminal as it was."""
    return text.translate(CONTROL_ESCAPES)


def one_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type name when the message is empty), for one-line errors."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def os_error_behind(exc: BaseException) -> OSError | None:
    """The OSError ``exc`` is or was raised from or while handling: torch.save's zip writer turns a failed
    ``write`` into a RuntimeError ("unexpected pos 64 vs 0") raised while the OSError is handled."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, OSError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)  # "from None" ends it
    return None


def os_reason(exc: BaseException) -> str:
    """Why a file operation failed, in a few words: the system's reason ("No space left on device") when an
    OSError is behind ``exc``, FFmpeg's ("Invalid data found when processing input", without PyAV's error number
    and file name) for PyAV's errors, else its first line."""
    cause = os_error_behind(exc) or exc
    return getattr(cause, "strerror", None) or one_line(cause)
