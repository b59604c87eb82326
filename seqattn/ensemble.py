"""Several models that share their vocabularies, decoding as one: each step averages their log-probabilities."""

from __future__ import annotations

import torch

from .model.seq2seq import Encoded


class Ensemble:
    """The searches' `Steps` for several models (each a `Seq2Seq` or its `fast.Decoding`): the encoded
    source, the decoder states and the input-feeding vectors are tuples with one entry per model, and a
    step's scores are the mean of the models' log-probabilities, log p(y) = 1/M sum_m log p_m(y) (the
    searches normalise it again: the normalised geometric mean of the models' distributions). An
    ensemble of one model decodes as that model does."""

    def __init__(self, members: list):
        if not members:
            raise ValueError("an ensemble needs at least one model")
        self.members = list(members)

    def encode(self, src: torch.Tensor, src_len: torch.Tensor) -> tuple[Encoded, ...]:
        """Return each model's Encoded of src (batch x src_len ids, lengths src_len on the CPU)."""
        return tuple(m.encode(src, src_len) for m in self.members)

    def initial_feed(self, rows: int, device: torch.device) -> tuple:
        """Return each model's s~_0 (rows x its dec_hidden, or None without input feeding)."""
        return tuple(m.initial_feed(rows, device) for m in self.members)

    def step(self, y_prev: torch.Tensor, state: tuple, enc: tuple, feed: tuple | None = None, group: int = 1,
             vocab: torch.Tensor | None = None):
        """Return (mean log-probabilities rows x vocab, the models' new states, their s~_t, the mean of their
        attention weights rows x src_len, or None when no model attends); vocab: a shortlist's target ids,
        the only ones scored."""
        feed = feed if feed is not None else (None,) * len(self.members)
        outs = [m.step(y_prev, s, e, f, group, vocab) for m, s, e, f in zip(self.members, state, enc, feed)]
        logp = torch.stack([torch.log_softmax(o[0].float(), -1) for o in outs]).mean(0)
        alphas = [o[3].float() for o in outs if o[3] is not None]
        alpha = torch.stack(alphas).mean(0) if alphas else None
        return logp, tuple(o[1] for o in outs), tuple(o[2] for o in outs), alpha
