"""PyTorch against the ONNX export (seqattn_runtime) on one machine, in one run (opt-in, not in CI).

usage: python benchmarks/runtime.py --model MODEL_DIR [--export DIR] [--data ../shared/data/multi30k]
                                    [--rounds 2] [--sizes]
Exports MODEL_DIR (unless --export already holds one), then, each engine in its own process and the
two alternating for --rounds rounds: test2016 batch-64 sentences/s (greedy, beam 5), single-sentence
latency (greedy, median and p99 over 200 sentences one at a time), load time, peak RSS; parity (share of
identical outputs, BLEU of each); start-up of `seqattn translate` and `seqattn-runtime translate` to
their first output (median of 5). --sizes also builds two virtual environments under /tmp, one with the
runtime's dependencies only, one with torch and seqattn's, and reports their installed sizes.
Prints JSON lines and a Markdown table.
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r'''
import gzip, json, resource, sys, time
engine, where, src_path = sys.argv[1], sys.argv[2], sys.argv[3]
start = time.perf_counter()
if engine == "onnx":
    from seqattn_runtime import Runtime
    rt = Runtime(where)
    run = lambda lines, beam: rt.translate(lines, beam=beam, batch_size=64)
else:
    from seqattn.translator import SearchOptions, Translator
    from seqattn.device import freeze_loaded_objects
    tr = Translator.load(where, device="cpu")
    freeze_loaded_objects()
    run = lambda lines, beam: tr.translate(lines, batch_size=64, options=SearchOptions(beam=beam))
load = time.perf_counter() - start
src = gzip.open(src_path, "rt", encoding="utf-8").read().splitlines()
res = {"engine": engine, "load_s": load}
for beam in (1, 5):
    run(src[:64], beam)
    t = time.perf_counter()
    out = run(src, beam)
    res[f"beam{beam}_sents_per_s"] = len(src) / (time.perf_counter() - t)
    res[f"beam{beam}_outputs"] = [o.text for o in out]
lat = []
for line in src[:200]:
    t = time.perf_counter()
    run([line], 1)
    lat.append(time.perf_counter() - t)
lat.sort()
res["latency_median_ms"] = 1000 * lat[len(lat) // 2]
res["latency_p99_ms"] = 1000 * lat[min(len(lat) - 1, int(0.99 * len(lat)))]
res["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(res))
'''


def startup(cmd: list[str], text: str, runs: int = 5) -> float:
    """Return the median wall seconds of cmd translating text (process start to exit after its output)."""
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run(cmd, input=text, capture_output=True, text=True, check=True)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def venv_size(name: str, installs: list[list[str]]) -> float:
    """Build a fresh virtual environment under /tmp, run the pip installs, return its size in MB."""
    where = Path("/tmp") / name
    subprocess.run(["rm", "-rf", str(where)], check=True)
    subprocess.run([sys.executable, "-m", "venv", str(where)], check=True)
    for args in installs:
        subprocess.run([str(where / "bin" / "pip"), "install", "-q", *args], check=True)
    out = subprocess.run(["du", "-sm", str(where)], capture_output=True, text=True, check=True).stdout
    return float(out.split()[0])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--export", help="an export of --model (default: exported into MODEL/../export)")
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "multi30k"))
    ap.add_argument("--src", default="de")
    ap.add_argument("--tgt", default="en")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--sizes", action="store_true", help="also measure the two installed sizes")
    args = ap.parse_args()
    import sacrebleu

    export = Path(args.export or Path(args.model).resolve().parent / "export")
    if not (export / "seqattn.json").exists():
        subprocess.run([sys.executable, "-m", "seqattn", "export", args.model, "--out", str(export)], check=True)
    src_path = f"{args.data}/test_2016_flickr.{args.src}.gz"
    import gzip

    ref = gzip.open(f"{args.data}/test_2016_flickr.{args.tgt}.gz", "rt", encoding="utf-8").read().splitlines()
    runs: dict[str, list[dict]] = {"pytorch": [], "onnx": []}
    for _ in range(args.rounds):
        for engine, where in (("pytorch", args.model), ("onnx", str(export))):
            out = subprocess.run([sys.executable, "-c", CHILD, engine, where, src_path], capture_output=True,
                                 text=True, check=True).stdout
            res = json.loads(out.strip().splitlines()[-1])
            runs[engine].append(res)
            print(json.dumps({k: v for k, v in res.items() if not k.endswith("_outputs")}), flush=True)
    best = {e: {k: statistics.median(r[k] for r in rs) for k in rs[0] if not k.endswith("_outputs")
                and k != "engine"} for e, rs in runs.items()}
    parity = {}
    for beam in (1, 5):
        a, b = runs["pytorch"][0][f"beam{beam}_outputs"], runs["onnx"][0][f"beam{beam}_outputs"]
        parity[beam] = {"identical": 100 * sum(x == y for x, y in zip(a, b)) / len(a),
                        "bleu_pytorch": sacrebleu.corpus_bleu(a, [ref]).score,
                        "bleu_onnx": sacrebleu.corpus_bleu(b, [ref]).score}
    print(json.dumps({"parity": parity}))
    line = "ein Hund läuft durch das Gras .\n"
    bin_dir = Path(sys.executable).parent
    start = {"pytorch": startup([str(bin_dir / "seqattn"), "translate", args.model], line),
             "onnx": startup([str(bin_dir / "seqattn-runtime"), "translate", str(export)], line)}
    print(json.dumps({"startup_s": start}))
    sizes = {}
    if args.sizes:
        sizes = {"onnx": venv_size("seqattn-venv-runtime", [[str(ROOT / "seqattn_runtime")]]),
                 "pytorch": venv_size("seqattn-venv-torch", [["torch==2.13.0"], [str(ROOT)]])}
        print(json.dumps({"venv_mb": sizes}))
    print(f"\n{datetime.date.today()}, test2016 {args.src}->{args.tgt}, {args.rounds} rounds (medians)\n")
    print("| | PyTorch (seqattn translate) | ONNX Runtime (seqattn-runtime) | ratio |")
    print("|---|---|---|---|")
    rows = [("batch 64, greedy, sentences/s", "beam1_sents_per_s", True),
            ("batch 64, beam 5, sentences/s", "beam5_sents_per_s", True),
            ("one sentence at a time, greedy, median ms", "latency_median_ms", False),
            ("one sentence at a time, greedy, p99 ms", "latency_p99_ms", False),
            ("model load, s", "load_s", False), ("peak RSS, MB", "peak_rss_mb", False)]
    for name, key, higher in rows:
        p, o = best["pytorch"][key], best["onnx"][key]
        print(f"| {name} | {p:.1f} | {o:.1f} | {o / p if higher else p / o:.2f}x |")
    print(f"| start-up to first output, s | {start['pytorch']:.2f} | {start['onnx']:.2f} | "
          f"{start['pytorch'] / start['onnx']:.2f}x |")
    if sizes:
        print(f"| installed virtual environment, MB | {sizes['pytorch']:.0f} | {sizes['onnx']:.0f} | "
              f"{sizes['pytorch'] / sizes['onnx']:.1f}x |")
    for beam, p in parity.items():
        print(f"| beam {beam}: identical outputs / BLEU | {p['bleu_pytorch']:.2f} | {p['bleu_onnx']:.2f} | "
              f"{p['identical']:.1f}% identical |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
