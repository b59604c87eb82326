"""Decoding from <sos> to <eos>: greedy, sampling and beam search (n-best, exact or bounded stopping), in numpy.

This is the plain search, written once: `seqattn_runtime` decodes an export with it, and `seqattn`
decodes its PyTorch model with it (`seqattn.search`), the reference that seqattn's faster engine
(`seqattn.fast.search`) is tested against. The rules it follows (ids, limits, length penalty, order of
finished hypotheses, stopping, sampling draw) are `rules.py`'s.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from .rules import (
    EOS,
    EXACT,
    SOS,
    Hypothesis,
    Stopping,
    coverage_penalty,
    draw,
    enters,
    force,
    forced_ids,
    keep,
    length_penalty,
    prefix_limits,
    uniforms,
)

NEG_INF = -np.inf


class Steps(Protocol):
    """An encoded batch of b sentences and the model's decoding step over it. State and feed are the
    steps' own (arrays, tensors, tuples of them): the search only passes them back and picks their rows."""

    def start(self) -> tuple:
        """Return (the decoder state, the input-feeding vectors or None), one row per sentence; the first
        call of a search, made only for a batch of at least one sentence."""

    def take(self, state, feed, rows: np.ndarray) -> tuple:
        """Return (state, feed) with the rows `rows` only, in that order (repeats allowed)."""

    def step(self, y: np.ndarray, state, feed, sents: np.ndarray) -> tuple:
        """Return (log-probabilities rows x V float32, new state, new feed, attention weights rows x src_len
        float32 or None) of one step. y: the previous id of each row; the rows are len(sents) groups of
        len(y) // len(sents) consecutive rows, group g decoding sentence sents[g]."""

    # Optional, for beam search: step_ranked(y, state, feed, sents, m) returns step's four results and
    # (values, ids), each row's m largest log-probabilities (rows x m, largest first, equal values: the
    # lower id first) and their ids, computed with the step; or None in their place where it cannot.


@dataclass
class Sampling:
    """Sampling instead of the argmax: softmax(logp / temperature) cut to top_k / top_p, drawn with
    `rules.uniforms(seed, key, step)` (key: the sentence's key, e.g. its line number); no seed: a fresh
    random one."""

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int | None = None

    def __post_init__(self):
        if self.seed is None:
            self.seed = secrets.randbits(63)


def greedy(steps: Steps, limits: np.ndarray, src_len: np.ndarray, attention: bool = True,
           sampling: Sampling | None = None, keys: np.ndarray | None = None,
           prefixes: list[list[int]] | None = None) -> list[Hypothesis]:
    """Return one output per sentence: the argmax at each step (or a draw, with sampling; keys: each
    sentence's key, default 0..b-1). Each sentence stops at <eos> or its limit (limits: b) and leaves the
    batch; scores are the model's log-probabilities of the chosen ids. src_len (b): the attention's widths.
    prefixes (b lists of ids, <eos> excluded, maybe empty): each output starts with its prefix, forced
    (`rules.force`), and goes on from there; the score counts the prefix's log-probabilities."""
    b = len(limits)
    if b == 0:
        return []
    limits = prefix_limits(limits, prefixes)
    keys = np.arange(b) if keys is None else np.asarray(keys)
    ids = np.zeros((b, int(limits.max(initial=0))), np.int64)
    att: np.ndarray | None = None                 # b x steps x src_len once the first weights come
    score = np.zeros(b, np.float32)
    out_len = np.array(limits, np.int64)
    state, feed = steps.start()
    sents = np.arange(b)                          # the sentences still decoding
    y = np.full(b, SOS, np.int64)
    t = 0
    while len(sents):
        logp, state, feed, alpha = steps.step(y, state, feed, sents)
        logp = force(logp, forced_ids(prefixes, sents, t))
        if sampling is None:
            y = logp.argmax(-1)
        else:
            u = uniforms(sampling.seed, keys[sents], t)
            y = draw(logp, u, sampling.temperature, sampling.top_k, sampling.top_p)
        score[sents] += logp[np.arange(len(sents)), y]
        ids[sents, t] = y
        if attention and alpha is not None:
            if att is None:
                att = np.zeros((b, ids.shape[1], alpha.shape[1]), np.float32)
            att[sents, t, : alpha.shape[1]] = alpha
        t += 1
        done = (y == EOS) | (t >= limits[sents])
        out_len[sents[done]] = t
        if done.any():                            # the finished leave the batch
            going = np.flatnonzero(~done)
            sents, y = sents[going], y[going]
            state, feed = steps.take(state, feed, going)
    hyps = []
    for i in range(b):
        row = ids[i, : out_len[i]].tolist()
        finished = bool(row) and row[-1] == EOS
        hyps.append(Hypothesis(row[:-1] if finished else row, float(score[i]),
                               None if att is None else att[i, : out_len[i], : src_len[i]], finished))
    return hyps


