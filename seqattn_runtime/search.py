"""Greedy and beam search over an exported model's step, in numpy: the same rules as `seqattn.search`.

A search calls `step(y, state, feed, rows)` with the previous ids (one per row), the decoder state, the
input-feeding vectors and, for each row, its sentence's index into the encoded batch; it gets back
(log-probabilities rows x V, new state, new feed, attention weights rows x src_len or None).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

SOS, EOS = 2, 3
NEG_INF = -np.inf

Step = Callable[[np.ndarray, list, "np.ndarray | None", np.ndarray], tuple]


@dataclass
class Hypothesis:
    """One decoded output."""

    ids: list[int]                   # output ids, <eos> excluded
    score: float                     # sum of log-probabilities (<eos> included when reached), / length penalty
    attention: np.ndarray | None     # out_len (+1 for <eos>) x src_len weights, or None
    finished: bool                   # reached <eos> (else stopped at the length limit)


def max_lengths(src_len: np.ndarray, ratio: float) -> np.ndarray:
    """Return each sentence's output limit: ratio x source length (<eos> included) + 10, in float32 as
    seqattn computes it."""
    return (src_len.astype(np.float32) * np.float32(ratio)).astype(np.int64) + 10


def length_penalty(length, alpha: float):
    """GNMT's ((5 + length) / 6) ** alpha."""
    return ((5.0 + length) / 6.0) ** alpha


def _take(state: list[np.ndarray], rows: np.ndarray) -> list[np.ndarray]:
    return [s[:, rows] for s in state]


def greedy(step: Step, state: list[np.ndarray], feed: np.ndarray | None, limits: np.ndarray,
           src_len: np.ndarray, attention: bool) -> list[Hypothesis]:
    """Return the argmax output of each of the b sentences.

    state: h (and c), each layers x b x hidden; feed: b x hidden or None; limits, src_len: b (src_len with
    <eos>). Finished sentences leave the batch at once."""
    b = len(limits)
    ids = np.zeros((b, int(limits.max())), np.int64)
    att: np.ndarray | None = None                        # b x steps x src_len once the first weights come
    score = np.zeros(b, np.float32)
    out_len = limits.copy()
    rows = np.arange(b)                    # the sentences still decoding
    y = np.full(b, SOS, np.int64)
    t = 0
    while len(rows):
        logp, state, feed, alpha = step(y, state, feed, rows)
        y = logp.argmax(-1)
        score[rows] += logp[np.arange(len(rows)), y]
        ids[rows, t] = y
        if attention and alpha is not None:
            if att is None:
                att = np.zeros((b, ids.shape[1], alpha.shape[1]), np.float32)
            att[rows, t] = alpha
        t += 1
        done = (y == EOS) | (t >= limits[rows])
        out_len[rows[done]] = t
        if done.any():
            keep = ~done
            rows, y, state = rows[keep], y[keep], _take(state, np.flatnonzero(keep))
            feed = None if feed is None else feed[keep]
    hyps = []
    for i in range(b):
        row = ids[i, : out_len[i]].tolist()
        finished = row[-1] == EOS
        hyps.append(Hypothesis(row[:-1] if finished else row, float(score[i]),
                               None if att is None else att[i, : out_len[i], : src_len[i]], finished))
    return hyps


def _cannot_improve(finished: list[Hypothesis], nbest: int, best_alive: float, length: int, limit: int,
                    alpha: float) -> bool:
    """Whether no alive hypothesis can still enter the sentence's nbest (`seqattn.search._cannot_improve`)."""
    if len(finished) < nbest:
        return False
    if best_alive == NEG_INF:
        return True
    reach = max(length_penalty(length + 1, alpha), length_penalty(limit, alpha))
    return finished[nbest - 1].score >= best_alive / reach


