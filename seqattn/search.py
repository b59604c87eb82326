"""Decoding from <sos> to <eos>: batched greedy search (one place for every search)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .data.tokenizer import EOS, SOS
from .model.seq2seq import Seq2Seq


@dataclass
class Hypothesis:
    """One decoded output."""

    ids: list[int]                  # output ids, <eos> excluded
    score: float                    # sum of log-probabilities, <eos> included when reached
    attention: torch.Tensor | None  # out_len (+1 for <eos>) x src_len weights, or None without attention
    finished: bool                  # reached <eos> (else stopped at the length limit)


def max_lengths(src_len: torch.Tensor, ratio: float, cap: int | None = None) -> torch.Tensor:
    """Return each sentence's output limit (batch): ratio x source length + 10, at most cap."""
    limit = (src_len.float() * ratio).long() + 10
    return limit.clamp(max=cap) if cap else limit


@torch.no_grad()
def greedy(model: Seq2Seq, src: torch.Tensor, src_len: torch.Tensor, max_len: torch.Tensor) -> list[Hypothesis]:
    """Return the greedy output of each sentence of src (batch x src_len, lengths src_len on CPU).

    Each sentence stops at its own <eos> or its limit max_len (batch); the loop ends when all have.
    """
    enc = model.encode(src, src_len)
    dec = model.decoder
    b, device = src.size(0), src.device
    y = torch.full((b,), SOS, dtype=torch.long, device=device)
    feed = enc.memory.new_zeros(b, dec.hidden_size) if dec.input_feeding else None
    state = enc.state
    limit = max_len.to(device)
    done = torch.zeros(b, dtype=torch.bool, device=device)
    out_len = limit.clone()
    tokens, alphas = [], []
    score = torch.zeros(b, device=device)
    for t in range(int(limit.max())):
        logits, state, feed, alpha = dec.step(y, state, enc.memory, enc.keys, enc.mask, feed)
        logp = torch.log_softmax(logits.float(), dim=-1)
        best, y = logp.max(dim=-1)
        score += best.masked_fill(done, 0.0)
        tokens.append(y)
        if alpha is not None:
            alphas.append(alpha)
        newly = ~done & ((y == EOS) | (t + 1 >= limit))
        out_len = torch.where(newly, torch.full_like(out_len, t + 1), out_len)
        done |= newly
        if bool(done.all()):
            break
    ids = torch.stack(tokens, 1).cpu()
    att = torch.stack(alphas, 1).float().cpu() if alphas else None
    out_len, score = out_len.cpu().tolist(), score.cpu().tolist()
    hyps = []
    for i in range(b):
        row = ids[i, : out_len[i]].tolist()
        finished = row[-1] == EOS
        n_src = int(src_len[i])
        hyps.append(Hypothesis(row[:-1] if finished else row, score[i],
                               None if att is None else att[i, : out_len[i], :n_src], finished))
    return hyps
