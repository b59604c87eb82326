"""Word alignments from attention, in Pharaoh format (`i-j`: source word i, target word j, from 0).

numpy only: `seqattn translate --align`, the HTTP API and `seqattn-runtime translate --align` all align with
`pharaoh`. Words are what whitespace separates in the text: a SentencePiece piece that starts with `▁` starts
a word, any other piece belongs to the word before it. `<eos>` (the last source position, and the last
target row of a finished output) is dropped.
"""

from __future__ import annotations

import numpy as np

WORD_START = "\u2581"   # SentencePiece's mark of a piece that follows whitespace


def word_of(pieces: list[str]) -> np.ndarray:
    """Return the word index of each piece (int64): a new word at each piece starting with `▁` (the first
    piece starts word 0 whatever it is)."""
    starts = np.array([i > 0 and p.startswith(WORD_START) for i, p in enumerate(pieces)], bool)
    return np.cumsum(starts).astype(np.int64)


def word_weights(src_pieces: list[str], tgt_pieces: list[str], attention) -> np.ndarray:
    """Return the target words x source words weights: for each target word, the mean over its pieces of
    the attention each source word's pieces received. attention: rows per target piece (an extra `<eos>`
    row allowed), columns per source piece (an extra `<eos>` column allowed); the pieces exclude `<eos>`."""
    att = np.asarray(attention, np.float64)[: len(tgt_pieces), : len(src_pieces)]
    src_word, tgt_word = word_of(src_pieces), word_of(tgt_pieces)
    n_src, n_tgt = int(src_word[-1]) + 1, int(tgt_word[-1]) + 1
    by_src = np.zeros((att.shape[0], n_src))
    np.add.at(by_src.T, src_word, att.T)                      # sum the columns of each source word
    weights = np.zeros((n_tgt, n_src))
    np.add.at(weights, tgt_word, by_src)                      # and the rows of each target word
    return weights / np.bincount(tgt_word, minlength=n_tgt)[:, None]


def pharaoh(src_pieces: list[str], tgt_pieces: list[str], attention, threshold: float | None = None) -> str:
    """Return the alignment "i-j i-j ..." (sorted by j, then i): each target word j aligned to the source
    word i it attends to most and, with threshold, to every other source word whose weight reaches it
    (one-to-many). Pieces as `word_weights` takes them; an empty source or output aligns nothing."""
    src_pieces = [p for p in src_pieces if p != "<eos>"]
    tgt_pieces = [p for p in tgt_pieces if p != "<eos>"]
    if not src_pieces or not tgt_pieces or attention is None:
        return ""
    weights = word_weights(src_pieces, tgt_pieces, attention)
    pairs = []
    for j, row in enumerate(weights):
        best = int(row.argmax())
        pairs += [(j, i) for i in range(len(row)) if i == best or (threshold is not None and row[i] >= threshold)]
    return " ".join(f"{i}-{j}" for j, i in sorted(pairs))
