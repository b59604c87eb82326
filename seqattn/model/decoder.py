"""Decoder: embedding + RNN + Luong attention + tanh(W_c [a_t; s_t]) + output layer W_y."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..data.tokenizer import PAD
from .attention import Attention
from .dropout import Dropout
from .packed import PackedLinear, pack
from .rnn import RNNS, TABLE_MAX, gate_order, in_rnn_precision, run_rnn


@dataclass
class DecoderPrepared:
    """What decoding derives once from a decoder's fixed weights (`Decoder.prepare`); None: does not apply."""

    table: torch.Tensor | None      # vocab x gates*hidden: the first RNN layer's input projection of every id
    hh: PackedLinear | None         # that layer's W_hh (GRU: with b_hh), used with the table; an LSTM's gates
                                    # (of both) are then in the order i, f, o, g (rnn.gate_order)
    context: PackedLinear | None    # W_c's columns over a_t, W_ca: applied once per batch to the memory
    combine: PackedLinear | None    # W_c's columns over s_t with b_c: s~_t = tanh(this(s_t) + alpha_t . W_ca h)
    out: PackedLinear | None        # W_y s~_t + b_y


class Decoder(nn.Module):
    """Predicts y_t from y_<t, the initial state (context vector) and, with attention, every h_i."""

    def __init__(self, vocab_size: int, emb_size: int, hidden_size: int, layers: int, rnn: str, attention: str,
                 memory_size: int, dropout: float, input_feeding: bool, tie_embeddings: bool):
        super().__init__()
        self.hidden_size, self.input_feeding = hidden_size, input_feeding
        self.embed = nn.Embedding(vocab_size, emb_size, padding_idx=PAD)
        in_size = emb_size + (hidden_size if input_feeding else 0)
        self.rnn = RNNS[rnn](in_size, hidden_size, layers, batch_first=True, dropout=dropout if layers > 1 else 0.0)
        self.attention = None if attention == "none" else Attention(attention, hidden_size, memory_size)
        self.combine = None if attention == "none" else nn.Linear(memory_size + hidden_size, hidden_size)  # W_c, b_c
        self.dropout = Dropout(dropout)
        self.out = nn.Linear(hidden_size, vocab_size)  # W_y, b_y
        if tie_embeddings:
            self.out.weight = self.embed.weight

    def keys(self, memory: torch.Tensor) -> torch.Tensor | None:
        """Return the attention keys of memory (batch x src_len x *), computed once per batch."""
        return None if self.attention is None else self.attention.keys(memory)

    def attend(self, s: torch.Tensor, memory: torch.Tensor, keys: torch.Tensor | None, mask: torch.Tensor,
               combine: PackedLinear | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Return (attentional states s~ batch x T x hidden, weights batch x T x src_len or None).

        s: decoder states batch x T x hidden. Without attention s~ = s (the seed's plain seq2seq).
        combine: `prepare()`'s, with memory already multiplied by W_ca (`project_memory`): the attention
        then yields W_ca a_t, and s~ = tanh(W_cs s_t + b_c + W_ca a_t), the same as W_c [a_t; s_t] + b_c.
        """
        if self.attention is None:
            return self.dropout(s), None
        a, alpha = self.attention(s, keys, memory, mask)
        if combine is not None:
            return torch.tanh(combine(s, add=a)), alpha
        s_tilde = torch.tanh(self.combine(torch.cat([a, s], dim=-1)))  # tanh(W_c [a_t; s_t] + b_c)
        return self.dropout(s_tilde), alpha

    def project_memory(self, memory: torch.Tensor, prepared: DecoderPrepared | None) -> torch.Tensor:
        """Return the attention values for decoding steps with `prepared`: W_ca h_i (batch x src_len x hidden),
        once per batch instead of W_ca a_t at every step and beam; memory itself without it."""
        prepared = self._applies(prepared)
        return memory if prepared is None or prepared.context is None else prepared.context(memory)

    def _applies(self, prepared: DecoderPrepared | None) -> DecoderPrepared | None:
        """Return prepared where it applies: inference (eval mode, no gradients), else None."""
        return prepared if not self.training and not torch.is_grad_enabled() else None

    def forward(self, tgt_in: torch.Tensor, memory: torch.Tensor, mask: torch.Tensor, state, keys=None):
        """Return (logits batch x tgt_len x vocab, attention batch x tgt_len x src_len or None).

        Teacher forcing: tgt_in is <sos> y_1 .. y_M. Without input feeding s_t does not depend on
        attention, so the RNN runs over the whole target in one call and every attention step is a
        batched matrix product; with input feeding it loops over `step`.
        """
        if keys is None:
            keys = self.keys(memory)
        if self.input_feeding:
            feed = memory.new_zeros(tgt_in.size(0), self.hidden_size)
            logits, alphas = [], []
            for t in range(tgt_in.size(1)):
                step_logits, state, feed, alpha = self.step(tgt_in[:, t], state, memory, keys, mask, feed)
                logits.append(step_logits)
                alphas.append(alpha)
            return torch.stack(logits, 1), torch.stack(alphas, 1)
        s, _ = run_rnn(self.rnn, self.dropout(self.embed(tgt_in)), state)
        s_tilde, alpha = self.attend(s, memory, keys, mask)
        return self.out(s_tilde), alpha

    def step(self, y_prev: torch.Tensor, state, memory: torch.Tensor, keys, mask: torch.Tensor,
             feed: torch.Tensor | None = None, group: int = 1, prepared: DecoderPrepared | None = None):
        """One decoding step: return (logits rows x vocab, new state, s~ rows x hidden, weights rows x src_len).

        y_prev: rows ids of the previous output (<sos> first); feed: s~_{t-1} with input feeding.
        memory, keys and mask have one row per `group` consecutive rows (beam search: a sentence's
        beams share its encoder states, which are then neither copied nor gathered per beam). prepared:
        this decoder's `prepare()` (used in eval mode without gradients: the same function, faster; memory
        must then come from `project_memory`), or None.
        """
        fast = self._applies(prepared) or DecoderPrepared(None, None, None, None, None)
        if fast.table is not None:   # the first layer's input projection of y_prev, looked up
            s, state = in_rnn_precision(lambda x, state: self._cell_step(x, state, fast), y_prev, state)
        else:
            x = self.dropout(self.embed(y_prev))
            if self.input_feeding:
                x = torch.cat([x, feed], dim=-1)
            s, state = self._rnn_step(x, state)
        s_tilde, alpha = self.attend(s.view(-1, group, s.size(-1)), memory, keys, mask, fast.combine)
        s_tilde = s_tilde.reshape(-1, s_tilde.size(-1))
        logits = fast.out(s_tilde) if fast.out is not None else self.out(s_tilde)
        return logits, state, s_tilde, None if alpha is None else alpha.reshape(-1, alpha.size(-1))

    def _rnn_step(self, x: torch.Tensor, state):
        """Return (top-layer output batch x hidden, new state) of one RNN step on x (batch x in).

        In inference the cell functions run directly: nn.LSTM/nn.GRU on one step spend more time
        preparing weights (oneDNN reorders them on every call) than computing, about 2x slower. Both
        run in the RNN precision of training (float32 under autocast, see model/rnn.py).
        """
        rnn = self.rnn
        if self.training or type(rnn) not in (nn.LSTM, nn.GRU):   # training, or quantized modules
            out, state = run_rnn(rnn, x.unsqueeze(1), state)
            return out[:, 0], state
        return in_rnn_precision(self._cell_step, x, state)

    def _cell_step(self, x: torch.Tensor, state, prepared: DecoderPrepared | None = None):
        """Return (top-layer output batch x hidden, new state) of nn.LSTM/nn.GRU's cells on x (batch x in),
        or with `prepared` (its table, see `input_table`) on x = the previous output ids (batch)."""
        table = None if prepared is None else prepared.table
        rnn = self.rnn
        lstm = isinstance(rnn, nn.LSTM)
        hs, cs = [], []
        for layer in range(rnn.num_layers):
            w = [getattr(rnn, f"{name}_l{layer}") for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
            if layer == 0 and table is not None:
                h, c = _cell_from_projection(table.index_select(0, x), state[0][0] if lstm else state[0],
                                             state[1][0] if lstm else None, w[1], w[3], lstm, prepared.hh)
                if lstm:
                    cs.append(c)
            elif lstm:
                h, c = torch.lstm_cell(x, (state[0][layer], state[1][layer]), *w)
                cs.append(c)
            else:
                h = torch.gru_cell(x, state[layer], *w)
            hs.append(h)
            x = h
        stack = lambda xs: xs[0].unsqueeze(0) if len(xs) == 1 else torch.stack(xs)   # noqa: E731 (one layer: no copy)
        return x, ((stack(hs), stack(cs)) if lstm else stack(hs))

    @torch.no_grad()
    def prepare(self) -> DecoderPrepared:
        """Return what decoding can derive once from the weights while they stay fixed: the input table
        and, on the CPU in float32, the step's matrix products with their weights packed for oneDNN
        (model/packed.py). The module keeps no copy; the caller keeps it while the weights do not change."""
        rnn = self.rnn
        linear = lambda m: m is not None and type(m) is nn.Linear   # noqa: E731 (not quantized modules)
        lstm, hh = type(rnn) is nn.LSTM, None
        if type(rnn) in (nn.LSTM, nn.GRU):     # not the quantized modules
            hh = pack(gate_order(rnn.weight_hh_l0) if lstm else rnn.weight_hh_l0, None if lstm else rnn.bias_hh_l0)
        table = self.input_table(ifog=hh is not None)   # with W_hh packed, an LSTM's gates run as i, f, o, g
        hh = None if table is None else hh
        context = combine = None
        if linear(self.combine):
            w_ca, w_cs = self.combine.weight.split([self.combine.in_features - self.hidden_size, self.hidden_size], 1)
            context, combine = pack(w_ca), pack(w_cs, self.combine.bias)
            if context is None or combine is None:
                context = combine = None
        return DecoderPrepared(table, hh, context, combine, pack(self.out.weight, self.out.bias) if linear(self.out)
                               else None)

    @torch.no_grad()
    def input_table(self, ifog: bool = False) -> torch.Tensor | None:
        """Return the first RNN layer's input projection of every target id, vocab x gates*hidden
        (embedding @ W_ih^T + b_ih, and + b_hh for an LSTM), or None where it does not apply (input
        feeding, quantized or other RNN modules, a table over TABLE_MAX elements). ifog: an LSTM's gates
        in the order i, f, o, g (rnn.gate_order) instead of torch's i, f, g, o.

        A decoding step (`step(..., prepared=)`) then gathers one row per sentence instead of multiplying the
        embedding by W_ih: a third of the LSTM's matrix product at the Multi30k size. The module keeps no
        copy (a cached one would go stale when the weights change); the caller keeps it while they do not."""
        rnn = self.rnn
        if self.input_feeding or type(rnn) not in (nn.LSTM, nn.GRU) or not rnn.bias or getattr(rnn, "proj_size", 0):
            return None
        params = (self.embed.weight, rnn.weight_ih_l0, rnn.bias_ih_l0, rnn.bias_hh_l0)
        if self.embed.weight.size(0) * rnn.weight_ih_l0.size(0) > TABLE_MAX:
            return None
        with torch.autocast(params[0].device.type, enabled=False):   # float32, as the RNN runs
            emb, w_ih, b_ih, b_hh = (p.float() for p in params)
            if not isinstance(rnn, nn.LSTM):
                return torch.addmm(b_ih, emb, w_ih.t())
            order = gate_order if ifog else (lambda w: w)
            return torch.addmm(order(b_ih + b_hh), emb, order(w_ih).t())


def _cell_from_projection(gx: torch.Tensor, h: torch.Tensor, c: torch.Tensor | None, w_hh: torch.Tensor,
                          b_hh: torch.Tensor, lstm: bool, hh: PackedLinear | None = None):
    """Return the LSTM's (h, c) or the GRU's h after one step, given the input projection gx (batch x
    gates*hidden, with the biases `input_table` folds in) and the previous h, c (batch x hidden); hh:
    W_hh packed (`Decoder.prepare`; an LSTM's gates then in the order i, f, o, g, in place: three fewer
    element-wise operations), else w_hh and b_hh multiply as they are."""
    if lstm and hh is not None:
        gates = hh(h, add=gx)
        size = gates.size(1) // 4
        gates[:, : 3 * size].sigmoid_()
        gates[:, 3 * size :].tanh_()
        i, f, o, g = gates.chunk(4, 1)
        c = torch.addcmul(f * c, i, g)
        return o * torch.tanh(c), c
    if lstm:
        i, f, g, o = torch.addmm(gx, h, w_hh.t()).chunk(4, 1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c
    x_r, x_z, x_n = gx.chunk(3, 1)
    h_r, h_z, h_n = (hh(h) if hh is not None else torch.addmm(b_hh, h, w_hh.t())).chunk(3, 1)
    r, z = torch.sigmoid(x_r + h_r), torch.sigmoid(x_z + h_z)
    n = torch.tanh(x_n + r * h_n)
    return n + z * (h - n), None
