"""A recipe sweep at a fixed number of steps (opt-in, not in CI): which learning rate / dropout gives the best
validation BLEU for a step budget, e.g. the steps that fit in the peers' 12 CPU minutes.

BLEU after N steps does not depend on the machine that ran them, so a GPU can answer in minutes what the
2-core CPU would take hours for. Every run is selected on validation BLEU (greedy), never on the test set.

usage: python benchmarks/sweep.py --data DIR --out OUT --steps 1600 --lr 0.002,0.003 --dropout 0.2 --seeds 1,2
DIR holds Multi30k's {train,val}.{de,en}.gz and, optionally, spm.model (the peers' joint 8k model).
Prints one line per run and a Markdown table of the mean validation BLEU per setting; OUT/sweep.json.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def config(data: Path, out: Path, steps: int, lr: float, dropout: float, seed: int, device: str) -> dict:
    """Return examples/multi30k.yaml at the given step budget and settings, on DIR's data."""
    cfg = yaml.safe_load((ROOT / "examples" / "multi30k.yaml").read_text())
    cfg["model_dir"] = str(out)
    cfg["data"].update({f"{split}_{side}": str(data / f"{name}.{lang}.gz") for split, name in (("train", "train"),
                        ("valid", "val")) for side, lang in (("src", "de"), ("tgt", "en"))})
    if (data / "spm.model").exists():
        cfg["data"]["spm_model"] = str(data / "spm.model")
    cfg["model"]["dropout"] = dropout
    cfg["train"].update(max_steps=steps, valid_every=steps, max_minutes=0, lr=lr, seed=seed, keep_last=1,
                        tensorboard=False, device=device)
    return cfg


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--steps", type=int, default=1600)
    ap.add_argument("--lr", default="0.002,0.003")
    ap.add_argument("--dropout", default="0.2")
    ap.add_argument("--seeds", default="1,2")
    ap.add_argument("--device", default="auto")
    a = ap.parse_args()
    floats = lambda s: [float(x) for x in s.split(",")]   # noqa: E731
    runs = []
    for lr, dropout, seed in itertools.product(floats(a.lr), floats(a.dropout), [int(x) for x in a.seeds.split(",")]):
        d = a.out / f"lr{lr}_d{dropout}_s{seed}"
        d.mkdir(parents=True, exist_ok=True)
        (d / "config.yaml").write_text(yaml.safe_dump(config(a.data, d / "model", a.steps, lr, dropout, seed,
                                                                 a.device)))
        start = time.perf_counter()
        res = subprocess.run([sys.executable, "-m", "seqattn", "train", str(d / "config.yaml"), "--overwrite"],
                             capture_output=True, text=True)
        (d / "train.log").write_text(res.stdout + res.stderr)
        log = [json.loads(x) for x in (d / "model" / "train_log.jsonl").read_text().splitlines()] \
            if res.returncode == 0 else []
        valid = [r for r in log if r["kind"] == "valid"]
        run = {"lr": lr, "dropout": dropout, "seed": seed, "rc": res.returncode,
               "valid_bleu": valid[-1]["bleu"] if valid else None, "valid_loss": valid[-1]["loss"] if valid else None,
               "seconds": time.perf_counter() - start}
        runs.append(run)
        print(json.dumps(run), flush=True)
    (a.out / "sweep.json").write_text(json.dumps({"steps": a.steps, "runs": runs}, indent=1))
    print(f"\n| lr | dropout | validation BLEU after {a.steps} steps (mean of seeds) | runs |\n|---|---|---|---|")
    for (lr, dropout), group in itertools.groupby(runs, key=lambda r: (r["lr"], r["dropout"])):
        scores = [r["valid_bleu"] for r in group if r["valid_bleu"] is not None]
        mean = f"{statistics.mean(scores):.2f}" if scores else "failed"
        print(f"| {lr} | {dropout} | {mean} | {', '.join(f'{s:.2f}' for s in scores)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