def beam_search(steps: Steps, limits: np.ndarray, src_len: np.ndarray, beam: int, alpha: float = 0.0,
                nbest: int = 1, attention: bool = True, prefixes: list[list[int]] | None = None,
                coverage: float = 0.0, stopping: Stopping = EXACT) -> list[list[Hypothesis]]:
    """Return the nbest hypotheses of each of the b sentences (best first): beam search of width beam.

    Each step every sentence's `beam` hypotheses are extended by every id. A candidate that ends in <eos>
    among its sentence's `beam` best is finished, with score log p / length_penalty(length, alpha)
    (`rules.keep`: the sentence keeps its nbest best); the `beam` best that do not end go on. A sentence
    is done when `stopping` says so (`rules.Stopping.done`; exact: no alive hypothesis can still enter its
    nbest, so the result is what this search of width `beam` finds when every hypothesis is followed as
    far as it could matter) or at its limit, where the alive ones end unfinished. With beam 1 and alpha 0
    this is greedy search.
    prefixes (b lists of ids, or None): while a sentence's prefix lasts, its one hypothesis takes the
    prefix's next id (`rules.force`); the beam opens after it, and scores count the prefix.
    coverage (beta > 0): each finished hypothesis' score gains `rules.coverage_penalty` of the attention its
    steps gave each source position (<eos> step included); alive ones are ranked as without it, and the
    stopping bound stays exact because the penalty is never positive.
    """
    if coverage < 0:
        raise ValueError(f"the coverage penalty must be >= 0, got {coverage}")
    if not 1 <= nbest <= beam:
        raise ValueError(f"nbest must be in 1..beam ({beam}), got {nbest}")
    b, k = len(limits), beam
    if b == 0:
        return []
    limits = prefix_limits(limits, prefixes)
    state, feed = steps.start()
    state, feed = steps.take(state, feed, np.repeat(np.arange(b), k))   # row = sentence * k + beam
    sents = np.arange(b)                                      # the sentences decoding
    y = np.full(b * k, SOS, np.int64)
    scores = np.full((b, k), NEG_INF, np.float32)
    scores[:, 0] = 0.0                                        # all beams start equal: expand only the first
    history = np.zeros((b * k, 0), np.int64)                  # each row's ids so far
    att_hist: np.ndarray | None = None                        # rows x steps x src_len
    finished: list[list[Hypothesis]] = [[] for _ in range(b)]
    ended = [0] * b                                           # each sentence's hypotheses that reached <eos>
    covered: np.ndarray | None = None                         # rows x src_len: attention received so far

    def finish(sent: int, row: int, logp: float, ended_here: bool, received: np.ndarray | None) -> None:
        length = history.shape[1] + (1 if ended_here else 0)
        score = float(logp) / length_penalty(length, alpha)
        if coverage:
            score += coverage_penalty(received[: src_len[sent]], coverage)
        ended[sent] += ended_here
        if enters(finished[sent], score, nbest):
            att = None if att_hist is None else att_hist[row, :length, : src_len[sent]].copy()
            keep(finished[sent], Hypothesis(history[row].tolist(), score, att, ended_here), nbest)

    ranked = getattr(steps, "step_ranked", None)
    t = 0
    while len(sents):
        n = len(sents)
        if ranked is None:
            (logp, state, feed, alpha_t), rows_best = steps.step(y, state, feed, sents), None
        else:
            logp, state, feed, alpha_t, rows_best = ranked(y, state, feed, sents, 2 * k + 1)
        forced = forced_ids(prefixes, sents, t)
        logp = force(logp, forced, k)
        v = logp.shape[1]
        # each sentence's 2k best continuations (at most k of them end in <eos>), best first
        best = None if rows_best is None or forced is not None else merge_ranked(*rows_best, scores, v, 2 * k)
        if best is None:
            cand = (logp + scores.reshape(-1, 1)).reshape(n, k * v)
            top = best_of(cand, 2 * k)
            top_scores = np.take_along_axis(cand, top, 1)
        else:
            top, top_scores = best
        top_beam, top_tok = top // v, top % v
        if attention and alpha_t is not None:
            step_att = alpha_t[:, None, :]
            att_hist = step_att if att_hist is None else np.concatenate([att_hist, step_att], 1)
        if coverage:
            if alpha_t is None:
                raise ValueError("the coverage penalty needs a model with attention")
            covered = alpha_t.astype(np.float64) if covered is None else covered + alpha_t
        # hypotheses that end here: <eos> among the k best (their history: before this step)
        is_eos = top_tok == EOS
        for i, j in zip(*np.nonzero(is_eos[:, :k] & np.isfinite(top_scores[:, :k]))):
            row = i * k + top_beam[i, j]
            finish(sents[i], row, top_scores[i, j], True, None if covered is None else covered[row])
        # the k best that go on
        going = np.where(is_eos, NEG_INF, top_scores)
        pick = np.argsort(-going, axis=1, kind="stable")[:, :k]
        scores = np.take_along_axis(going, pick, 1)
        y = np.take_along_axis(top_tok, pick, 1).reshape(-1)
        origin = (np.take_along_axis(top_beam, pick, 1) + np.arange(n)[:, None] * k).reshape(-1)
        history = np.concatenate([history[origin], y[:, None]], 1)
        if att_hist is not None:
            att_hist = att_hist[origin]
        covered = None if covered is None else covered[origin]
        state, feed = steps.take(state, feed, origin)
        t += 1
        decoding = []
        for i, sent in enumerate(sents):
            if stopping.done(finished[sent], ended[sent], nbest, k, float(scores[i, 0]), t, int(limits[sent]), alpha):
                continue
            if t >= limits[sent]:                             # out of length: the best alive end here
                for j in range(k):
                    if np.isfinite(scores[i, j]):
                        finish(sent, i * k + j, scores[i, j], False, None if covered is None else covered[i * k + j])
                continue
            decoding.append(i)
        if len(decoding) < n:                                 # done sentences leave the batch
            kept = np.array(decoding, np.int64)
            rows = (kept[:, None] * k + np.arange(k)).reshape(-1)
            sents, scores, y, history = sents[kept], scores[kept], y[rows], history[rows]
            att_hist = None if att_hist is None else att_hist[rows]
            covered = None if covered is None else covered[rows]
            state, feed = steps.take(state, feed, rows)
    return finished


