"""The one exception type for user mistakes (bad file, bad config, bad model directory): seqattn_runtime's."""

from seqattn_runtime.errors import SeqattnError

__all__ = ["SeqattnError"]
