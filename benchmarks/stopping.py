"""Beam search's stopping rules and the vocabulary shortlist on trained models, measured (opt-in, not in CI):
for each, test2016's BLEU, the share of outputs that differ from the reference's (the exact rule's; a
shortlist's: the same search without it), how many of them score below it and the decoding speed, in
float32 and int8, at batch 64 and one sentence at a time.

usage: python benchmarks/stopping.py --models DIR [DIR ...] [--data DIR] [--modes exact,heuristic,patience:1]
                                     [--beam 5] [--single 200] [--rounds 2] [--no-int8] [--shortlist-k 50]
                                     [--onnx]
--models: trained model directories (any Multi30k direction: the test set's languages are each model's
data.src_lang / data.tgt_lang); --data holds test_2016_flickr.<lang>(.gz). Each rule decodes the whole test
set at batch 64 (`--rounds` times, the fastest kept; rules alternate within a round so that they share the
machine's state) and its first `--single` sentences one at a time. Greedy is decoded beside them: the
stopping rule is beam search's only. A mode ending in "+shortlist" (e.g. exact+shortlist) decodes with the
model's shortlist, built first with `--shortlist-k` and `--shortlist-frequent` (written to the model
directory as `seqattn shortlist` does); how many pieces it gives a batch and how much of the references it
holds are printed first. With --onnx, each model is also exported (`seqattn export`, with --shortlist when a
mode asks for it; float32, and int8 unless --no-int8) into MODEL/export-<precision> and measured in
seqattn_runtime the same way. Rows go to benchmarks/results/stopping_<date>.jsonl; a Markdown table is printed.
"""

from __future__ import annotations

import argparse
import datetime
import gzip
import json
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from seqattn.config import load_config  # noqa: E402
from seqattn.data.tokenizer import Tokenizers  # noqa: E402
from seqattn.evaluate import score  # noqa: E402
from seqattn.export import export_model_dir  # noqa: E402
from seqattn.search import Stopping  # noqa: E402
from seqattn.shortlist import build_shortlist  # noqa: E402
from seqattn.translator import SearchOptions, Translator  # noqa: E402


def read(data: Path, lang: str) -> list[str]:
    """Return test2016's lines in lang from data (plain or gzipped)."""
    for path in (data / f"test_2016_flickr.{lang}", data / f"test_2016_flickr.{lang}.gz"):
        if path.exists():
            opener = gzip.open if path.suffix == ".gz" else open
            with opener(path, "rt", encoding="utf-8") as f:
                return f.read().splitlines()
    sys.exit(f"{data}: no test_2016_flickr.{lang} or .{lang}.gz")


def options_of(mode: str, beam: int) -> SearchOptions:
    """Return the search options of a mode: 'greedy', 'exact', 'heuristic' or 'patience:F', each maybe
    followed by '+shortlist'."""
    rule, _, extra = mode.partition("+")
    if rule == "greedy":
        return SearchOptions(beam=1, shortlist=extra == "shortlist")
    name, _, factor = rule.partition(":")
    return SearchOptions(beam=beam, stopping=name, patience=float(factor) if factor else None,
                         shortlist=extra == "shortlist")


def reference_of(mode: str) -> str:
    """Return the mode a mode's outputs are compared with: without the shortlist, or exact."""
    rule = mode.partition("+")[0]
    return rule if mode.endswith("+shortlist") or rule == "greedy" else "exact"


def shortlist_figures(model: Path, shortlist, data: Path, lines: int = 0) -> dict:
    """Return how many target pieces the shortlist gives a batch of 64 test sentences and one sentence (means),
    and the share of the test references' pieces it holds at batch 64."""
    cfg = load_config(model / "config.yaml")
    tok = Tokenizers.load(model)
    src = tok.src.encode(read(data, cfg.data.src_lang)[: lines or None])
    ref = tok.tgt.encode(read(data, cfg.data.tgt_lang)[: lines or None])
    sizes, held, total = [], 0, 0
    for start in range(0, len(src), 64):
        vocab = set(shortlist.vocab(src[start : start + 64]).tolist())
        sizes.append(len(vocab))
        pieces = [t for r in ref[start : start + 64] for t in r]
        held, total = held + sum(t in vocab for t in pieces), total + len(pieces)
    return {"model": str(model), "tgt_vocab": shortlist.tgt_vocab, "pieces_batch64": round(sum(sizes) / len(sizes)),
            "pieces_one": round(sum(len(shortlist.vocab([s])) for s in src) / len(src)),
            "reference_held_batch64_pct": round(100 * held / total, 2)}


class OnnxEngine:
    """An export in seqattn_runtime, translating as `Translator.translate` does (options, batch size)."""

    def __init__(self, export_dir: Path):
        from seqattn_runtime.serve.backend import RuntimeTranslator

        self.rt = RuntimeTranslator(export_dir)

    def translate(self, lines: list[str], batch_size: int, options: SearchOptions) -> list:
        return [n[0] for n in self.rt.runtime.translate_n(
            lines, options.beam, 1, options.alpha, batch_size, stopping=options.stopping_rule(self.rt.stopping),
            shortlist=options.shortlist)]


