"""A recipe sweep at a fixed number of steps (opt-in, not in CI): which settings (learning rate, dropout, batch
size, warm-up, any config key) give the best validation BLEU for a step budget, e.g. the steps that fit in the
peers' 12 CPU minutes.

BLEU after N steps does not depend on the machine that ran them, so a GPU can answer in minutes what the
2-core CPU would take hours for. Every run is selected on validation BLEU (greedy), never on the test set.

usage: python benchmarks/sweep.py --data DIR --out OUT --steps 1600 [--grid KEY=V1,V2 ...]
                                  [--variant "KEY=V KEY=V" ...] [--seeds 1,2] [--jobs 4]
--grid: one config key (e.g. train.lr, model.dropout) and its values; grids multiply.
--variant: a named group of settings tried together (e.g. "train.batch_tokens=2000 train.max_steps=2200",
  a smaller batch at the step count the CPU reaches in the same time); variants multiply with the grids.
--lr / --dropout: shorthands for --grid train.lr=... / --grid model.dropout=...
--jobs: runs at once (a GPU has room for several of these small models).
DIR holds Multi30k's {train,val}.{de,en}.gz and, optionally, spm.model (the peers' joint 8k model).
Prints one line per run and a Markdown table of the mean validation BLEU per setting; OUT/sweep.json.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import itertools
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def parse_setting(text: str) -> tuple[str, list]:
    """Return (dotted key, values) of 'section.key=v1,v2' (values read as YAML scalars: 0.004, true, 200)."""
    key, sep, values = text.partition("=")
    if not sep or key.count(".") != 1 or not values:
        raise SystemExit(f"sweep: {text!r}: expected section.key=value[,value...]")
    return key, [yaml.safe_load(v) for v in values.split(",")]


def config(data: Path, out: Path, steps: int, seed: int, device: str, settings: dict) -> dict:
    """Return examples/multi30k.yaml at the given step budget and settings ({'section.key': value}), on DIR's
    data; a setting of train.max_steps overrides steps."""
    cfg = yaml.safe_load((ROOT / "examples" / "multi30k.yaml").read_text())
    cfg["model_dir"] = str(out)
    cfg["data"].update({f"{split}_{side}": str(data / f"{name}.{lang}.gz") for split, name in (("train", "train"),
                        ("valid", "val")) for side, lang in (("src", "de"), ("tgt", "en"))})
    if (data / "spm.model").exists():
        cfg["data"]["spm_model"] = str(data / "spm.model")
    cfg["train"].update(max_steps=steps, max_minutes=0, seed=seed, keep_last=1, tensorboard=False, device=device)
    for key, value in settings.items():
        section, name = key.split(".")
        if section not in cfg or not isinstance(cfg[section], dict):
            raise SystemExit(f"sweep: {key}: no section {section!r} in examples/multi30k.yaml")
        cfg[section][name] = value
    cfg["train"]["valid_every"] = cfg["train"]["max_steps"]
    return cfg


def settings_list(a) -> list[dict]:
    """Return every combination of the variants and grids, in order (each a {'section.key': value} dict)."""
    grids = [parse_setting(g) for g in a.grid]
    if a.lr:
        grids.append(parse_setting(f"train.lr={a.lr}"))
    if a.dropout:
        grids.append(parse_setting(f"model.dropout={a.dropout}"))
    variants = [{key: values[0] for key, values in map(parse_setting, v.split())} for v in a.variant] or [{}]
    combos = []
    for variant in variants:
        for values in itertools.product(*(vals for _, vals in grids)):
            combos.append({**variant, **{key: v for (key, _), v in zip(grids, values)}})
    return combos


def run_one(a, settings: dict, seed: int) -> dict:
    """Train one setting with one seed; return its validation BLEU / loss after the last step."""
    name = "_".join(f"{k.split('.')[1]}{v}" for k, v in settings.items()) or "base"
    d = a.out / f"{name}_s{seed}"
    d.mkdir(parents=True, exist_ok=True)
    (d / "config.yaml").write_text(yaml.safe_dump(config(a.data, d / "model", a.steps, seed, a.device, settings)))
    start = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "seqattn", "train", str(d / "config.yaml"), "--overwrite"],
                         capture_output=True, text=True)
    (d / "train.log").write_text(res.stdout + res.stderr)
    log = [json.loads(x) for x in (d / "model" / "train_log.jsonl").read_text().splitlines()] \
        if res.returncode == 0 else []
    valid = [r for r in log if r["kind"] == "valid"]
    lines = (res.stderr or res.stdout).strip().splitlines()
    run = {"settings": settings, "seed": seed, "rc": res.returncode,
           "error": lines[-1] if res.returncode and lines else None,
           "steps": valid[-1]["step"] if valid else None,
           "valid_bleu": valid[-1]["bleu"] if valid else None, "valid_loss": valid[-1]["loss"] if valid else None,
           "seconds": time.perf_counter() - start}
    print(json.dumps(run), flush=True)
    return run


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--steps", type=int, default=1600)
    ap.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2")
    ap.add_argument("--variant", action="append", default=[], metavar='"KEY=V KEY=V"')
    ap.add_argument("--lr", default="")
    ap.add_argument("--dropout", default="")
    ap.add_argument("--seeds", default="1,2")
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--device", default="auto")
    a = ap.parse_args()
    combos = settings_list(a)
    seeds = [int(x) for x in a.seeds.split(",")]
    with concurrent.futures.ThreadPoolExecutor(max(1, a.jobs)) as pool:
        runs = list(pool.map(lambda job: run_one(a, *job), [(s, seed) for s in combos for seed in seeds]))
    (a.out / "sweep.json").write_text(json.dumps({"steps": a.steps, "runs": runs}, indent=1))
    print("\n| settings | validation BLEU (mean of seeds) | runs |\n|---|---|---|")
    for settings in combos:
        scores = [r["valid_bleu"] for r in runs if r["settings"] == settings and r["valid_bleu"] is not None]
        mean = f"{statistics.mean(scores):.2f}" if scores else "failed"
        label = " ".join(f"{k}={v}" for k, v in settings.items()) or "examples/multi30k.yaml"
        print(f"| {label} | {mean} | {', '.join(f'{s:.2f}' for s in scores)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
