"""The `seqattn-runtime` command: translate with an export, without PyTorch."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from .errors import SeqattnError
from .serve import add_arguments as add_serve_arguments

NL = b"\n"


def _lines(path: str | None) -> list[str]:
    """Return the lines of path (.gz allowed) or of stdin; invalid UTF-8 names its line."""
    import gzip

    name = path or "<stdin>"
    try:
        data = (gzip.open(path).read() if path.endswith(".gz") else Path(path).read_bytes()) if path else \
            sys.stdin.buffer.read()
    except FileNotFoundError:
        raise SystemExit(f"seqattn-runtime: error: {name}: file not found") from None
    try:
        return data.decode("utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise SystemExit(f"seqattn-runtime: error: {name}:{data.count(NL, 0, e.start) + 1}: invalid UTF-8") from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="seqattn-runtime", description="Translate with a seqattn export (ONNX Runtime, "
                                                                     "no PyTorch).")
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("translate", help="translate stdin or --input")
    t.add_argument("export_dir", help="a directory written by `seqattn export`")
    t.add_argument("--input", "-i", help="input file (.txt or .gz); default stdin")
    t.add_argument("--beam", type=int, default=1)
    t.add_argument("--nbest", type=int, default=1, help="print the N best per input (<= --beam)")
    t.add_argument("--alpha", type=float, default=1.0, help="length penalty exponent (beam search)")
    t.add_argument("--batch-size", type=int, default=64)
    t.add_argument("--threads", type=int, default=0, help="ONNX Runtime's threads (0: its default)")
    t.add_argument("--attention", metavar="FILE.json", help="write tokens and attention matrices as JSON")
    t.add_argument("--sample", action="store_true", help="sample instead of searching")
    t.add_argument("--temperature", type=float, default=1.0)
    t.add_argument("--top-k", type=int, default=0, help="sample from the k most likely tokens (0: all)")
    t.add_argument("--top-p", type=float, default=1.0, help="sample from the smallest set with this mass")
    t.add_argument("--seed", type=int, default=None, help="seed for reproducible sampling (seqattn's draws)")
    t.add_argument("--num-samples", type=int, default=1, help="samples per input (with --sample)")
    t.add_argument("--coverage-penalty", type=float, default=0.0, metavar="BETA", help="GNMT coverage penalty "
                   "for beam search (0: off); the exact stopping bound stays exact")
    t.add_argument("--stopping", metavar="MODE", help="when beam search ends a sentence: exact, heuristic or "
                   "patience (`seqattn translate --help` says how each decides); default: the export's")
    t.add_argument("--patience", type=float, default=None, help="with --stopping patience: the factor "
                   "(default: the export's)")
    t.add_argument("--shortlist", action="store_true", help="score only the target pieces the batch's source "
                   "pieces may bring (an export made with `seqattn export --shortlist`)")
    t.add_argument("--prefix", metavar="FILE", help="target prefixes, one per input line (empty: none), forced")
    t.add_argument("--align", action="store_true", help="append a TAB and each output's word alignment from the "
                   "attention (Pharaoh i-j)")
    t.add_argument("--align-threshold", type=float, metavar="W", help="also align to every source word whose "
                   "attention reaches W (implies --align)")
    t.set_defaults(func=translate)
    sv = sub.add_parser("serve", help="the HTTP API and attention page of `seqattn serve`, over the export")
    sv.add_argument("export_dir", help="a directory written by `seqattn export`")
    sv.add_argument("--threads", type=int, default=0, help="ONNX Runtime's threads (0: its default)")
    add_serve_arguments(sv)
    sv.set_defaults(func=serve)
    return p


def translate(args) -> int:
    from .align import pharaoh
    from .options import SearchOptions
    from .search import Sampling
    from .translator import Runtime

    options = SearchOptions(beam=args.beam, nbest=args.nbest, alpha=args.alpha, sample=args.sample,
                            temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                            num_samples=args.num_samples, seed=args.seed, coverage_penalty=args.coverage_penalty,
                            stopping=args.stopping, patience=args.patience, shortlist=args.shortlist).check()
    runtime = Runtime(args.export_dir, threads=args.threads)
    stopping = options.stopping_rule(runtime.stopping)
    if args.shortlist and runtime.shortlist is None:
        raise SeqattnError(f"--shortlist: {args.export_dir} has no shortlist (export it with "
                           "`seqattn export --shortlist`)")
    lines = _lines(args.input)
    prefixes = None if args.prefix is None else _lines(args.prefix)
    if prefixes is not None and len(prefixes) != len(lines):
        raise SystemExit(f"seqattn-runtime: error: {args.prefix}: {len(prefixes)} prefixes for {len(lines)} input "
                         "lines (one per line, empty for none)")
    align = args.align or args.align_threshold is not None
    sampling = Sampling(args.temperature, args.top_k, args.top_p, args.seed) if args.sample else None
    results = runtime.translate_n(lines, args.beam, args.nbest, args.alpha, args.batch_size,
                                  bool(args.attention) or align, sampling, args.num_samples, prefixes,
                                  args.coverage_penalty, stopping=stopping, shortlist=args.shortlist)
    for n, outs in enumerate(results, 1):
        if outs and outs[0].truncated:
            print(f"seqattn-runtime: warning: input line {n} is longer than the model's {runtime.meta['max_len']} "
                  f"pieces; translated its beginning only", file=sys.stderr)
    out = sys.stdout
    for n, outs in enumerate(results):
        for r in outs:
            several = args.nbest > 1 or (args.sample and args.num_samples > 1)
            tail = f"\t{pharaoh(r.src_tokens, r.tgt_tokens, r.attention, args.align_threshold)}" if align else ""
            out.write((f"{n}\t{r.score:.4f}\t{r.text}" if several else r.text) + tail + "\n")
    out.flush()
    if args.attention:
        records = [{"source": src, **r.to_dict()} for src, outs in zip(lines, results) for r in outs]
        tmp = Path(f"{args.attention}.tmp{os.getpid()}")
        tmp.write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
        tmp.replace(args.attention)
    return 0


def serve(args) -> int:
    from .serve.backend import RuntimeTranslator

    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as e:
        raise SeqattnError(f"serve needs {e.name}: pip install './seqattn_runtime[serve]'") from None
    from .serve import serve as run

    run(RuntimeTranslator(args.export_dir, threads=args.threads), args, "seqattn-runtime")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except SeqattnError as e:   # a missing or broken export, an option out of range
        print(f"seqattn-runtime: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 1


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
