"""Decoder: embedding + RNN + Luong attention + s~_t = tanh(W_c [a_t; s_t]) + output layer W_y."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..data.tokenizer import PAD
from .attention import Attention
from .encoder import RNNS


class Decoder(nn.Module):
    """Predicts y_t from y_<t, the initial state (the context vector) and, with attention, every h_i."""

    def __init__(self, vocab_size: int, emb_size: int, hidden_size: int, layers: int, rnn: str, attention: str,
                 memory_size: int, dropout: float, input_feeding: bool, tie_embeddings: bool):
        super().__init__()
        self.hidden_size, self.input_feeding = hidden_size, input_feeding
        self.embed = nn.Embedding(vocab_size, emb_size, padding_idx=PAD)
        in_size = emb_size + (hidden_size if input_feeding else 0)
        self.rnn = RNNS[rnn](in_size, hidden_size, layers, batch_first=True, dropout=dropout if layers > 1 else 0.0)
        self.attention = None if attention == "none" else Attention(attention, hidden_size, memory_size)
        self.combine = None if attention == "none" else nn.Linear(memory_size + hidden_size, hidden_size)  # W_c, b_c
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(hidden_size, vocab_size)  # W_y, b_y
        if tie_embeddings:
            self.out.weight = self.embed.weight

    def keys(self, memory: torch.Tensor) -> torch.Tensor | None:
        """Return the attention keys of memory (batch x src_len x *), computed once per batch; None without."""
        return None if self.attention is None else self.attention.keys(memory)

    def forward(self, tgt_in: torch.Tensor, memory: torch.Tensor, mask: torch.Tensor, state, keys=None):
        """Return (logits batch x tgt_len x vocab, attention batch x tgt_len x src_len or None).

        Teacher forcing: tgt_in is <sos> y_1 .. y_M, whatever the model would have predicted. Without input
        feeding s_t does not depend on attention, so the RNN runs over the whole target in one call and
        every attention step is a batched matrix product; with input feeding it loops over `step`.
        """
        if keys is None:
            keys = self.keys(memory)
        if self.input_feeding:
            feed = memory.new_zeros(tgt_in.size(0), self.hidden_size)   # s~_0 = 0
            logits, alphas = [], []
            for t in range(tgt_in.size(1)):
                step_logits, state, feed, alpha = self.step(tgt_in[:, t], state, memory, keys, mask, feed)
                logits.append(step_logits)
                alphas.append(alpha)
            return torch.stack(logits, 1), torch.stack(alphas, 1)
        s, _ = self.rnn(self.dropout(self.embed(tgt_in)), state)       # s_1 .. s_M, from the context vector
        s_tilde, alpha = self.attend(s, memory, keys, mask)
        return self.out(s_tilde), alpha                                 # W_y s~_t + b_y (softmax: in the loss)

    def step(self, y_prev: torch.Tensor, state, memory: torch.Tensor, keys, mask: torch.Tensor,
             feed: torch.Tensor | None = None, group: int = 1, vocab: torch.Tensor | None = None):
        """One decoding step: return (logits rows x vocab, new state, s~_t rows x hidden, weights rows x
        src_len or None).

        y_prev: rows ids of the previous output (<sos> first); feed: s~_{t-1} with input feeding.
        memory, keys and mask have one row per `group` consecutive rows (beam search: a sentence's beams
        share its encoder states, which are then neither copied nor gathered per beam). vocab (a
        shortlist: V' target ids): the logits of those ids only, rows x V'.
        """
        x = self.dropout(self.embed(y_prev))
        if self.input_feeding:
            x = torch.cat([x, feed], dim=-1)                            # [y_{t-1}; s~_{t-1}]
        s, state = self.rnn(x.unsqueeze(1), state)                      # s_t: rows x 1 x hidden
        s_tilde, alpha = self.attend(s.view(-1, group, s.size(-1)), memory, keys, mask)
        s_tilde = s_tilde.reshape(-1, s_tilde.size(-1))
        logits = self.out(s_tilde) if vocab is None else self.out_rows(s_tilde, vocab)
        return logits, state, s_tilde, None if alpha is None else alpha.reshape(-1, alpha.size(-1))

    def out_rows(self, s_tilde: torch.Tensor, vocab: torch.Tensor) -> torch.Tensor:
        """Return W_y[vocab] s~ + b_y[vocab] (rows x V') for s_tilde (rows x hidden) and vocab (V' target ids,
        int64): the output layer over those ids only (another output layer, e.g. int8, computes every logit
        and keeps vocab's)."""
        out = self.out
        if not isinstance(out, nn.Linear):
            return out(s_tilde).index_select(-1, vocab)
        return F.linear(s_tilde, out.weight.index_select(0, vocab), out.bias.index_select(0, vocab))

    def attend(self, s: torch.Tensor, memory: torch.Tensor, keys: torch.Tensor | None,
               mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Return (attentional states s~ batch x T x hidden, weights batch x T x src_len or None) of the
        decoder states s (batch x T x hidden). Without attention s~ = s: the plain seq2seq."""
        if self.attention is None:
            return self.dropout(s), None
        a, alpha = self.attention(s, keys, memory, mask)                 # a_t = sum_i alpha_t,i h_i
        s_tilde = torch.tanh(self.combine(torch.cat([a, s], dim=-1)))   # s~_t = tanh(W_c [a_t; s_t] + b_c)
        return self.dropout(s_tilde), alpha
