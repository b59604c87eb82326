"""Decoding the model from <sos> to <eos>: the plain search (`seqattn_runtime.search`: greedy, sampling,
beam search with the exact or a bounded stopping rule, n-best) over the model's own `encode` and `step`.

This is the reference: one readable search, the same that decodes an ONNX export without torch, with the
rules of `seqattn_runtime.rules`. `Translator` decodes with the engine (`seqattn.fast.search`), which
computes the same outputs faster and is tested against this.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch

from seqattn_runtime import search as plain
from seqattn_runtime.rules import EXACT, Hypothesis, Stopping, length_penalty
from seqattn_runtime.rules import max_lengths as _max_lengths
from seqattn_runtime.search import Sampling

from .model.seq2seq import Encoded, Seq2Seq

__all__ = ["Hypothesis", "Sampling", "Shortlisted", "Steps", "Stopping", "beam_search", "choices", "greedy",
           "length_penalty", "max_lengths", "select"]


class Steps(Protocol):
    """What decodes: `Seq2Seq` itself, `fast.Decoding` of it (the same results), or an `Ensemble` of
    several (whose encoded sources, states and feeds are tuples, one entry per model)."""

    def encode(self, src: torch.Tensor, src_len: torch.Tensor) -> Encoded: ...

    def initial_feed(self, rows: int, device: torch.device) -> torch.Tensor | None: ...

    def step(self, y_prev: torch.Tensor, state, enc: Encoded, feed: torch.Tensor | None = None,
             group: int = 1): ...


def max_lengths(src_len: torch.Tensor, ratio: float) -> torch.Tensor:
    """Return each sentence's output limit (batch, on the CPU): `rules.max_lengths` of src_len (batch)."""
    return torch.from_numpy(_max_lengths(src_len.cpu().numpy(), ratio))


def tree_map(fn, tree):
    """Return tree (a tensor, None, or a tuple of trees: an LSTM's (h, c), an ensemble's members) with fn
    applied to every tensor."""
    if tree is None:
        return None
    return tuple(tree_map(fn, t) for t in tree) if isinstance(tree, tuple) else fn(tree)


def pick_rows(tree, index: torch.Tensor, dim: int = 0):
    """Return the rows `index` along dim of every tensor of tree (see `tree_map`)."""
    return tree_map(lambda t: t.index_select(dim, index), tree)


def pick_state(state, index: torch.Tensor):
    """Return the rows `index` of a decoder state (h, c) or h, each layers x batch x hidden (or a tuple of
    them, an ensemble's)."""
    return pick_rows(state, index, 1)


def state_of(enc) -> object:
    """Return the decoder state of an encoded batch (an ensemble's tuple: the tuple of their states)."""
    if isinstance(enc, tuple):
        return tuple(state_of(e) for e in enc)
    return enc.state if isinstance(enc, Encoded) else enc.decoder_state()


def select(enc, index: torch.Tensor):
    """Return the rows `index` (batch ids) of an encoded batch: an Encoded, an ensemble's tuple of them,
    or the encoded type of a `Steps` of its own (which selects its rows itself)."""
    if isinstance(enc, tuple):
        return tuple(select(e, index) for e in enc)
    if not isinstance(enc, Encoded):
        return enc.select(index)
    memory = enc.memory.index_select(0, index)
    keys = memory if enc.keys is enc.memory else None if enc.keys is None else enc.keys.index_select(0, index)
    return Encoded(memory, keys, enc.mask.index_select(0, index), pick_state(enc.state, index))


