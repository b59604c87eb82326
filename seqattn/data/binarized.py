"""Corpora larger than RAM: token ids written once to memory-mapped files, batches built on demand.

`seqattn data binarize CONFIG --out DIR` streams the config's training text through the tokenizer
(trained on a sample of at most 1M lines per side, or data.spm_model) and writes:

    DIR/spm.model (+ tgt_pieces.txt) or src.model + tgt.model   the tokenizers
    DIR/{src,tgt}.ids     all pairs' piece ids back to back (uint16, or uint32 for > 65,535 pieces)
    DIR/{src,tgt}.offsets int64, pairs + 1 entries: pair i is ids[offsets[i]:offsets[i + 1]]
    DIR/meta.json         counts, dtype, what was dropped

Training with `data.binarized: DIR` memory-maps these files: only the lengths, the batch order and
the current batch live in memory, so a corpus of any size trains with about the memory of a small one.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..errors import SeqattnError
from .batching import Batch, collate
from .corpus import iter_lines
from .tokenizer import Tokenizer, Tokenizers

CHUNK = 50_000          # pairs encoded at a time
SAMPLE = 1_000_000      # lines per side the tokenizer is trained on


def iter_pairs(src: str | None, tgt: str | None, tsv: str | None) -> Iterator[tuple[str, str]]:
    """Yield (source, target) pairs of two line-aligned files or one two-column TSV file, streaming."""
    if tsv:
        for n, line in enumerate(iter_lines(tsv), 1):
            cols = line.split("\t")
            if len(cols) != 2:
                raise SeqattnError(f"{tsv}:{n}: expected 2 tab-separated columns, found {len(cols)}")
            yield cols[0], cols[1]
        return
    s_lines, t_lines = iter_lines(src), iter_lines(tgt)
    n = 0
    while True:
        s, t = next(s_lines, None), next(t_lines, None)
        if s is None or t is None:
            break
        n += 1
        yield s, t
    if s is not None or t is not None:
        shorter = tgt if s is not None else src
        raise SeqattnError(f"line counts differ: {shorter} ends after {n} lines, "
                           f"{src if s is not None else tgt} goes on")


def _sample(pairs: Iterator[tuple[str, str]], k: int, seed: int) -> tuple[list[str], list[str], int]:
    """Return a uniform sample (reservoir) of at most k pairs and the number of pairs."""
    rng = random.Random(seed)
    src, tgt, n = [], [], 0
    for n, (s, t) in enumerate(pairs, 1):
        if len(src) < k:
            src.append(s)
            tgt.append(t)
        else:
            j = rng.randrange(n)
            if j < k:
                src[j], tgt[j] = s, t
    return src, tgt, n


def binarize(cfg, out: str | Path) -> dict:
    """Write cfg's training data as memory-mappable ids into out (replacing it); return the meta data."""
    d = cfg.data
    if not (d.train_tsv or d.train_src):
        raise SeqattnError("data binarize reads data.train_src/train_tgt or data.train_tsv; the config has neither")
    out = Path(out)
    pairs = lambda: iter_pairs(d.train_src, d.train_tgt, d.train_tsv)
    if d.spm_model:
        tok = Tokenizer.adopt(Path(d.spm_model))
        s_sample, t_sample, _ = _sample(pairs(), SAMPLE, cfg.train.seed)
        from .tokenizer import TargetView

        toks = Tokenizers(tok, TargetView.of(tok, tok.encode(t_sample)))
    else:
        s_sample, t_sample, _ = _sample(pairs(), SAMPLE, cfg.train.seed)
        if not s_sample:
            raise SeqattnError(f"{d.train_tsv or d.train_src}: no training pairs")
        toks = Tokenizers.train(s_sample, t_sample, d.vocab_size, d.joint_vocab)
    dtype = np.uint16 if max(len(toks.src), len(toks.tgt)) <= 65535 else np.uint32
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
        toks.save(tmp)
        kept = dropped = 0
        lens = {"src": [], "tgt": []}
        with open(tmp / "src.ids", "wb") as fs, open(tmp / "tgt.ids", "wb") as ft:
            chunk: list[tuple[str, str]] = []
            for pair in pairs():
                chunk.append(pair)
                if len(chunk) == CHUNK:
                    k, dr = _write_chunk(chunk, toks, d.max_len, dtype, fs, ft, lens)
                    kept, dropped, chunk = kept + k, dropped + dr, []
            k, dr = _write_chunk(chunk, toks, d.max_len, dtype, fs, ft, lens)
            kept, dropped = kept + k, dropped + dr
        if not kept:
            raise SeqattnError(f"no training pair is within data.max_len={d.max_len} pieces (and non-empty)")
        for side in ("src", "tgt"):
            lengths = np.concatenate(lens[side]) if lens[side] else np.zeros(0, np.int64)
            np.save(tmp / f"{side}.offsets.npy", np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)]))
        meta = {"format": 1, "pairs": kept, "dropped": dropped, "dtype": np.dtype(dtype).name,
                "src_vocab": len(toks.src), "tgt_vocab": len(toks.tgt), "max_len": d.max_len}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise SeqattnError(f"{out}: cannot write the binarized data ({e.strerror or e})") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return meta


