"""Fine-tuning on a data shift (opt-in, not in CI): a Multi30k de->en model trained on part of the training
data, then fine-tuned on the rest (`train.init_from`), against one trained on all of it from scratch for
the same minutes.

usage: python benchmarks/finetune.py --data DIR [--base-minutes 10] [--tune-minutes 5] [--part 0.5]
                                     [--split order|length] [--out runs/finetune]
--data holds the Multi30k files (`seqattn data multi30k --dir DIR`). The recipe (examples/multi30k.yaml) is
trained with its schedule annealed over each run's minutes (`train.decay_over: minutes`); the fine-tuning
run starts from the base's best checkpoint with a fresh optimizer at a fifth of the recipe's learning rate.
--split order: the base sees the first pairs of the file, fine-tuning the rest (more of the same);
--split length: the base sees the pairs with the shortest sources, fine-tuning the longer ones (a shift),
and test2016's sentences at least as long as the fine-tuning data's shortest are scored on their own too.
Prints one JSON line per model and a Markdown table: test2016 BLEU and chrF, greedy and beam 5.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import gzip
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from multi30k import reading_from  # noqa: E402

from seqattn.config import load_config  # noqa: E402
from seqattn.evaluate import score  # noqa: E402
from seqattn.train import Trainer  # noqa: E402
from seqattn.translator import SearchOptions, Translator  # noqa: E402


def read(path: Path) -> list[str]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return f.read().splitlines()


def write(path: Path, lines: list[str]) -> Path:
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write("".join(line + "\n" for line in lines))
    return path


def train(cfg, model_dir: Path, minutes: float, src: Path, tgt: Path, **train_changes) -> dict:
    """Train cfg's model into model_dir on (src, tgt) for `minutes`; return its run summary."""
    cfg = dataclasses.replace(cfg, model_dir=str(model_dir),
                              data=dataclasses.replace(cfg.data, train_src=str(src), train_tgt=str(tgt)),
                              train=dataclasses.replace(cfg.train, max_steps=0, max_minutes=minutes,
                                                        decay_over="minutes", **train_changes))
    result = Trainer(cfg.validate("finetune"), overwrite=True).run()
    return {"steps": result["step"], "best": result["best"], "minutes": result["history"][-1]["minutes"]}


def evaluate(model_dir: Path, src: list[str], ref: list[str], subset: list[int] | None = None) -> dict:
    """Return greedy and beam-5 BLEU and chrF on (src, ref), and on the lines `subset` alone when given."""
    translator = Translator.load(model_dir)
    out = {}
    for beam in (1, 5):
        hyps = [t.text for t in translator.translate(src, options=SearchOptions(beam=beam))]
        metrics = score(hyps, ref)
        out[f"beam{beam}"] = {"bleu": metrics["bleu"], "chrf": metrics["chrf"]}
        if subset is not None:
            part = score([hyps[i] for i in subset], [ref[i] for i in subset])
            out[f"beam{beam}_subset"] = {"bleu": part["bleu"], "chrf": part["chrf"]}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--base-minutes", type=float, default=10.0)
    ap.add_argument("--tune-minutes", type=float, default=5.0)
    ap.add_argument("--part", type=float, default=0.5, help="the share of the training data the base sees")
    ap.add_argument("--split", choices=["order", "length"], default="order",
                    help="order: the file's first pairs, then the rest; length: the shortest sources, then the rest")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "finetune")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    cfg = reading_from(load_config(ROOT / "examples" / "multi30k.yaml"), args.data)
    src, tgt = read(Path(cfg.data.train_src)), read(Path(cfg.data.train_tgt))
    cut = int(len(src) * args.part)
    if args.split == "length":              # a stable order by source words: the short ones first
        order = sorted(range(len(src)), key=lambda i: len(src[i].split()))
        src, tgt = [src[i] for i in order], [tgt[i] for i in order]
    parts = {name: (write(args.out / f"{name}.de.gz", s), write(args.out / f"{name}.en.gz", t))
             for name, s, t in (("first", src[:cut], tgt[:cut]), ("rest", src[cut:], tgt[cut:]))}
    test_src, test_ref = read(args.data / "test_2016_flickr.de.gz"), read(args.data / "test_2016_flickr.en.gz")
    threshold = len(src[cut].split())
    subset = [i for i, line in enumerate(test_src) if len(line.split()) >= threshold] \
        if args.split == "length" else None
    runs = {
        "base": lambda: train(cfg, args.out / "base", args.base_minutes, *parts["first"]),
        "fine-tuned": lambda: train(cfg, args.out / "tuned", args.tune_minutes, *parts["rest"],
                                    init_from=str(args.out / "base"), lr=cfg.train.lr / 5, warmup_steps=0),
        "scratch": lambda: train(cfg, args.out / "scratch", args.base_minutes + args.tune_minutes,
                                 Path(cfg.data.train_src), Path(cfg.data.train_tgt)),
    }
    rows = {}
    for name, run in runs.items():
        summary = run()
        model_dir = args.out / {"base": "base", "fine-tuned": "tuned", "scratch": "scratch"}[name]
        rows[name] = {**summary, **evaluate(model_dir, test_src, test_ref, subset)}
        print(json.dumps({"model": name, **rows[name]}), flush=True)
    which = "shortest" if args.split == "length" else "first"
    print(f"\n{datetime.date.today()}, base {args.base_minutes:g} min on the {which} {cut} pairs, fine-tuned "
          f"{args.tune_minutes:g} min on the other {len(src) - cut}, scratch {args.base_minutes + args.tune_minutes:g} "
          f"min on all {len(src)}")
    extra = "" if subset is None else f" | sources of {threshold}+ words ({len(subset)}): greedy / beam 5 BLEU"
    print(f"| model | steps | test2016 greedy BLEU / chrF | beam 5 BLEU / chrF{extra} |")
    print("|---|---|---|---|" + ("---|" if subset is not None else ""))
    for name, r in rows.items():
        tail = "" if subset is None else \
            f" | {r['beam1_subset']['bleu']:.2f} / {r['beam5_subset']['bleu']:.2f}"
        print(f"| {name} | {r['steps']} | {r['beam1']['bleu']:.2f} / {r['beam1']['chrf']:.2f} | "
              f"{r['beam5']['bleu']:.2f} / {r['beam5']['chrf']:.2f}{tail} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