def beam_search(step: Step, state: list[np.ndarray], feed: np.ndarray | None, limits: np.ndarray,
                src_len: np.ndarray, beam: int, alpha: float, nbest: int, attention: bool) -> list[list[Hypothesis]]:
    """Return the nbest hypotheses of each of the b sentences, best first: beam search of width beam with
    the rules of `seqattn.search.beam_search`.

    state: h (and c), each layers x b x hidden, one row per sentence (each gets beam rows, consecutive);
    feed: b x hidden or None; limits, src_len: b (src_len with <eos>)."""
    b, k = len(limits), beam
    state = [np.repeat(s, k, axis=1) for s in state]
    feed = None if feed is None else np.repeat(feed, k, axis=0)
    sents = np.arange(b)                                      # the sentences decoding, in batch order
    y = np.full(b * k, SOS, np.int64)
    scores = np.full((b, k), NEG_INF, np.float32)
    scores[:, 0] = 0.0                                        # all beams start equal: expand only the first
    history = np.zeros((b * k, 0), np.int64)
    att_hist: np.ndarray | None = None                        # rows x steps x src_len
    finished: list[list[Hypothesis]] = [[] for _ in range(b)]

    def finalize(sent: int, row: int, logp: float, ended: bool) -> None:
        length = history.shape[1] + (1 if ended else 0)
        score, kept = float(logp) / length_penalty(length, alpha), finished[sent]
        if len(kept) == nbest and score <= kept[-1].score:
            return
        att = None if att_hist is None else att_hist[row, :length, : src_len[sent]].copy()
        kept.append(Hypothesis(history[row].tolist(), float(score), att, ended))
        kept.sort(key=lambda h: -h.score)
        del kept[nbest:]

    t = 0
    while len(sents):
        n = len(sents)
        logp, state, feed, alpha_t = step(y, state, feed, np.repeat(sents, k))
        v = logp.shape[1]
        cand = (logp + scores.reshape(-1, 1)).reshape(n, k * v)
        top = np.argpartition(-cand, 2 * k - 1, axis=1)[:, : 2 * k]
        top_scores = np.take_along_axis(cand, top, 1)
        order = np.argsort(-top_scores, axis=1, kind="stable")
        top, top_scores = np.take_along_axis(top, order, 1), np.take_along_axis(top_scores, order, 1)
        top_beam, top_tok = top // v, top % v
        is_eos = top_tok == EOS
        if attention and alpha_t is not None:
            step_att = alpha_t[:, None, :]
            att_hist = step_att if att_hist is None else np.concatenate([att_hist, step_att], 1)
        for i, j in zip(*np.nonzero(is_eos[:, :k] & np.isfinite(top_scores[:, :k]))):
            finalize(sents[i], i * k + top_beam[i, j], top_scores[i, j], True)
        going = np.where(is_eos, NEG_INF, top_scores)
        pick = np.argsort(-going, axis=1, kind="stable")[:, :k]
        scores = np.take_along_axis(going, pick, 1)
        y = np.take_along_axis(top_tok, pick, 1).reshape(-1)
        origin = (np.take_along_axis(top_beam, pick, 1) + np.arange(n)[:, None] * k).reshape(-1)
        history = np.concatenate([history[origin], y[:, None]], 1)
        if att_hist is not None:
            att_hist = att_hist[origin]
        state = _take(state, origin)
        feed = None if feed is None else feed[origin]
        t += 1
        keep = []
        for i, sent in enumerate(sents):
            if _cannot_improve(finished[sent], nbest, float(scores[i, 0]), t, int(limits[sent]), alpha):
                continue
            if t >= limits[sent]:                             # out of length: the best alive end here
                for j in range(k):
                    if np.isfinite(scores[i, j]):
                        finalize(sent, i * k + j, scores[i, j], False)
                continue
            keep.append(i)
        if len(keep) < n:
            kept = np.array(keep, np.int64)
            rows = (kept[:, None] * k + np.arange(k)).reshape(-1)
            sents, scores, y, history = sents[kept], scores[kept], y[rows], history[rows]
            att_hist = None if att_hist is None else att_hist[rows]
            state = _take(state, rows)
            feed = None if feed is None else feed[rows]
    return finished
