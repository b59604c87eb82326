"""The RNN encoder-decoder with Luong attention: encoder, attention, decoder, and the seq2seq that joins them."""

from .seq2seq import Seq2Seq

__all__ = ["Seq2Seq"]
