"""The rules of decoding, written once: special ids, output limits, target prefixes, the length and
coverage penalties, the order of finished hypotheses, when beam search stops (the exact bound and the
bounded heuristics) and the sampling draw.

numpy only, no torch: `seqattn_runtime` decodes exports with them and `seqattn` decodes its models with
them (`seqattn.search`, `seqattn.fast.search`), so a rule changed here changes every path.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

PAD, UNK, SOS, EOS = 0, 1, 2, 3   # the ids SentencePiece is trained with: padding, unknown, start, end


@dataclass
class Hypothesis:
    """One decoded output."""

    ids: list[int]                  # output ids, <eos> excluded
    score: float                    # sum of log-probabilities (<eos> included when reached), / length penalty
    attention: np.ndarray | None    # out_len (+1 for <eos>) x src_len weights, or None
    finished: bool                  # reached <eos> (else stopped at the length limit)


def max_lengths(src_len: np.ndarray, ratio: float) -> np.ndarray:
    """Return each sentence's output limit (int64, like src_len): ratio x source length (<eos> included)
    + 10, the product taken in float32."""
    return (np.asarray(src_len).astype(np.float32) * np.float32(ratio)).astype(np.int64) + 10


def prefix_limits(limits: np.ndarray, prefixes: list[list[int]] | None) -> np.ndarray:
    """Return the output limits (b) raised to each sentence's target prefix length (b lists of ids, <eos>
    excluded): a prefix is always honoured, however long; one that reaches the limit is the whole output."""
    if prefixes is None:
        return limits
    return np.maximum(limits, np.array([len(p) for p in prefixes], np.int64))


def forced_ids(prefixes: list[list[int]] | None, sents: np.ndarray, position: int) -> np.ndarray | None:
    """Return the id each sentence in sents must output at `position` (from 0): its prefix's, or -1 where
    the prefix has ended; None where no sentence has a prefix that long."""
    if prefixes is None:
        return None
    forced = np.array([prefixes[s][position] if position < len(prefixes[s]) else -1 for s in sents], np.int64)
    return forced if (forced >= 0).any() else None


def force(logp: np.ndarray, forced: np.ndarray | None, group: int = 1) -> np.ndarray:
    """Return logp (rows x V log-probabilities, `group` consecutive rows per sentence) with the rows of
    each sentence whose forced id (one per sentence, -1: none) is set cut to that id: every other entry is
    -inf, so the argmax, a sampling draw and the beam's best all take it, and its log-probability counts in
    the score as any other token's."""
    if forced is None:
        return logp
    per_row = np.repeat(forced, group)
    rows = np.flatnonzero(per_row >= 0)
    ids = per_row[rows]
    out = logp.copy()
    kept = logp[rows, ids]
    out[rows] = -np.inf
    out[rows, ids] = kept
    return out


def length_penalty(length, alpha: float):
    """Return GNMT's length penalty ((5 + length) / 6) ** alpha (1 when alpha is 0); length: a number or
    an array."""
    return ((5.0 + length) / 6.0) ** alpha


def coverage_penalty(coverage: np.ndarray, beta: float) -> float:
    """Return GNMT's coverage penalty beta * sum_i log(min(c_i, 1)) of a hypothesis whose steps gave source
    position i (every position, <eos> included) the attention c_i = sum_t alpha_t,i in all (c_i below 1e-10
    counts as 1e-10). Never positive: 0 when every position got at least its whole weight's worth."""
    return float(beta * np.log(np.clip(np.asarray(coverage, np.float64), 1e-10, 1.0)).sum())


def enters(kept: list[Hypothesis], score: float, nbest: int) -> bool:
    """Return whether a finished hypothesis of this score enters kept, a sentence's best finished ones
    (best first, at most nbest): a tie with the last kept one does not."""
    return len(kept) < nbest or score > kept[-1].score


def keep(kept: list[Hypothesis], hyp: Hypothesis, nbest: int) -> None:
    """Put hyp among kept (best first, at most nbest; call where `enters` is true). Of equal scores, the
    hypothesis finished first stays first."""
    kept.append(hyp)
    kept.sort(key=lambda h: -h.score)   # stable
    del kept[nbest:]


def cannot_improve(finished: list[Hypothesis], nbest: int, best_alive: float, length: int, limit: int,
                   alpha: float) -> bool:
    """Return whether no hypothesis still alive can enter a sentence's nbest finished ones (best first).

    Raw scores (sums of log-probabilities) only fall as a hypothesis grows, and an alive one of `length`
    tokens ends with between length + 1 tokens and `limit`; so the best it can reach is best_alive divided
    by the largest length penalty among those lengths (alpha >= 0: the one at the limit); a coverage
    penalty, never positive, only lowers it further. This is the only rule that ends a sentence before its
    limit: counting finished hypotheses is not exact (in a
    confident model the weak beams finish first, while the best hypothesis is still alive).
    """
    if len(finished) < nbest:
        return False
    if best_alive == float("-inf"):
        return True
    reach = max(length_penalty(length + 1, alpha), length_penalty(limit, alpha))
    return finished[nbest - 1].score >= best_alive / reach


STOPPING = ("exact", "heuristic", "patience")


