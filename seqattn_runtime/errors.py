"""The one exception type for user mistakes (bad file, bad option, bad model or export directory), shared by
seqattn and seqattn_runtime."""


class SeqattnError(Exception):
    """A user-facing error: the CLIs print its message as one line and exit with code 2."""
