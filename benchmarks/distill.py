"""Sequence-level knowledge distillation on Multi30k de->en (opt-in, not in CI): a student trained on an
ensemble's translations of the training source, against the ensemble and one of its members.

usage: python benchmarks/distill.py --teachers DIR [DIR ...] --data DIR [--out runs/distill]
                                    [--config examples/multi30k-distilled.yaml] [--skip-train]
                                    [--lines N] [--student-minutes M | --student-steps N]
                                    [--init-from MODEL_DIR] [--resume]
--teachers: trained models of the recipe (e.g. `python benchmarks/quality.py --direction de-en --runs
third,third2,third3`, whose minutes the table adds); --data holds the Multi30k files. Steps, each timed:
the teachers translate train.de with beam 5 as one ensemble (`seqattn distill`, resumable), then the
student trains with the recipe on those targets. Every model is scored on test2016 (the newest test set the
data holds): cased detokenised sacreBLEU and chrF, greedy and beam 5, sentences/s at batch 64, and
lowercased tokenised BLEU (sacreBLEU -lc, 13a), the form published Multi30k results use; the figures go to
benchmarks/results/distill_<date>.json (with --lines, a trial: into --out) and a Markdown table is printed.
--lines and --student-minutes cut the run down (the first N training lines; the student's minutes) to try it out.
--student-steps N trains the student N steps instead of the config's (its cosine ends there); --init-from
starts it from a model's weights and vocabularies (`train.init_from`, e.g. one of the teachers) instead of
from nothing, with a fresh optimizer and schedule. Run again with --resume after an interruption: the
translation goes on from its last whole chunk, the student from its last.pt (exactly); the translation's
minutes, interrupted runs' included, add up in --out/distill_minutes.txt for the table.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import gzip
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from multi30k import reading_from  # noqa: E402

from seqattn.config import load_config  # noqa: E402
from seqattn.distill import distill  # noqa: E402
from seqattn.errors import SeqattnError  # noqa: E402
from seqattn.evaluate import score  # noqa: E402
from seqattn.train import Trainer  # noqa: E402
from seqattn.translator import SearchOptions, Translator  # noqa: E402


def read(path: Path) -> list[str]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return f.read().splitlines()


def evaluate(translator: Translator, src: list[str], ref: list[str]) -> dict:
    """Return BLEU, chrF, lowercased BLEU and sentences/s of greedy and beam 5 on (src, ref)."""
    out = {}
    for beam in (1, 5):
        start = time.perf_counter()
        hyps = [t.text for t in translator.translate(src, batch_size=64, options=SearchOptions(beam=beam))]
        seconds = time.perf_counter() - start
        metrics = score(hyps, ref)
        out[f"beam{beam}"] = {"bleu": metrics["bleu"], "chrf": metrics["chrf"],
                              "bleu_lc": metrics["bleu_lc"],
                              "sents_per_s": len(src) / seconds}
    return out


def minutes_of(model_dir: Path) -> float:
    """Return a model's training minutes (validation included) from its log."""
    log = [json.loads(line) for line in (model_dir / "train_log.jsonl").read_text().splitlines()]
    return max((r.get("minutes", 0.0) for r in log), default=0.0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--teachers", type=Path, nargs="+", required=True)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "distill")
    ap.add_argument("--config", type=Path, default=ROOT / "examples" / "multi30k-distilled.yaml")
    ap.add_argument("--skip-train", action="store_true", help="score the student already in --out/student")
    ap.add_argument("--lines", type=int, default=0, help="distill and train on the first N lines only (0: all)")
    ap.add_argument("--student-minutes", type=float, default=0.0, help="the student's budget (0: the recipe's)")
    ap.add_argument("--student-steps", type=int, default=0, help="the student's steps (0: the config's)")
    ap.add_argument("--init-from", type=Path, default=None, help="start the student from this model's weights")
    ap.add_argument("--resume", action="store_true", help="continue the student from its last.pt")
    args = ap.parse_args()
    if args.student_steps < 0 or (args.student_steps and args.student_minutes):
        ap.error("--student-steps: a count of steps above 0, and not with --student-minutes")
    if args.init_from and not args.init_from.exists():   # checked before the translation, not after it
        ap.error(f"--init-from: {args.init_from}: no such model directory or checkpoint")
    if args.resume and not args.skip_train and not (args.out / "student" / "last.pt").exists():
        ap.error(f"--resume: {args.out / 'student'}: nothing to resume (no last.pt)")
    args.out.mkdir(parents=True, exist_ok=True)
    targets = args.out / "train.distilled.en"
    cfg = reading_from(load_config(args.config), args.data)
    lines = read(Path(cfg.data.train_src))[: args.lines or None]
    source = args.out / "train.de"
    source.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    train = cfg.train if not args.student_minutes else dataclasses.replace(
        cfg.train, max_steps=0, max_minutes=args.student_minutes, decay_over="minutes")
    if args.student_steps:   # a wall-clock cap that a slow machine cannot reach: the steps make the model
        train = dataclasses.replace(train, max_steps=args.student_steps, max_minutes=max(train.max_minutes, 180.0))
    if args.init_from:
        train = dataclasses.replace(train, init_from=str(args.init_from))
    cfg = dataclasses.replace(cfg, model_dir=str(args.out / "student"), train=train,
                              data=dataclasses.replace(cfg.data, train_src=str(source), train_tgt=str(targets)))
    teacher = Translator.load(args.teachers[0], ensemble=[str(t) for t in args.teachers[1:]] or None)
    spent = args.out / "distill_minutes.txt"   # the translation's minutes, summed over interrupted runs
    distill_minutes, start = float(spent.read_text()) if spent.exists() else 0.0, time.perf_counter()
    try:
        distill(teacher, lines, targets, SearchOptions(beam=5))
    finally:   # an interrupted translation's minutes count too: the next run goes on from its last chunk
        distill_minutes += (time.perf_counter() - start) / 60
        spent.write_text(f"{distill_minutes}\n")
    if not args.skip_train:
        Trainer(cfg.validate("distill"), resume=args.resume, overwrite=not args.resume).run()
    test_src, test_ref = read(args.data / "test_2016_flickr.de.gz"), read(args.data / "test_2016_flickr.en.gz")
    teacher_minutes = sum(minutes_of(t) for t in args.teachers)
    rows = {
        f"ensemble of {len(args.teachers)} (teacher)": (teacher, teacher_minutes),
        "one member": (Translator.load(args.teachers[0]), minutes_of(args.teachers[0])),
        "student": (Translator.load(args.out / "student"),
                    teacher_minutes + distill_minutes + minutes_of(args.out / "student")),
    }
    results = {}
    for name, (translator, minutes) in rows.items():
        results[name] = {"cpu_minutes": minutes, **evaluate(translator, test_src, test_ref)}
        print(json.dumps({"model": name, **results[name]}), flush=True)
    out = (args.out if args.lines else ROOT / "benchmarks" / "results") / f"distill_{datetime.date.today()}.json"
    out.write_text(json.dumps({"date": str(datetime.date.today()), "lines": len(lines),
                               "distill_minutes": distill_minutes, "teachers": [str(t) for t in args.teachers],
                               "models": results}, indent=1) + "\n", encoding="utf-8")
    print(f"\n{datetime.date.today()}, test2016 ({len(test_src)} sentences), batch 64; distilling "
          f"{len(lines)} lines took {distill_minutes:.1f} min")
    print("| model | minutes (all steps) | greedy BLEU / chrF / -lc | beam 5 BLEU / chrF / -lc | "
          "sentences/s greedy / beam 5 |")
    print("|---|---|---|---|---|")
    for name, r in results.items():
        g, b = r["beam1"], r["beam5"]
        print(f"| {name} | {r['cpu_minutes']:.1f} | {g['bleu']:.2f} / {g['chrf']:.2f} / {g['bleu_lc']:.2f} | "
              f"{b['bleu']:.2f} / {b['chrf']:.2f} / {b['bleu_lc']:.2f} | {g['sents_per_s']:.0f} / "
              f"{b['sents_per_s']:.0f} |")
    return 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except SeqattnError as e:   # a bad model directory, config or file: one line, as the CLI says it
        print(f"distill.py: error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
