"""The quality levers on Multi30k, measured (opt-in, not in CI): one direction's recipe, + averaging,
+ subword regularisation, and an ensemble of two recipe models, each scored on test2016 (BLEU and chrF,
greedy and beam 5) and on validation (greedy BLEU, the figure settings are chosen on).

usage: python benchmarks/quality.py --direction de-en [--runs recipe,sr,short,short2] [--skip-train]
                                    [--out runs/quality] [--sr-alpha 0.1] [--sr-steps 5000]
                                    [--short-steps 2500] [--third-minutes 19.5 | --third-steps N]
                                    [--cap-minutes M]

Runs (each trained alone on the machine, so that its minutes mean something):
  recipe  examples/multi30k.yaml (de-en) or examples/multi30k-<direction>.yaml, as it is
  sr      the recipe with data.sample_alpha / sample_nbest 64 and --sr-steps steps
  short   the recipe with --short-steps steps (its cosine ends there): the first member of the ensemble
  short2  the same with train.seed 2: the second member
  third, third2, third3
          the recipe with --third-minutes of training each (its cosine ends at that time, whatever the
          machine's speed), seeds 1234, 2 and 3: three members that together fit in one hour; with
          --third-steps N each trains N steps instead (its cosine ends there), so that the members are
          the same models on a slower machine (2,500 steps: about the minutes' count on an idle one)
Rows (scored from whichever runs exist):
  recipe          best.pt of the recipe run
  + averaging     what `translate` uses after the recipe run: averaged.pt when it beat best.pt on validation
  + subword reg.  the sr run, what `translate` uses
  short           the short run alone, what `translate` uses
  ensemble of 2   the short run with --ensemble the short2 run (training minutes: both together)
  ensemble of 3   the third run with --ensemble third2 third3 (training minutes: the three together)
Only the rows that the runs named in --runs feed are scored (all of them by default); the figures go to
benchmarks/results/quality.json (merged by direction and row); the whole table is printed in Markdown.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "quality.json"
DIRECTIONS = ("de-en", "en-de", "en-fr", "en-cs")
RUNS = ("recipe", "sr", "short", "short2", "third", "third2", "third3")
ROW_RUNS = {"recipe": ("recipe",), "+ averaging": ("recipe",), "+ subword reg.": ("sr",), "short": ("short",),
            "ensemble of 2": ("short", "short2"), "ensemble of 3": ("third", "third2", "third3")}
ROWS = tuple(ROW_RUNS)
SEEDS = {"short2": 2, "third2": 2, "third3": 3}


def recipe_path(direction: str) -> Path:
    """Return the example config of a direction."""
    return ROOT / "examples" / ("multi30k.yaml" if direction == "de-en" else f"multi30k-{direction}.yaml")


def run_config(direction: str, run: str, out: Path, sr_alpha: float, sr_steps: int, short_steps: int,
               third_minutes: float, data: Path, cap_minutes: float | None = None, third_steps: int = 0) -> Path:
    """Write run's config (the recipe, changed as the run says, reading its files from data) into
    out/run.yaml; return its path."""
    from multi30k import reading_from

    from seqattn.config import load_config, save_config

    cfg = load_config(recipe_path(direction))
    cfg.model_dir = str(out / run)
    reading_from(cfg, data)
    cfg.train = dataclasses.replace(cfg.train, seed=SEEDS.get(run, cfg.train.seed))
    if run.startswith("short"):
        cfg.train = dataclasses.replace(cfg.train, max_steps=short_steps)
    elif run.startswith("third") and third_steps:
        cfg.train = dataclasses.replace(cfg.train, max_steps=third_steps)
    elif run.startswith("third"):
        cfg.train = dataclasses.replace(cfg.train, max_steps=0, max_minutes=third_minutes, decay_over="minutes")
    elif run == "sr":
        cfg.data = dataclasses.replace(cfg.data, sample_alpha=sr_alpha, sample_nbest=64)
        cfg.train = dataclasses.replace(cfg.train, max_steps=sr_steps)
    if cap_minutes is not None and (third_steps or not run.startswith("third")):
        cfg.train = dataclasses.replace(cfg.train, max_minutes=cap_minutes)
    path = out / f"{run}.yaml"
    save_config(cfg.validate(str(path)), path)
    return path


def evaluate(model_dir: Path, src: str, ref: str, extra: list[str]) -> dict:
    """Return `seqattn evaluate --json`'s metrics."""
    out = subprocess.run([sys.executable, "-m", "seqattn", "evaluate", str(model_dir), "--src", src, "--ref", ref,
                          "--json", *extra], check=True, cwd=ROOT, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def log_of(model_dir: Path) -> list[dict]:
    """Return the training log's records."""
    return [json.loads(line) for line in (model_dir / "train_log.jsonl").read_text().splitlines()]


def score_row(row: str, runs: Path, data: Path, src: str, tgt: str) -> dict | None:
    """Return one row's figures, or None when its runs are missing."""
    members = [runs / run for run in ROW_RUNS[row]]
    extra = ["--checkpoint", "best.pt"] if row == "recipe" else []
    if len(members) > 1:
        extra = ["--ensemble", *map(str, members[1:])]
    if not all((m / "best.pt").exists() for m in members):
        return None
    used = " + ".join("averaged.pt" if row != "recipe" and (m / "averaged.pt").exists() else "best.pt"
                      for m in members)   # what `translate` loads of each member
    valid = evaluate(members[0], f"{data}/val.{src}.gz", f"{data}/val.{tgt}.gz", extra)
    greedy = evaluate(members[0], f"{data}/test_2016_flickr.{src}.gz", f"{data}/test_2016_flickr.{tgt}.gz", extra)
    beam = evaluate(members[0], f"{data}/test_2016_flickr.{src}.gz", f"{data}/test_2016_flickr.{tgt}.gz",
                    [*extra, "--beam", "5", "--alpha", "1.0"])
    ends = [[r for r in log_of(m) if r["kind"] == "end"][-1] for m in members]
    return {"date": str(datetime.date.today()), "checkpoint": used, "valid_bleu": round(valid["bleu"], 2),
            "greedy_bleu": round(greedy["bleu"], 2), "greedy_chrf": round(greedy["chrf"], 2),
            "greedy_bleu_lc": round(greedy["bleu_lc"], 2),
            "beam5_bleu": round(beam["bleu"], 2), "beam5_chrf": round(beam["chrf"], 2),
            "beam5_bleu_lc": round(beam["bleu_lc"], 2),
            "minutes": round(sum(e["minutes"] for e in ends), 1), "steps": [e["step"] for e in ends],
            "signature": greedy["bleu_signature"]}


def table(results: dict) -> str:
    """Return the results as one Markdown table."""
    lines = ["| direction | model | training | val BLEU | test2016 greedy BLEU / chrF / -lc | "
             "beam 5 BLEU / chrF / -lc |", "|---|---|---|---|---|---|"]
    for direction in DIRECTIONS:
        for row in ROWS:
            r = results.get(direction, {}).get(row)
            if r is None:
                continue
            steps = " + ".join(f"{s:,}" for s in r["steps"])
            lc = {k: f" / {r[k]:.2f}" if k in r else " / -" for k in ("greedy_bleu_lc", "beam5_bleu_lc")}
            lines.append(f"| {direction} | {row} ({r['checkpoint']}) | {r['minutes']:.1f} min, {steps} steps | "
                         f"{r['valid_bleu']:.2f} | {r['greedy_bleu']:.2f} / {r['greedy_chrf']:.2f}"
                         f"{lc['greedy_bleu_lc']} | {r['beam5_bleu']:.2f} / {r['beam5_chrf']:.2f}"
                         f"{lc['beam5_bleu_lc']} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--direction", choices=DIRECTIONS, required=True)
    ap.add_argument("--runs", default=",".join(RUNS), help="which runs to train, comma-separated")
    ap.add_argument("--skip-train", action="store_true", help="only score the runs already in --out")
    ap.add_argument("--out", default=str(ROOT / "runs" / "quality"), help="runs go to OUT/DIRECTION/RUN")
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "multi30k"))
    ap.add_argument("--sr-alpha", type=float, default=0.1)
    ap.add_argument("--sr-steps", type=int, default=5000)
    ap.add_argument("--short-steps", type=int, default=2500)
    ap.add_argument("--third-minutes", type=float, default=19.5,
                    help="training minutes of each third run (the final validation comes on top)")
    ap.add_argument("--third-steps", type=int, default=0,
                    help="train each third run this many steps instead of --third-minutes (0: minutes)")
    ap.add_argument("--cap-minutes", type=float, default=None,
                    help="the step-bounded runs' wall-clock cap instead of the recipe's (on a shared machine, so "
                         "that the cap cannot cut them short: their steps, and so their model, stay the recipe's)")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    src, tgt = args.direction.split("-")
    runs = Path(args.out) / args.direction
    runs.mkdir(parents=True, exist_ok=True)
    named = [r for r in args.runs.split(",") if r]
    if args.third_steps < 0:
        ap.error(f"--third-steps: must be 0 (train by minutes) or more, got {args.third_steps}")
    if args.third_minutes <= 0:
        ap.error("--third-minutes: must be above 0 (it is the third runs' only stop)")
    for run in named:
        if run not in RUNS:
            ap.error(f"--runs: unknown run {run!r} ({', '.join(RUNS)})")
    if not args.skip_train:
        for run in named:
            config = run_config(args.direction, run, runs, args.sr_alpha, args.sr_steps, args.short_steps,
                                args.third_minutes, Path(args.data), args.cap_minutes, args.third_steps)
            subprocess.run([sys.executable, "-m", "seqattn", "train", str(config), "--overwrite"], check=True,
                           cwd=ROOT)
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    for row in [row for row in ROWS if set(ROW_RUNS[row]) & set(named)]:
        figures = score_row(row, runs, Path(args.data), src, tgt)
        if figures is not None:
            results.setdefault(args.direction, {})[row] = figures
            print(f"{args.direction} {row}: {json.dumps(figures)}", file=sys.stderr)
    RESULTS.write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n")
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
