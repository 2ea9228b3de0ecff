"""The one exception type for user mistakes: the CLI prints it as a one-line error."""


class LiifError(Exception):
    """A user-facing error (bad input, bad file, bad option) with a message worth showing as is."""


class CheckpointError(LiifError):
    """A checkpoint that cannot be read, is unsafe, or does not fit its model."""


def one_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type name when the message is empty), for one-line errors."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