def merge_ranked(values: np.ndarray, ids: np.ndarray, scores: np.ndarray, v: int, m: int) -> tuple | None:
    """Return (columns, candidate scores), n x m: each sentence's m best of its k x V candidates (column
    beam * V + id, score scores[beam] + log p), as `best_of` ranks them (largest first, equal scores in
    column order), from each row's m + 1 best log-probabilities (values, ids: n k x (m + 1), ranked as
    `Steps.step_ranked` gives them); None where that cannot be sure of it.

    A candidate among its sentence's m best has fewer than m before it, so fewer than m of its own row's:
    it is among that row's m best by score, which are the row's m best log-probabilities unless the
    float32 sum rounds the m-th and the (m + 1)-th to the same score. None where that happens in a row
    that could still reach the sentence's m best, or where a sentence has fewer than m finite candidates
    (a -inf candidate of the stable sort need not be among those taken)."""
    n, k = scores.shape
    sums = values + scores.reshape(-1, 1)                        # the float32 sums the full search forms
    cand = sums[:, :m].reshape(n, k * m)
    cols = (ids[:, :m].reshape(n, k, m) + (np.arange(k) * v)[:, None]).reshape(n, k * m)
    order = np.argsort(cols, axis=1, kind="stable")             # column order, so that ties rank by it
    cols, cand = np.take_along_axis(cols, order, 1), np.take_along_axis(cand, order, 1)
    pick = _first_m(cand, m, ranked=True)
    top, top_scores = np.take_along_axis(cols, pick, 1), np.take_along_axis(cand, pick, 1)
    last = top_scores[:, -1:]
    if not np.isfinite(last).all():
        return None
    merged = (sums[:, m - 1] == sums[:, m]).reshape(n, k) & (sums[:, m - 1].reshape(n, k) >= last)
    return None if merged.any() else (top, top_scores)