def _write_chunk(chunk, toks: Tokenizers, max_len: int, dtype, fs, ft, lens: dict) -> tuple[int, int]:
    if not chunk:
        return 0, 0
    s_ids = toks.src.encode([s for s, _ in chunk])
    t_ids = toks.tgt.encode([t for _, t in chunk])
    keep = [i for i in range(len(chunk)) if 0 < len(t_ids[i]) < max_len and len(s_ids[i]) < max_len]
    for ids, f, side in ((s_ids, fs, "src"), (t_ids, ft, "tgt")):
        rows = [ids[i] for i in keep]
        flat = np.fromiter((x for row in rows for x in row), dtype=dtype)
        flat.tofile(f)
        lens[side].append(np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows)))
    return len(keep), len(chunk) - len(keep)


class BinarizedBatches:
    """The token batches of a binarized corpus, built on demand from the memory-mapped ids.

    Same batching as in memory: pairs sorted by (target, source) length, batches of at most
    batch_tokens padded target tokens. Indexable like the list of batches it replaces.
    """

    def __init__(self, directory: str | Path, batch_tokens: int):
        directory = Path(directory)
        try:
            meta = json.loads((directory / "meta.json").read_text(encoding="utf-8"))
            dtype = np.dtype(meta["dtype"])
            self.ids = {s: np.memmap(directory / f"{s}.ids", dtype=dtype, mode="r") for s in ("src", "tgt")}
            self.offsets = {s: np.load(directory / f"{s}.offsets.npy", mmap_mode="r") for s in ("src", "tgt")}
        except FileNotFoundError as e:
            raise SeqattnError(f"{directory}: not a binarized corpus ({Path(e.filename).name} missing; "
                               f"run `seqattn data binarize`)") from None
        except (ValueError, KeyError, TypeError, json.JSONDecodeError) as e:
            raise SeqattnError(f"{directory}: corrupt binarized corpus ({type(e).__name__}: {e})") from None
        self.pairs = int(meta["pairs"])
        src_len = np.diff(self.offsets["src"]).astype(np.int32)
        tgt_len = np.diff(self.offsets["tgt"]).astype(np.int32)
        if len(src_len) != self.pairs or len(tgt_len) != self.pairs or \
                self.offsets["src"][-1] != len(self.ids["src"]) or self.offsets["tgt"][-1] != len(self.ids["tgt"]):
            raise SeqattnError(f"{directory}: corrupt binarized corpus (sizes do not match meta.json)")
        self.order = np.lexsort((np.arange(self.pairs, dtype=np.int32), src_len, tgt_len)).astype(np.int32)
        self.bounds = _bounds(tgt_len[self.order], batch_tokens)
        self.src_tokens, self.tgt_tokens = int(src_len.sum()), int(tgt_len.sum())

    def __len__(self) -> int:
        return len(self.bounds) - 1

    def __getitem__(self, i: int) -> Batch:
        rows = self.order[self.bounds[i] : self.bounds[i + 1]]
        get = lambda side: [self.ids[side][self.offsets[side][r] : self.offsets[side][r + 1]].tolist() for r in rows]
        return collate(get("src"), get("tgt"))


def _bounds(sorted_tgt_len: np.ndarray, batch_tokens: int) -> np.ndarray:
    """Return batch start indices (and the end) over pairs sorted by target length, exactly as
    `token_batches` cuts them: a batch closes when one more row would make rows x (longest + 1) exceed
    the budget."""
    bounds, count = [0], 0
    for i, length in enumerate(sorted_tgt_len.tolist()):
        if count and (length + 1) * (count + 1) > batch_tokens:
            bounds.append(i)
            count = 0
        count += 1
    bounds.append(len(sorted_tgt_len))
    return np.asarray(bounds, dtype=np.int64)
