"""seqattn: recurrent sequence-to-sequence models with Luong attention."""

__version__ = "0.1.0"
