"""A vocabulary shortlist for decoding: the target pieces a batch's source pieces may bring, learnt from the
training data, so that the output layer need only score those (as Marian's lexical shortlists do).

numpy only: seqattn builds it from a model's training data and decodes with it, and `seqattn_runtime`
decodes an export with the same `Shortlist.vocab`.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .rules import EOS

SPECIALS = EOS + 1   # ids 0..EOS (padding, unknown, start, end) open every shortlist at their own positions


@dataclass
class Shortlist:
    """Each source piece's candidate target pieces, and the target pieces every batch gets."""

    offsets: np.ndarray    # src_vocab + 1 (int64): source piece s's candidates are ids[offsets[s] : offsets[s + 1]]
    ids: np.ndarray        # the candidates, source piece by source piece (int64)
    frequent: np.ndarray   # the target pieces every vocabulary holds (int64, the specials among them)
    tgt_vocab: int

    def vocab(self, sources: Iterable[Sequence[int]], extra: Iterable[int] = ()) -> np.ndarray:
        """Return the target ids (int64, ascending) that decoding these source sentences (lists of source ids)
        may output: the frequent pieces, every source piece's candidates and extra (e.g. a prefix's ids).
        The specials come first, so that within the shortlist <eos> (and every special) keeps its own id."""
        src = [np.asarray(s, np.int64) for s in sources]
        pieces = np.unique(np.concatenate(src)) if src else np.zeros(0, np.int64)
        parts = [self.frequent, np.fromiter(extra, np.int64)]
        parts += [self.ids[self.offsets[s] : self.offsets[s + 1]] for s in pieces]
        union = np.unique(np.concatenate(parts))
        return np.concatenate([np.arange(SPECIALS, dtype=np.int64), union[union >= SPECIALS]])

    def batch(self, sources: Sequence[Sequence[int]], prefixes: list[list[int]] | None = None
              ) -> tuple[np.ndarray, list[list[int]] | None]:
        """Return (the vocabulary of a batch: `vocab` of its sources with its prefixes' pieces, its prefixes
        as positions in that vocabulary, or None without prefixes): what a search over the shortlist takes."""
        vocab = self.vocab(sources, (t for p in prefixes or [] for t in p))
        return vocab, None if prefixes is None else [positions(vocab, p) for p in prefixes]

    def save(self, path: str | Path) -> None:
        """Write the shortlist to path (.npz, arrays only), through a temporary file and a rename."""
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(tmp, offsets=self.offsets, ids=self.ids, frequent=self.frequent, tgt_vocab=np.int64(self.tgt_vocab))
        tmp.replace(path)

    @classmethod
    def load(cls, path: str | Path) -> Shortlist:
        """Return the shortlist saved at path; ValueError names the file when it is not one."""
        try:
            with np.load(path, allow_pickle=False) as f:
                got = cls(f["offsets"].astype(np.int64), f["ids"].astype(np.int64), f["frequent"].astype(np.int64),
                          int(f["tgt_vocab"]))
        except (OSError, EOFError, KeyError, ValueError, zipfile.BadZipFile) as e:
            raise ValueError(f"{path}: not a shortlist ({e})") from None
        fit = [a for a in (got.ids, got.frequent) if a.size and not 0 <= a.min() <= a.max() < got.tgt_vocab]
        o = got.offsets
        if o.ndim != 1 or not o.size or o[0] != 0 or o[-1] != len(got.ids) or (np.diff(o) < 0).any() or fit:
            raise ValueError(f"{path}: not a shortlist (its offsets or ids are out of range)")
        return got

    def check_fits(self, src_vocab: int, tgt_vocab: int, where: str | Path) -> Shortlist:
        """Return self; ValueError naming where when it was built for other vocabulary sizes."""
        if len(self.offsets) - 1 != src_vocab or self.tgt_vocab != tgt_vocab:
            raise ValueError(f"{where}: built for {len(self.offsets) - 1} source and {self.tgt_vocab} target pieces, "
                             f"the model has {src_vocab} and {tgt_vocab} (rebuild it: seqattn shortlist MODEL_DIR)")
        return self


