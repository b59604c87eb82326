"""The coverage penalty on a Multi30k model (opt-in, not in CI): test2016 BLEU with beam search at several
betas, and how often an output leaves a source word unattended.

usage: python benchmarks/coverage.py --model MODEL_DIR --data DIR [--betas 0,0.2,0.4] [--beam 5]
--data holds test_2016_flickr.{de,en}(.gz) (`seqattn data multi30k --dir DIR`). A source word (whitespace
word, its pieces together) is unattended when all the output's steps, <eos> included, gave it less than 0.5 of
attention in total. Prints a Markdown table: beta, sacreBLEU, chrF, mean output length, the share of outputs
with an unattended source word, decoding seconds.
"""

from __future__ import annotations

import argparse
import datetime
import gzip
import json
import time
from pathlib import Path

import numpy as np

from seqattn.evaluate import score
from seqattn.translator import SearchOptions, Translator
from seqattn_runtime.align import word_of


def read(path: Path) -> list[str]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        return f.read().splitlines()


def find(data: Path, name: str) -> Path:
    return next(p for p in (data / f"{name}.gz", data / name) if p.exists())


def unattended(translation, floor: float = 0.5) -> bool:
    """Return whether a source word of the translation received less than floor attention in all."""
    pieces = [p for p in translation.src_tokens if p != "<eos>"]
    if not pieces or not translation.attention:
        return False
    received = np.asarray(translation.attention, np.float64)[:, : len(pieces)].sum(0)
    per_word = np.bincount(word_of(pieces), weights=received)
    return bool((per_word < floor).any())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--betas", default="0,0.2,0.4")
    ap.add_argument("--beam", type=int, default=5)
    ap.add_argument("--alpha", type=float, default=1.0)
    args = ap.parse_args()
    src, ref = read(find(args.data, "test_2016_flickr.de")), read(find(args.data, "test_2016_flickr.en"))
    translator = Translator.load(args.model)
    rows = []
    for beta in map(float, args.betas.split(",")):
        options = SearchOptions(beam=args.beam, alpha=args.alpha, coverage_penalty=beta)
        start = time.perf_counter()
        outs = translator.translate(src, attention=True, options=options)
        seconds = time.perf_counter() - start
        metrics = score([o.text for o in outs], ref)
        rows.append({"beta": beta, "bleu": metrics["bleu"], "chrf": metrics["chrf"],
                     "length": float(np.mean([len(o.text.split()) for o in outs])),
                     "unattended": 100.0 * sum(map(unattended, outs)) / len(outs), "seconds": seconds})
        print(json.dumps(rows[-1]), flush=True)
    print(f"\n{datetime.date.today()}, {args.model}, test2016 ({len(src)} sentences), beam {args.beam}, "
          f"alpha {args.alpha}")
    print("| coverage penalty | BLEU | chrF | words per output | outputs leaving a source word unattended | "
          "decoding s |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['beta']:g} | {r['bleu']:.2f} | {r['chrf']:.2f} | {r['length']:.2f} | {r['unattended']:.1f}% | "
              f"{r['seconds']:.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