def timed(tr: Translator | OnnxEngine, src: list[str], options: SearchOptions, batch: int) -> tuple[list, float]:
    """Return (the translations of src, the seconds they took) at batch size batch."""
    start = time.perf_counter()
    if batch == 1:
        out = [tr.translate([line], batch_size=1, options=options)[0] for line in src]
    else:
        out = tr.translate(src, batch_size=batch, options=options)
    return out, time.perf_counter() - start


def measure(model: Path, data: Path, modes: list[str], beam: int, single: int, rounds: int,
            quantize: str | None, lines: int = 0, onnx: bool = False) -> list[dict]:
    """Return one row per rule of one model at one precision, in PyTorch or (onnx) its export in
    seqattn_runtime (on the first `lines` test sentences, 0: all)."""
    cfg = load_config(model / "config.yaml")
    src, ref = read(data, cfg.data.src_lang)[: lines or None], read(data, cfg.data.tgt_lang)[: lines or None]
    if onnx:
        export = model / f"export-{quantize or 'fp32'}"
        export_model_dir(model, export, quantize=quantize, shortlist=any(m.endswith("+shortlist") for m in modes))
        tr = OnnxEngine(export)
    else:
        tr = Translator.load(model, device="cpu", quantize=quantize)
    tr.translate(src[:64], batch_size=64, options=SearchOptions(beam=beam))   # warm-up
    outs, seconds, single_s = {}, {m: float("inf") for m in modes}, {m: float("inf") for m in modes}
    for _ in range(rounds):
        for mode in modes:
            out, s = timed(tr, src, options_of(mode, beam), 64)
            outs[mode], seconds[mode] = out, min(seconds[mode], s)
    for mode in modes:
        _, s = timed(tr, src[:single], options_of(mode, beam), 1)
        single_s[mode] = s
    rows = []
    for mode in modes:
        hyps = [o.text for o in outs[mode]]
        metrics = score(hyps, ref)
        row = {"date": str(datetime.date.today()), "machine": platform.processor() or platform.machine(),
               "model": str(model), "sentences": len(src), "direction": f"{cfg.data.src_lang}-{cfg.data.tgt_lang}",
               "precision": ("onnx " if onnx else "") + (quantize or "fp32"), "rule": mode,
               "beam": options_of(mode, beam).beam,
               "bleu": round(metrics["bleu"], 2), "sents_per_s_b64": round(len(src) / seconds[mode], 1),
               "sents_per_s_single": round(single / single_s[mode], 1)}
        base = outs.get(reference_of(mode))
        if base is not None and mode != reference_of(mode):
            differ = [i for i, (a, b) in enumerate(zip(outs[mode], base)) if a.text != b.text]
            row["reference"] = reference_of(mode)
            row["differ_pct"] = round(100 * len(differ) / len(src), 1)
            row["below_reference"] = sum(outs[mode][i].score < base[i].score - 1e-4 for i in differ)
            row["mean_len_ratio"] = round(sum(len(o.text.split()) for o in outs[mode])
                                          / max(1, sum(len(o.text.split()) for o in base)), 4)
        rows.append(row)
    return rows


def table(rows: list[dict]) -> str:
    """Return rows as a Markdown table."""
    lines = ["| model | precision | mode | test2016 BLEU | outputs differing from the reference | of them scoring "
             "below it | sentences/s, batch 64 | sentences/s, one at a time |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        differ = f"{r['differ_pct']}% ({r['reference']})" if "differ_pct" in r else "-"
        lines.append(f"| {Path(r['model']).name} | {r['precision']} | {r['rule']} | {r['bleu']:.2f} | {differ} | "
                     f"{r.get('below_reference', '-')} | {r['sents_per_s_b64']} | {r['sents_per_s_single']} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=Path, nargs="+", required=True)
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "multi30k")
    ap.add_argument("--modes", default="greedy,greedy+shortlist,exact,exact+shortlist,heuristic,patience:1,patience:2")
    ap.add_argument("--shortlist-k", type=int, default=50)
    ap.add_argument("--shortlist-frequent", type=int, default=100)
    ap.add_argument("--beam", type=int, default=5)
    ap.add_argument("--single", type=int, default=200, help="sentences decoded one at a time")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--no-int8", action="store_true", help="float32 only")
    ap.add_argument("--lines", type=int, default=0, help="the first N test sentences only, to try it out (0: all)")
    ap.add_argument("--onnx", action="store_true", help="also measure each model's export in seqattn_runtime")
    args = ap.parse_args()
    modes = [m for m in args.modes.split(",") if m]
    for mode in modes:   # a rule name that is not one fails here, before any model loads
        if mode != "greedy":
            options_of(mode, args.beam).check().stopping_rule(Stopping())
    rows = []
    for model in args.models:
        if any(m.endswith("+shortlist") for m in modes):
            _, shortlist = build_shortlist(model, k=args.shortlist_k, frequent=args.shortlist_frequent)
            print(json.dumps(shortlist_figures(model, shortlist, args.data, args.lines)), file=sys.stderr)
        for onnx in (False, True) if args.onnx else (False,):
            for quantize in (None,) if args.no_int8 else (None, "int8"):
                got = measure(model, args.data, modes, args.beam, args.single, args.rounds, quantize, args.lines, onnx)
                rows += got
                for r in got:
                    print(json.dumps(r), file=sys.stderr)
    out = ROOT / "benchmarks" / "results" / f"stopping_{datetime.date.today()}.jsonl"
    with out.open("a", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