def positions(vocab: np.ndarray, ids: Sequence[int]) -> list[int]:
    """Return the positions in vocab (`Shortlist.vocab`, ascending) of target ids it holds: what a search
    over the shortlist reads and writes (the specials keep their ids)."""
    return np.searchsorted(vocab, np.asarray(ids, np.int64)).tolist()


def target_ids(vocab: np.ndarray, places: Sequence[int]) -> list[int]:
    """Return the target ids at positions places of vocab: a search's output over the shortlist, mapped back."""
    return vocab[np.asarray(places, np.int64)].tolist()


def build(src_ids: Sequence[Sequence[int]], tgt_ids: Sequence[Sequence[int]], src_vocab: int, tgt_vocab: int,
          k: int = 50, frequent: int = 100) -> Shortlist:
    """Return the shortlist of a training corpus (pairs of id lists): each source piece's k target pieces of
    highest Dice coefficient 2 c(s, t) / (c(s) + c(t)), c counting the pairs a piece (or both) occurs in, and
    the `frequent` target pieces occurring in most pairs. Then, pair by pair, every reference piece that the
    pair's source pieces do not bring is added to the candidates of the one with the highest Dice for it:
    on its training data, the shortlist always holds the reference."""
    if k < 1 or frequent < 0:
        raise ValueError(f"need k >= 1 and frequent >= 0, got {k} and {frequent}")
    uniq = [(np.unique(np.asarray(s, np.int64)), np.unique(np.asarray(t, np.int64))) for s, t in zip(src_ids, tgt_ids)]
    uniq = [(s, t[t >= SPECIALS]) for s, t in uniq]
    keys = np.concatenate([np.zeros(0, np.int64)] + [(s[:, None] * tgt_vocab + t[None, :]).ravel() for s, t in uniq])
    pair, count = np.unique(keys, return_counts=True)
    s_of, t_of = pair // tgt_vocab, pair % tgt_vocab
    c_src = np.bincount(np.concatenate([np.zeros(0, np.int64)] + [s for s, _ in uniq]), minlength=src_vocab)
    c_tgt = np.bincount(np.concatenate([np.zeros(0, np.int64)] + [t for _, t in uniq]), minlength=tgt_vocab)
    dice = 2.0 * count / (c_src[s_of] + c_tgt[t_of])           # aligned with pair, the sorted keys
    order = np.lexsort((t_of, -count, -dice, s_of))            # by source piece, best first, ties by id
    s_sorted, t_sorted = s_of[order], t_of[order]
    first = np.searchsorted(s_sorted, s_sorted, side="left")
    top = np.arange(len(s_sorted)) - first < k
    by_src: list[set[int]] = [set() for _ in range(src_vocab)]
    for s, t in zip(s_sorted[top].tolist(), t_sorted[top].tolist()):
        by_src[s].add(t)
    most = np.argsort(-c_tgt[SPECIALS:], kind="stable")[:frequent] + SPECIALS
    always = set(range(SPECIALS)) | set(most[c_tgt[most] > 0].tolist())
    for s, t in uniq:
        if not s.size:                                         # an empty source is never decoded
            continue
        brought = always.union(*(by_src[x] for x in s.tolist()))
        for missing in (x for x in t.tolist() if x not in brought):
            d = dice[np.searchsorted(pair, s * tgt_vocab + missing)]   # every (s, missing) co-occurs here
            by_src[int(s[np.argmax(d)])].add(missing)          # ties: the smallest source id
    lengths = np.array([len(c) for c in by_src], np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    ids = np.array([t for c in by_src for t in sorted(c)], np.int64)
    return Shortlist(offsets, ids, np.array(sorted(always), np.int64), tgt_vocab)
