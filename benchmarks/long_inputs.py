"""The context vector's bottleneck on long inputs (opt-in, not in CI): the plain seq2seq against attention, the same
budget, exact match by input length.

The built-in `lookup` task maps each of 5 to 100 letters to a word, in order (`a c b` -> `apple cat bear`):
everything the decoder must write is in the source, and how much grows with its length. Without attention
the source reaches the decoder only through the context vector; with it, every step reads the letters.
Each model (an LSTM, `model.attention` none or dot, nothing else changed) trains for the same
wall-clock budget on 20,000 generated pairs; 1,000 held-out inputs are decoded greedily.

usage: python benchmarks/long_inputs.py [--seconds 240] [--out runs/long_inputs] [--results benchmarks/results]
Prints a Markdown table (exact match and word accuracy by input length) and writes long_inputs.png and
long_inputs.json into --results.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUCKETS = [(5, 20), (21, 40), (41, 60), (61, 80), (81, 100)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=240, help="training budget of each model")
    ap.add_argument("--out", default=str(ROOT / "runs" / "long_inputs"))
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--results", default=str(ROOT / "benchmarks" / "results"), help="where the figure and JSON go")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    from seqattn.config import Config, DataConfig, DecodeConfig, ModelConfig, TrainConfig
    from seqattn.data.tasks import make_splits
    from seqattn.plot import plot_curves
    from seqattn.train import Trainer
    from seqattn.translator import Translator

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    splits = make_splits("lookup", args.seed, n_train=20000, n_valid=200, n_test=1000)
    for name in ("train", "valid"):
        (out / f"{name}.tsv").write_text("".join(f"{s}\t{t}\n" for s, t in splits[name]), encoding="utf-8")
    test = splits["test"]
    results = {}
    for attention in ("none", "dot"):
        cfg = Config(
            model_dir=str(out / attention),
            data=DataConfig(train_tsv=str(out / "train.tsv"), valid_tsv=str(out / "valid.tsv"), vocab_size=80,
                            max_len=220),
            model=ModelConfig(rnn="lstm", emb_size=64, enc_hidden_size=128, bidirectional=True, dec_hidden_size=256,
                              attention=attention, dropout=0.1),
            train=TrainConfig(seed=args.seed, batch_tokens=4000, lr=0.003, schedule="constant", label_smoothing=0.0,
                              max_minutes=args.seconds / 60, valid_every=200, valid_metric="exact", log_every=50,
                              tensorboard=False),
            decode=DecodeConfig(max_output_ratio=2.5),
        ).validate("long_inputs")
        run = Trainer(cfg, overwrite=True).run()
        outputs = Translator.load(cfg.model_dir).translate([s for s, _ in test])
        by_bucket = []
        for lo, hi in BUCKETS:
            rows = [(o.text, t) for o, (s, t) in zip(outputs, test) if lo <= len(s.split()) <= hi]
            exact = sum(h == t for h, t in rows) / len(rows)
            words = sum(sum(a == b for a, b in zip(h.split(), t.split())) for h, t in rows)
            by_bucket.append({"lengths": f"{lo}-{hi}", "n": len(rows), "exact": 100 * exact,
                              "word_accuracy": 100 * words / sum(len(t.split()) for _, t in rows)})
        results[attention] = {"steps": run["step"], "minutes": run["history"][-1]["minutes"] if run["history"] else 0,
                              "buckets": by_bucket}
    where = Path(args.results)
    where.mkdir(parents=True, exist_ok=True)
    (where / "long_inputs.json").write_text(json.dumps(results, indent=1))
    mid = [(lo + hi) / 2 for lo, hi in BUCKETS]
    png = plot_curves({f"attention {a} ({r['steps']} steps)": (mid, [b["exact"] for b in r["buckets"]])
                       for a, r in results.items()}, where / "long_inputs.png",
                      "input length (letters)", "exact match on held-out inputs (%)",
                      title=f"lookup task, {args.seconds:.0f} s of training each")
    print(f"{datetime.date.today()}, {args.seconds:.0f} s per model")
    print("| attention | steps | " + " | ".join(f"{lo}-{hi} letters" for lo, hi in BUCKETS) + " |")
    print("|---|---|" + "---|" * len(BUCKETS))
    for attention, r in results.items():
        cells = " | ".join(f"{b['exact']:.1f}% ({b['word_accuracy']:.1f}%)" for b in r["buckets"])
        print(f"| {attention} | {r['steps']} | {cells} |")
    print(f"figure: {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
