"""Luong attention: score every encoder state against the decoder state, softmax, weighted sum."""

from __future__ import annotations

import torch
from torch import nn


class Attention(nn.Module):
    """The query s_t (decoder state) against the keys and values h_1..h_N (encoder states).

    Stateless: the caller computes `keys(memory)` once per source batch and passes it to every call,
    so the same module serves batched training, greedy steps and beam search.
    """

    def __init__(self, score: str, query_size: int, key_size: int):
        super().__init__()
        self.score = score
        if score == "general":    # score(s, h) = s^T W_a h
            self.w_a = nn.Linear(key_size, query_size, bias=False)
        elif score == "concat":   # score(s, h) = v_a^T tanh(W_a [s; h]) = v_a^T tanh(W_q s + W_k h)
            self.w_q = nn.Linear(query_size, query_size, bias=True)
            self.w_k = nn.Linear(key_size, query_size, bias=False)
            self.v_a = nn.Linear(query_size, 1, bias=False)
        elif score != "dot":      # score(s, h) = s^T h, the default: needs query_size == key_size
            raise ValueError(f"unknown attention score {score!r}")

    def keys(self, memory: torch.Tensor) -> torch.Tensor:
        """Return the keys (batch x src_len x query_size) of memory (batch x src_len x key_size): the part of
        the score that depends on h_i only (W_a h_i, W_k h_i, or h_i itself)."""
        if self.score == "general":
            return self.w_a(memory)
        if self.score == "concat":
            return self.w_k(memory)
        return memory

    def scores(self, query: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        """Return the attention scores e (batch x T x src_len): e_t,i = score(s_t, h_i) of every decoder state
        s_t in query (batch x T x query_size) against every key from `keys()` (batch x src_len x *)."""
        if self.score == "concat":
            return self.v_a(torch.tanh(self.w_q(query).unsqueeze(2) + keys.unsqueeze(1))).squeeze(-1)
        return torch.bmm(query, keys.transpose(1, 2))               # e_t = [score(s_t, h_1) .. score(s_t, h_N)]

    def forward(self, query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
                mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (a: batch x T x value_size, alpha: batch x T x src_len).

        query: batch x T x query_size (decoder states s_t, Q), keys: from `keys()` (K), values:
        batch x src_len x value_size (encoder states h_i, V), mask: batch x src_len, True at real tokens.
        """
        e = self.scores(query, keys)
        e = e.masked_fill(~mask.unsqueeze(1), float("-inf"))        # padded positions -> -inf: weight exactly 0
        alpha = torch.softmax(e.float(), dim=-1).to(values.dtype)   # alpha_t = softmax(e_t), sums to 1
        return torch.bmm(alpha, values), alpha                     # a_t = sum_i alpha_t,i h_i
