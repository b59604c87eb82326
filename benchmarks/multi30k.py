"""Multi30k recipe, measured (opt-in, not in CI): train examples/multi30k.yaml, score test2016, plot BLEU vs time.

usage: python benchmarks/multi30k.py [--config examples/multi30k-en-fr.yaml] [--skip-train]
                                     [--model-dir DIR] [--data ../shared/data/multi30k]
The test set's languages are the config's data.src_lang and data.tgt_lang.

Prints one Markdown row for BENCHMARKS.md / the README and writes benchmarks/results/multi30k_curve.png
(validation BLEU against wall-clock minutes of training, validation included).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def reading_from(cfg, data: Path):
    """Return cfg (a Config) with its training and validation files taken from the folder data instead
    (the same file names: a recipe reads data/multi30k/, a run may read another copy)."""
    data = data.resolve()
    cfg.data = dataclasses.replace(cfg.data, **{key: str(data / Path(getattr(cfg.data, key)).name) for key in
                                                ("train_src", "train_tgt", "valid_src", "valid_tgt")})
    return cfg


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(ROOT / "examples" / "multi30k.yaml"))
    ap.add_argument("--model-dir", help="where to train (default: the config's model_dir)")
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "multi30k"))
    ap.add_argument("--skip-train", action="store_true", help="score the model already in --model-dir")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    from seqattn.config import load_config

    cfg = load_config(args.config)
    src, tgt = cfg.data.src_lang, cfg.data.tgt_lang
    args.model_dir = args.model_dir or str(ROOT / cfg.model_dir)
    seqattn = [sys.executable, "-m", "seqattn"]
    if not args.skip_train:   # the recipe, reading its files from --data
        from seqattn.config import save_config

        reading_from(cfg, Path(args.data))
        Path(args.model_dir).parent.mkdir(parents=True, exist_ok=True)
        config = Path(args.model_dir).parent / f"{Path(args.model_dir).name}.recipe.yaml"
        save_config(cfg, config)
        start = time.perf_counter()
        subprocess.run([*seqattn, "train", str(config), "--model-dir", args.model_dir, "--overwrite"], check=True,
                       cwd=ROOT)
        print(f"train command wall time: {(time.perf_counter() - start) / 60:.1f} min", file=sys.stderr)
    model_dir = Path(args.model_dir)
    out = subprocess.run([*seqattn, "evaluate", str(model_dir), "--src", f"{args.data}/test_2016_flickr.{src}.gz",
                          "--ref", f"{args.data}/test_2016_flickr.{tgt}.gz", "--json"], check=True, cwd=ROOT,
                         capture_output=True, text=True).stdout
    test = json.loads(out.strip().splitlines()[-1])
    log = [json.loads(line) for line in (model_dir / "train_log.jsonl").read_text().splitlines()]
    valid = [r for r in log if r["kind"] == "valid"]
    end = [r for r in log if r["kind"] == "end"][-1]
    best = max(valid, key=lambda r: r["bleu"])

    from seqattn.plot import plot_curves

    results = ROOT / "benchmarks" / "results"
    results.mkdir(parents=True, exist_ok=True)
    png = plot_curves({"seqattn (val, greedy)": ([r["minutes"] for r in valid], [r["bleu"] for r in valid])},
                      results / f"multi30k_curve{'' if (src, tgt) == ('de', 'en') else f'_{src}-{tgt}'}.png",
                      "training minutes (validation included)", "BLEU",
                      title=f"Multi30k {src}→{tgt}, {Path(args.config).name}")
    print(f"| {datetime.date.today()} | {platform.machine()}, {subprocess.os.cpu_count()} cores | "
          f"{end['minutes']:.1f} min, {end['step']} steps | val BLEU {best['bleu']:.2f} (step {best['step']}) | "
          f"test2016 greedy BLEU {test['bleu']:.2f} chrF {test['chrf']:.2f} |")
    print(test["bleu_signature"])
    print(f"curve: {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
