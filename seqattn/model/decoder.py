"""Decoder: embedding + RNN + Luong attention + tanh(W_c [a_t; s_t]) + output layer W_y."""

from __future__ import annotations

import torch
from torch import nn

from ..data.tokenizer import PAD
from .attention import Attention
from .dropout import Dropout
from .rnn import RNNS, in_rnn_precision, run_rnn


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

    def attend(self, s: torch.Tensor, memory: torch.Tensor, keys: torch.Tensor | None,
               mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Return (attentional states s~ batch x T x hidden, weights batch x T x src_len or None).

        s: decoder states batch x T x hidden. Without attention s~ = s (the seed's plain seq2seq).
        """
        if self.attention is None:
            return self.dropout(s), None
        a, alpha = self.attention(s, keys, memory, mask)
        s_tilde = torch.tanh(self.combine(torch.cat([a, s], dim=-1)))  # tanh(W_c [a_t; s_t] + b_c)
        return self.dropout(s_tilde), alpha

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
             feed: torch.Tensor | None = None):
        """One decoding step: return (logits batch x vocab, new state, s~ batch x hidden, weights batch x src_len).

        y_prev: batch ids of the previous output (<sos> first); feed: s~_{t-1} with input feeding.
        """
        x = self.dropout(self.embed(y_prev))
        if self.input_feeding:
            x = torch.cat([x, feed], dim=-1)
        s, state = self._rnn_step(x, state)
        s_tilde, alpha = self.attend(s.unsqueeze(1), memory, keys, mask)
        return (self.out(s_tilde[:, 0]), state, s_tilde[:, 0], None if alpha is None else alpha[:, 0])

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

    def _cell_step(self, x: torch.Tensor, state):
        """Return (top-layer output batch x hidden, new state) of nn.LSTM/nn.GRU's cells on x (batch x in)."""
        rnn = self.rnn
        lstm = isinstance(rnn, nn.LSTM)
        hs, cs = [], []
        for layer in range(rnn.num_layers):
            w = [getattr(rnn, f"{name}_l{layer}") for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
            if lstm:
                h, c = torch.lstm_cell(x, (state[0][layer], state[1][layer]), *w)
                cs.append(c)
            else:
                h = torch.gru_cell(x, state[layer], *w)
            hs.append(h)
            x = h
        return x, ((torch.stack(hs), torch.stack(cs)) if lstm else torch.stack(hs))
