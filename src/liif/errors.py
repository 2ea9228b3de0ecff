"""The one exception type for user mistakes: the CLI prints it as a one-line error."""


class LiifError(Exception):
    """A user-facing error (bad input, bad file, bad option) with a message worth showing as is."""


class CheckpointError(LiifError):
    """A checkpoint that cannot be read, is unsafe, or does not fit its model."""
