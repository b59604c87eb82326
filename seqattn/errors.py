"""The one exception type for user mistakes (bad file, bad config, bad model directory)."""


class SeqattnError(Exception):
    """A user-facing error: the CLI prints its message as one line and exits with code 2."""
