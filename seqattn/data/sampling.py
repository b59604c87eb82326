"""Subword regularisation (Kudo, 2018): each epoch trains on a fresh segmentation of the training text.

SentencePiece lists the n most likely segmentations x of a line with a unigram model; a draw takes one
with probability proportional to P(x) ** alpha (alpha < 1 flattens the distribution towards shorter,
rarer pieces). The lists are made once; the draws come from a numpy generator seeded by the caller,
so the same seed gives the same segmentations in any process, on any machine (SentencePiece's own
sampling generator is process-global and gave no such guarantee).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from seqattn_runtime.rules import UNK

CHUNK = 2_000    # lines per SentencePiece call while listing (bounds the Python lists alive at once)


@dataclass
class Segmentations:
    """The n best segmentations of each of L lines, K = n at most per line.

    pieces: [total] int32, every candidate's ids one after another
    start:  [L, K] int64, where candidate k of line l starts in pieces
    length: [L, K] int32, its number of pieces
    score:  [L, K] float64, its log-likelihood (sum of its pieces' scores); -inf where a line has fewer
            than K candidates or a candidate may not be drawn
    """

    pieces: np.ndarray
    start: np.ndarray
    length: np.ndarray
    score: np.ndarray

    @classmethod
    def of(cls, sp, lines: list[str], nbest: int, to_ids: np.ndarray | None = None) -> Segmentations:
        """List the nbest segmentations of each line with the SentencePieceProcessor sp.

        to_ids: [pieces of sp] int, renumbers sp's ids (-1: a piece that may not appear; a candidate
        using one is never drawn; the standard segmentation, candidate 0, always stays).
        """
        table = np.array([sp.GetScore(i) for i in range(sp.GetPieceSize())])
        flat: list[np.ndarray] = []
        start = np.zeros((len(lines), nbest), np.int64)
        length = np.zeros((len(lines), nbest), np.int32)
        score = np.full((len(lines), nbest), -np.inf)
        at = 0
        for first in range(0, len(lines), CHUNK):
            for row, cands in enumerate(sp.NBestEncode(lines[first : first + CHUNK], nbest_size=nbest), first):
                for k, cand in enumerate(cands[:nbest]):
                    base = ids = np.asarray(cand, np.int64)
                    ok = True
                    if to_ids is not None:
                        ids = to_ids[base]
                        ok = bool((ids >= 0).all())
                        if k == 0 and not ok:          # the standard segmentation: <unk> for such a piece
                            ids, ok = np.where(ids >= 0, ids, UNK), True
                    start[row, k], length[row, k] = at, len(ids)
                    if ok:
                        score[row, k] = table[base].sum()
                    flat.append(ids.astype(np.int32))
                    at += len(ids)
                if not cands:                      # an empty line: one empty segmentation
                    score[row, 0] = 0.0
        pieces = np.concatenate(flat) if flat else np.zeros(0, np.int32)
        return cls(pieces, start, length, score)

    def draw(self, alpha: float, rng: np.random.Generator) -> list[list[int]]:
        """Return one segmentation of each line, drawn with probability proportional to P(x) ** alpha
        among its candidates (the Gumbel-max trick: argmax of alpha * log P(x) + Gumbel noise)."""
        noisy = alpha * self.score + rng.gumbel(size=self.score.shape)
        k = np.argmax(noisy, axis=1)
        rows = np.arange(len(k))
        starts, lengths = self.start[rows, k].tolist(), self.length[rows, k].tolist()
        pieces = self.pieces
        return [pieces[s : s + n].tolist() for s, n in zip(starts, lengths)]