class ModelSteps:
    """`seqattn_runtime.search.Steps` of src (batch x src_len ids, lengths src_len on the CPU) for a torch
    `Steps`: the searches' arrays in, the model's tensors inside, log-probabilities and weights out as
    float32 arrays."""

    def __init__(self, steps: Steps, src: torch.Tensor, src_len: torch.Tensor):
        self.steps, self.src, self.src_len, self.device = steps, src, src_len, src.device
        self.enc = self.rows = None         # the encoded batch; its rows of the sentences decoding
        self.sents = np.arange(src.size(0))

    def start(self):
        """Return (the encoded batch's decoder state, the input-feeding vectors or None), one row each."""
        self.enc = self.rows = self.steps.encode(self.src, self.src_len)
        return state_of(self.enc), self.steps.initial_feed(len(self.sents), self.device)

    def take(self, state, feed, rows: np.ndarray):
        """Return (state, feed) with the rows `rows` only."""
        index = torch.as_tensor(rows, device=self.device)
        return pick_state(state, index), pick_rows(feed, index)

    def step(self, y: np.ndarray, state, feed, sents: np.ndarray):
        """Return (log-probabilities rows x V, state, feed, weights rows x src_len or None) of one step of the
        rows y (len(sents) groups of consecutive rows, group g decoding sentence sents[g])."""
        if not np.array_equal(sents, self.sents):    # sentences have finished: their rows leave
            self.rows, self.sents = select(self.enc, torch.as_tensor(sents, device=self.device)), sents
        logits, state, feed, alpha = self.steps.step(torch.as_tensor(y, device=self.device), state, self.rows,
                                                     feed, len(y) // len(sents))
        logp = torch.log_softmax(logits.float(), -1).cpu().numpy()
        return logp, state, feed, None if alpha is None else alpha.float().cpu().numpy()


@torch.no_grad()
def greedy(model: Seq2Seq, src: torch.Tensor, src_len: torch.Tensor, max_len: torch.Tensor, *,
           sampling: Sampling | None = None, keys: list[int] | None = None, attention: bool = True,
           steps: Steps | None = None, prefixes: list[list[int]] | None = None) -> list[Hypothesis]:
    """Return one output per sentence of src (batch x src_len, lengths src_len on the CPU): the argmax at
    each step, or with sampling a draw (keys: each sentence's key for the draws, default its row), each
    sentence stopping at <eos> or its limit max_len (batch). steps: what encodes and steps (default the
    model itself; `fast.Decoding(model)` or an `Ensemble` decode the same way). prefixes: each output's
    forced start (target ids, <eos> excluded)."""
    return plain.greedy(ModelSteps(steps or model, src, src_len), max_len.numpy(), src_len.numpy(), attention,
                        sampling, None if keys is None else np.asarray(keys), prefixes)


class Shortlisted:
    """`Steps` over a shortlist: steps scoring only the target ids `vocab` (ascending, the specials first at
    their own ids, as `seqattn_runtime.shortlist.Shortlist.vocab` gives them). The ids a search over it
    reads and outputs are positions in vocab (the same ids for the specials); vocab[position] is the
    target id."""

    def __init__(self, steps: Steps, vocab: torch.Tensor):
        self.steps, self.vocab = steps, vocab

    def encode(self, src: torch.Tensor, src_len: torch.Tensor):
        return self.steps.encode(src, src_len)

    def initial_feed(self, rows: int, device: torch.device):
        return self.steps.initial_feed(rows, device)

    def step(self, y_prev: torch.Tensor, state, enc, feed=None, group: int = 1):
        """Return steps' step of the target ids at positions y_prev, scoring vocab only (rows x len(vocab))."""
        return self.steps.step(self.vocab[y_prev], state, enc, feed, group, vocab=self.vocab)


@torch.no_grad()
def beam_search(model: Seq2Seq, src: torch.Tensor, src_len: torch.Tensor, max_len: torch.Tensor, beam: int,
                alpha: float = 0.0, nbest: int = 1, attention: bool = True,
                steps: Steps | None = None, prefixes: list[list[int]] | None = None,
                coverage: float = 0.0, stopping: Stopping = EXACT) -> list[list[Hypothesis]]:
    """Return the nbest hypotheses of each sentence of src (best first): `seqattn_runtime.search.beam_search`
    of width beam over the model's steps (or `steps`'), each starting with its prefix when given, with
    coverage penalty beta `coverage`, stopping as `stopping` says."""
    return plain.beam_search(ModelSteps(steps or model, src, src_len), max_len.numpy(), src_len.numpy(), beam,
                             alpha, nbest, attention, prefixes, coverage, stopping)


@torch.no_grad()
def choices(model: Seq2Seq, src: torch.Tensor, src_len: torch.Tensor, targets: list[list[int]], k: int,
            steps: Steps | None = None) -> list[list[tuple[list[int], list[float]]]]:
    """Return `seqattn_runtime.search.choices` over the model's steps (or `steps`'): for each sentence of
    src, the k likeliest ids and their probabilities at each position of its target and at the <eos> after."""
    return plain.choices(ModelSteps(steps or model, src, src_len), targets, k)
