"""Encoder: embedding + (bi)RNN over packed sequences; its final state is the context vector."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from ..data.tokenizer import PAD
from .dropout import Dropout
from .rnn import RNNS, pad_packed, run_rnn


class Encoder(nn.Module):
    """Embeds source ids and runs the RNN; returns every state h_i and the final state."""

    def __init__(self, vocab_size: int, emb_size: int, hidden_size: int, layers: int, bidirectional: bool,
                 rnn: str, dropout: float):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, emb_size, padding_idx=PAD)
        self.rnn = RNNS[rnn](emb_size, hidden_size, layers, batch_first=True, bidirectional=bidirectional,
                             dropout=dropout if layers > 1 else 0.0)
        self.dropout = Dropout(dropout)
        self.layers, self.directions = layers, 2 if bidirectional else 1
        self.out_size = hidden_size * self.directions

    def forward(self, src: torch.Tensor, src_len: torch.Tensor):
        """Return (memory batch x src_len x out_size, final state).

        src: batch x src_len ids; src_len: batch lengths (CPU). The final state is h (and c for
        LSTM), each layers x batch x out_size, directions concatenated per layer: the context vector.
        """
        # ids are packed before the embedding, and dropout sees real tokens only (not the padding)
        ids = pack_padded_sequence(src, src_len.cpu(), batch_first=True, enforce_sorted=False)
        out, final = run_rnn(self.rnn, ids._replace(data=self.dropout(self.embed(ids.data))))
        out = out._replace(data=self.dropout(out.data))
        memory = pad_packed(out, src.size(1))
        merge = self._merge_directions
        final = tuple(merge(s) for s in final) if isinstance(final, tuple) else merge(final)
        return memory, final

    def _merge_directions(self, state: torch.Tensor) -> torch.Tensor:
        """Return layers x batch x (directions*hidden) from (layers*directions) x batch x hidden."""
        n, b, h = state.shape
        return state.view(self.layers, self.directions, b, h).transpose(1, 2).reshape(self.layers, b, -1)