def best_of(x: np.ndarray, m: int, depth: int = 32) -> np.ndarray:
    """Return the columns of each row's m largest values (rows x m, m <= columns), largest first, equal
    values in column order: what a stable sort of each row gives, in a few passes over x.

    A row of w columns is read as depth rows of g = w // depth columns (and the last w % depth columns as
    one more group): group j holds columns j, j + g, j + 2g, ..., and its maximum is taken across the
    depth rows, a pass that runs along contiguous memory. The m best values lie in the m groups of the
    largest maxima, whose values are then ranked. A row where a group left out ties with a chosen one at
    the m-th largest maximum could lose a tied value of lower column there: that row (rare but for -inf
    or repeated values) is ranked whole instead."""
    n, w = x.shape
    if w <= 4 * m * depth:
        return _first_m(x, m, ranked=True)
    g = w // depth
    full = g * depth
    maxima = x[:, :full].reshape(n, depth, g).max(1)                      # n x g
    if full < w:                                                          # the last columns: group g
        maxima = np.concatenate([maxima, x[:, full:].max(1, keepdims=True)], 1)
    groups = _first_m(maxima, m, ranked=False)                            # n x m, ascending
    kth = np.take_along_axis(maxima, groups, 1).min(1, keepdims=True)
    unsure = np.count_nonzero(maxima >= kth, 1) > m
    # the chosen groups' columns, ascending: the depth rows of the strided groups, then group g's columns
    cols = (groups[:, None, :] + g * np.arange(depth)[:, None]).reshape(n, -1)
    valid = np.tile(groups < g, depth)
    if full < w:
        cols = np.concatenate([cols, np.broadcast_to(full + np.arange(w - full), (n, w - full))], 1)
        valid = np.concatenate([valid, np.repeat(groups[:, -1:] == g, w - full, 1)], 1)
    cols = np.where(valid, cols, 0)
    vals = np.where(valid, np.take_along_axis(x, cols, 1), -np.inf)
    best = np.take_along_axis(cols, _first_m(vals, m, ranked=True), 1)
    if unsure.any():
        rows = np.flatnonzero(unsure)
        best[rows] = _first_m(x[rows], m, ranked=True)
    return best


def _first_m(x: np.ndarray, m: int, ranked: bool) -> np.ndarray:
    """Return the positions (rows x m) of each row's m largest values in x (rows x columns, m <= columns;
    equal values: the first ones), ascending, or (ranked) largest first, equal values in position order."""
    n, w = x.shape
    kth = np.partition(x, w - m, axis=1)[:, w - m : w - m + 1]   # the m-th largest value
    above = x > kth                                               # fewer than m
    tied = x == kth                                               # the first of them fill up to m
    chosen = above | (tied & (np.cumsum(tied, 1) <= m - np.count_nonzero(above, 1, keepdims=True)))
    pos = (np.flatnonzero(chosen) % w).reshape(n, m)
    if not ranked:
        return pos
    return np.take_along_axis(pos, np.argsort(-np.take_along_axis(x, pos, 1), axis=1, kind="stable"), 1)


def choices(steps: Steps, targets: list[list[int]], k: int) -> list[list[tuple[list[int], list[float]]]]:
    """Return, for each sentence, at each position of its target (ids, <eos> excluded) and at the <eos>
    position after it, the k most likely ids and their probabilities there, given the target before it
    (teacher forcing): the model's alternatives to each output token."""
    b = len(targets)
    if b == 0:
        return []
    out: list[list[tuple[list[int], list[float]]]] = [[] for _ in range(b)]
    state, feed = steps.start()
    sents = np.arange(b)
    y = np.full(b, SOS, np.int64)
    t = 0
    while len(sents):
        logp, state, feed, _ = steps.step(y, state, feed, sents)
        top = np.argsort(-logp, axis=1, kind="stable")[:, :k]
        probs = np.exp(np.take_along_axis(logp, top, 1).astype(np.float64))
        for r, s in enumerate(sents):
            out[s].append((top[r].tolist(), probs[r].tolist()))
        going = np.array([t < len(targets[s]) for s in sents], bool)
        y = np.array([targets[s][t] for s in sents[going]], np.int64)
        if not going.all():
            state, feed = steps.take(state, feed, np.flatnonzero(going))
            sents = sents[going]
        t += 1
    return out
