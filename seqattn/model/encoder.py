"""Encoder: embedding + (bi)RNN over packed sequences; its final state is the context vector."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from ..data.tokenizer import PAD
from .dropout import Dropout
from .packed import PackedLinear, pack
from .rnn import RNNS, TABLE_MAX, gate_order, lstm_from_tables, pad_packed, run_rnn


class EncoderPrepared:
    """What encoding derives from an LSTM encoder's fixed weights (`Encoder.prepare`): W_hh of each direction
    packed, and a table of every id's input projection, (directions*vocab) x 4*hidden, gates i f o g, whose
    rows are computed as ids first occur (`cover`): test2016 meets a quarter of the vocabulary (2,116 of 8,001)."""

    def __init__(self, embed: torch.Tensor, w_ih: torch.Tensor, bias: torch.Tensor, hh: list[PackedLinear]):
        self.embed, self.w_ih, self.bias, self.hh = embed, w_ih, bias, hh   # w_ih, bias: directions stacked
        self.gates = w_ih.size(0) // len(hh)
        self.table = embed.new_empty(len(hh) * embed.size(0), self.gates)
        self.filled = torch.zeros(embed.size(0), dtype=torch.bool, device=embed.device)

    def cover(self, ids: torch.Tensor) -> torch.Tensor:
        """Return the table with the rows of ids (any shape) computed."""
        need = ids.unique()
        need = need[~self.filled[need]]
        if len(need):
            proj = torch.addmm(self.bias, self.embed.index_select(0, need), self.w_ih.t())
            vocab = self.embed.size(0)
            for d in range(len(self.hh)):
                self.table[d * vocab + need] = proj[:, d * self.gates : (d + 1) * self.gates]
            self.filled[need] = True
        return self.table


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

    def forward(self, src: torch.Tensor, src_len: torch.Tensor, prepared: EncoderPrepared | None = None):
        """Return (memory batch x src_len x out_size, final state).

        src: batch x src_len ids; src_len: batch lengths (CPU). The final state is h (and c for
        LSTM), each layers x batch x out_size, directions concatenated per layer: the context vector.
        prepared: this encoder's `prepare()` (used in eval mode without gradients: the same function, faster).
        """
        if prepared is not None and not self.training and not torch.is_grad_enabled():
            memory, h, c = lstm_from_tables(src, src_len, prepared.cover(src), prepared.hh)
            return memory, (h.unsqueeze(0), c.unsqueeze(0))
        # ids are packed before the embedding, and dropout sees real tokens only (not the padding)
        ids = pack_padded_sequence(src, src_len.cpu(), batch_first=True, enforce_sorted=False)
        out, final = run_rnn(self.rnn, ids._replace(data=self.dropout(self.embed(ids.data))))
        out = out._replace(data=self.dropout(out.data))
        memory = pad_packed(out, src.size(1))
        merge = self._merge_directions
        final = tuple(merge(s) for s in final) if isinstance(final, tuple) else merge(final)
        return memory, final

    @torch.no_grad()
    def prepare(self) -> EncoderPrepared | None:
        """Return what CPU inference derives once from the weights while they stay fixed, or None where it
        does not apply (not a one-layer LSTM with biases, not float32 on the CPU, a table over TABLE_MAX).

        Encoding then looks up each id's input projection (the table) and multiplies by W_hh from weights
        packed for oneDNN, both directions in one loop (`lstm_from_tables`), instead of torch's packed
        LSTM (test2016 greedy 934 -> 955 sentences/s, `benchmarks/decode_parts.py`). The module keeps no copy."""
        rnn = self.rnn
        if (type(rnn) is not nn.LSTM or rnn.num_layers != 1 or not rnn.bias or rnn.proj_size
                or self.embed.num_embeddings * 4 * rnn.hidden_size * self.directions > TABLE_MAX):
            return None
        suffixes = ("", "_reverse")[: self.directions]
        hh = [pack(gate_order(getattr(rnn, f"weight_hh_l0{x}"))) for x in suffixes]
        if any(h is None for h in hh):
            return None
        snapshot = lambda name: torch.cat([gate_order(getattr(rnn, f"{name}_l0{x}")) for x in suffixes])  # noqa: E731
        return EncoderPrepared(self.embed.weight.detach().clone(), snapshot("weight_ih"),
                               snapshot("bias_ih") + snapshot("bias_hh"), hh)

    def _merge_directions(self, state: torch.Tensor) -> torch.Tensor:
        """Return layers x batch x (directions*hidden) from (layers*directions) x batch x hidden."""
        n, b, h = state.shape
        return state.view(self.layers, self.directions, b, h).transpose(1, 2).reshape(self.layers, b, -1)
