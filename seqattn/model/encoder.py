"""Encoder: embedding + (bi)RNN. Its states h_1..h_N are attention's keys and values; its final state
is the context vector."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from ..data.tokenizer import PAD

RNNS = {"lstm": nn.LSTM, "gru": nn.GRU}


class Encoder(nn.Module):
    """Embeds source ids and runs the RNN; returns every state h_i and the final state."""

    def __init__(self, vocab_size: int, emb_size: int, hidden_size: int, layers: int, bidirectional: bool,
                 rnn: str, dropout: float):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, emb_size, padding_idx=PAD)
        self.rnn = RNNS[rnn](emb_size, hidden_size, layers, batch_first=True, bidirectional=bidirectional,
                             dropout=dropout if layers > 1 else 0.0)
        self.dropout = nn.Dropout(dropout)
        self.layers, self.directions = layers, 2 if bidirectional else 1
        self.out_size = hidden_size * self.directions

    def forward(self, src: torch.Tensor, src_len: torch.Tensor):
        """Return (memory batch x src_len x out_size: h_1..h_N, zeros past each sentence's end; the final
        state: h (and c for an LSTM), each layers x batch x out_size, directions concatenated per layer).

        src: batch x src_len ids; src_len: batch lengths (CPU).
        """
        x = self.dropout(self.embed(src))                                     # batch x src_len x emb_size
        # packed: the RNN reads each sentence to its own end, so the final state is its last token's
        packed = pack_padded_sequence(x, src_len.cpu(), batch_first=True, enforce_sorted=False)
        out, final = self.rnn(packed)
        memory, _ = pad_packed_sequence(out, batch_first=True, total_length=src.size(1))
        final = tuple(map(self.merge_directions, final)) if isinstance(final, tuple) else self.merge_directions(final)
        return self.dropout(memory), final

    def merge_directions(self, state: torch.Tensor) -> torch.Tensor:
        """Return layers x batch x (directions*hidden) from the RNN's (layers*directions) x batch x hidden."""
        n, b, h = state.shape
        return state.view(self.layers, self.directions, b, h).transpose(1, 2).reshape(self.layers, b, -1)
