"""The context vector's bottleneck, measured (opt-in, not in CI): attention none vs dot / general / concat on Multi30k.

Without attention the whole source must pass through the context vector; the explainer's claim is that this
fails on long inputs and attention fixes it. Each model trains with the same step budget and schedule
(examples/multi30k.yaml otherwise); test2016 is decoded greedily and scored by source-length bucket.

usage: python benchmarks/bottleneck.py [--steps 700] [--scores ...] [--skip-train]
Prints a Markdown table and writes benchmarks/results/bottleneck.png.
"""

from __future__ import annotations

import argparse
import datetime
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
BUCKETS = [(1, 10), (11, 20), (21, 30), (31, 10_000)]


def bucket_name(lo: int, hi: int) -> str:
    return f"{lo}-{hi}" if hi < 10_000 else f"{lo}+"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=700, help="training steps per model (the shared budget)")
    ap.add_argument("--scores", nargs="+", default=["none", "dot", "general", "concat"])
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "multi30k"))
    ap.add_argument("--out", default=str(ROOT / "runs" / "bottleneck"))
    ap.add_argument("--skip-train", action="store_true")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    import sacrebleu

    from seqattn.data.corpus import read_lines
    from seqattn.plot import plot_curves
    from seqattn.translator import Translator

    base = yaml.safe_load((ROOT / "examples" / "multi30k.yaml").read_text())
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    src = read_lines(f"{args.data}/test_2016_flickr.de.gz")
    ref = read_lines(f"{args.data}/test_2016_flickr.en.gz")
    lengths = [len(s.split()) for s in src]
    rows, series = [], {}
    for score in args.scores:
        cfg = yaml.safe_load(yaml.safe_dump(base))
        cfg["model_dir"] = str(out / score)
        cfg["model"]["attention"] = score
        for key in ("train_src", "train_tgt", "valid_src", "valid_tgt"):
            cfg["data"][key] = str(Path(args.data) / Path(cfg["data"][key]).name)
        cfg["train"].update(max_steps=args.steps, valid_every=args.steps // 2, max_minutes=0)
        path = out / f"{score}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        if not args.skip_train:
            subprocess.run([sys.executable, "-m", "seqattn", "train", str(path), "--overwrite"], check=True,
                           cwd=ROOT)
        hyps = [t.text for t in Translator.load(out / score).translate(src)]
        per_bucket = []
        for lo, hi in BUCKETS:
            idx = [i for i, n in enumerate(lengths) if lo <= n <= hi]
            bleu = sacrebleu.corpus_bleu([hyps[i] for i in idx], [[ref[i] for i in idx]]).score if idx else None
            per_bucket.append((len(idx), bleu))
        overall = sacrebleu.corpus_bleu(hyps, [ref]).score
        rows.append((score, per_bucket, overall))
        kept = [(bucket_name(lo, hi), b) for (lo, hi), (_, b) in zip(BUCKETS, per_bucket) if b is not None]
        series[score] = ([name for name, _ in kept], [b for _, b in kept])
    counts = [n for n, _ in rows[0][1]]
    head = " | ".join(f"{bucket_name(lo, hi)} words ({n})" for (lo, hi), n in zip(BUCKETS, counts))
    print(f"Multi30k test2016 greedy BLEU by source length, {args.steps} steps each, {datetime.date.today()}")
    print(f"| attention | {head} | all |")
    print("|---" * (len(BUCKETS) + 2) + "|")
    for score, per_bucket, overall in rows:
        cells = " | ".join("–" if b is None else f"{b:.1f}" for _, b in per_bucket)
        print(f"| {score} | {cells} | {overall:.1f} |")
    results = ROOT / "benchmarks" / "results"
    results.mkdir(parents=True, exist_ok=True)
    png = plot_curves(series, results / "bottleneck.png", "source length (words)", "test2016 BLEU (greedy)",
                      title=f"Context vector only vs attention, {args.steps} training steps each")
    print(f"plot: {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