@dataclass(frozen=True)
class Stopping:
    """When beam search ends a sentence before its length limit (`done`).

    exact      no alive hypothesis can still enter the nbest (`cannot_improve`): what a search of this width
               finds when every hypothesis is followed as far as it could matter (the default);
    heuristic  the nbest-th finished hypothesis scores at least the best alive one's score divided by the
               length penalty at its current length, as if it ended now (Hugging Face's default rule);
    patience   at least max(nbest, ceil(patience x beam)) hypotheses have finished, whatever their scores
               (patience 1: the fairseq/OpenNMT-py habit of stopping at `beam` finished ones).
    """

    mode: str = "exact"
    patience: float = 1.0

    def __post_init__(self):
        if self.mode not in STOPPING:
            raise ValueError(f"stopping must be one of {', '.join(STOPPING)}, got {self.mode!r}")
        if not self.patience > 0:
            raise ValueError(f"patience must be > 0, got {self.patience}")

    def given(self, mode: str | None, patience: float | None) -> Stopping:
        """Return this default changed by what a user gave (None: not given); ValueError names the option
        that does not fit (a patience factor for another mode)."""
        mode = mode or self.mode
        if patience is not None and mode != "patience":
            raise ValueError(f"patience needs stopping 'patience' (the stopping here is {mode!r})")
        return Stopping(mode, self.patience if patience is None else patience)

    def done(self, finished: list[Hypothesis], ended: int, nbest: int, beam: int, best_alive: float, length: int,
             limit: int, alpha: float) -> bool:
        """Return whether a sentence's search ends here. finished: its kept hypotheses (best first, at most
        nbest); ended: how many of its hypotheses have reached <eos> so far (kept or not); best_alive: the
        raw score of its best alive hypothesis, which has `length` tokens; limit: its output limit."""
        if self.mode == "exact":
            return cannot_improve(finished, nbest, best_alive, length, limit, alpha)
        if len(finished) < nbest:
            return False
        if best_alive == float("-inf"):
            return True
        if self.mode == "heuristic":
            return finished[nbest - 1].score >= best_alive / length_penalty(length, alpha)
        return ended >= max(nbest, math.ceil(self.patience * beam - 1e-9))


EXACT = Stopping()


def filter_logits(x: np.ndarray, top_k: int = 0, top_p: float = 1.0) -> np.ndarray:
    """Return x (rows x V scores) with all but each row's top_k / its top_p nucleus set to -inf."""
    x = np.array(x, dtype=np.float64)
    if top_k > 0 and top_k < x.shape[-1]:
        kth = -np.partition(-x, top_k - 1, axis=-1)[:, top_k - 1 : top_k]
        x[x < kth] = -np.inf
    if top_p < 1.0:
        order = np.argsort(-x, axis=-1, kind="stable")
        ranked = np.take_along_axis(x, order, -1)
        probs = np.exp(ranked - ranked[:, :1])
        probs /= probs.sum(-1, keepdims=True)
        drop_ranked = np.cumsum(probs, -1) - probs >= top_p   # keep the smallest prefix whose mass reaches top_p
        drop = np.empty_like(drop_ranked)
        np.put_along_axis(drop, order, drop_ranked, -1)
        x[drop] = -np.inf
    return x


_GOLDEN, _M1, _M2 = np.uint64(0x9E3779B97F4A7C15), np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


def _mix(x: np.ndarray) -> np.ndarray:
    """Return splitmix64's finaliser of x (uint64 array, wrapping arithmetic)."""
    x = (x ^ (x >> np.uint64(30))) * _M1
    x = (x ^ (x >> np.uint64(27))) * _M2
    return x ^ (x >> np.uint64(31))


def uniforms(seed: int, keys: np.ndarray, step) -> np.ndarray:
    """Return one number in (0, 1] (float64) per key: the draw for output position `step` (a number, or
    one per key) of the sequence `keys[i]` under `seed`. A function of (seed, key, step) only, so a
    sentence samples the same output whatever else shares its batch, in whatever order, on every path."""
    with np.errstate(over="ignore"):
        h = _mix(np.full(np.shape(keys), seed & (2**64 - 1), np.uint64) + _GOLDEN)
        h = _mix(h + np.asarray(keys).astype(np.uint64) + _GOLDEN)
        h = _mix(h + np.asarray(step).astype(np.uint64) + _GOLDEN)
    return ((h >> np.uint64(11)).astype(np.float64) + 1.0) * 2.0**-53


def draw(logp: np.ndarray, u: np.ndarray, temperature: float = 1.0, top_k: int = 0,
         top_p: float = 1.0) -> np.ndarray:
    """Return one id per row (int64) drawn from softmax(logp / temperature) cut to top_k / top_p, by the
    inverse of its distribution function at u (rows, in (0, 1], from `uniforms`)."""
    x = filter_logits(np.asarray(logp, np.float64) / temperature, top_k, top_p)
    cdf = np.cumsum(np.exp(x - x.max(-1, keepdims=True)), -1)
    picked = (cdf < (u * cdf[:, -1])[:, None]).sum(-1)
    return np.minimum(picked, x.shape[-1] - 1).astype(np.int64)
