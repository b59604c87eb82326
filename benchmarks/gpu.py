"""seqattn on a CUDA GPU, in one call: the CUDA tests, training tokens/s and MFU against the GPU's bf16
matrix rate at the model's shapes, a step profile, and the Multi30k recipe trained and decoded (opt-in).

usage: python benchmarks/gpu.py --data DIR --out OUT [--train-minutes 2.5] [--skip-tests] [--skip-train]

DIR holds Multi30k's {train,val,test_2016_flickr}.{de,en}.gz (as ../shared/data/multi30k does) and,
optionally, spm.model (../shared/peers/prepare.py's joint 8k model, the one the peers' run used). OUT
gets gpu.json (every figure), tests.txt, profile.txt, train_log.jsonl and train.txt; the last lines
printed are a Markdown table for BENCHMARKS.md. Every section runs even when an earlier one failed.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import random
import re
import statistics
import subprocess
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from seqattn import (  # noqa: E402
    bench,
    fast,  # noqa: E402
    train,
)
from seqattn.config import ModelConfig  # noqa: E402
from seqattn.fast import rnn  # noqa: E402

TEST = "test_2016_flickr"
DEVICE = torch.device("cuda")   # --device cpu: a dry run of this script on a machine without a GPU


def environment() -> dict:
    env = {"date": datetime.date.today().isoformat(), "python": platform.python_version(), "torch": torch.__version__,
           "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
           "cpus": len(os.sched_getaffinity(0)), "cpu": platform.processor() or platform.machine()}
    if DEVICE.type == "cuda":
        p = torch.cuda.get_device_properties(0)
        env.update(gpu=p.name, sms=p.multi_processor_count, gpu_memory_gib=round(p.total_memory / 2**30, 1))
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        env["nvidia_smi"] = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,clocks.max.sm,power.limit",
                                            "--format=csv,noheader"], capture_output=True, text=True,
                                           timeout=20).stdout.strip()
    return env


def peak_bf16_tflops(n: int = 8192, reps: int = 20) -> float:
    """Return the bf16 rate of a large square matrix product on random data (TFLOP/s, median of reps)."""
    if DEVICE.type == "cpu":
        n, reps = 1024, 3
    a = torch.randn(n, n, device=DEVICE, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=DEVICE, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    times = []
    for _ in range(reps):
        bench._sync(DEVICE)
        t = time.perf_counter()
        for _ in range(10):
            a @ b
        bench._sync(DEVICE)
        times.append((time.perf_counter() - t) / 10)
    return 2 * n**3 / statistics.median(times) / 1e12


@contextlib.contextmanager
def patched(module, name, value):
    saved = getattr(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, saved)


def bench_variants(seconds: float) -> list[dict]:
    """Return seqattn bench at the peers' matched size for batch sizes and precisions."""
    variants = [("bf16 autocast, RNNs in float32 (default)", 3000, None),
                ("bf16 autocast, RNNs in fp16 (torch's autocast rule)", 3000, "rnn16"),
                ("float32 (torch defaults: TF32 in cuDNN only)", 3000, "fp32"),
                ("bf16 autocast, RNNs in float32 (default)", 24000, None),
                ("bf16 autocast, RNNs in fp16 (torch's autocast rule)", 24000, "rnn16"),
                ("bf16 autocast, RNNs in float32 (default)", 48000, None)]
    out = []
    for name, tokens, mode in variants:
        with contextlib.ExitStack() as stack:
            if mode == "fp32":
                stack.enter_context(patched(train, "autocast", lambda device: contextlib.nullcontext()))
            if mode == "rnn16":
                stack.enter_context(patched(rnn, "RNN_FLOAT32_UNDER_AUTOCAST", False))
            r = bench.run_bench(seconds, ModelConfig(), 8000, 4000, tokens, DEVICE)
        row = {"variant": name, "batch_tokens": tokens, **r.to_dict()}
        print(f"bench {name} @ {tokens}: {r.tokens_per_s:,.0f} tok/s, ceiling {r.ceiling_tokens_per_s:,.0f}, "
              f"GEMM {r.gemm_flops_per_s / 1e12:.1f} TFLOP/s, MFU {100 * r.mfu:.2f}%", flush=True)
        out.append(row)
    return out


def profile(out: Path, steps: int = 20) -> dict:
    """Profile training steps at 3000 tokens (bf16): top kernels and CPU ops to out, GPU busy fraction."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    m = ModelConfig()
    torch.manual_seed(0)
    from seqattn.model.seq2seq import Seq2Seq

    dev = DEVICE
    net = Seq2Seq(m, 8000, 4000).to(dev).train()
    fast.accelerate(net)   # as the trainer runs it
    opt = train.make_optimizer(net, 1e-3)
    batches = bench.synthetic_batches(8000, 8000, 4000, 3000)
    random.Random(0).shuffle(batches)   # sorted by length: take a mix
    batches = batches[: steps + 5]
    t = train.TrainConfig(label_smoothing=0.1)
    for b in batches[:5]:
        train.optimisation_step(net, opt, b, t, dev)
    bench._sync(dev)
    with torch_profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        start = time.perf_counter()
        for b in batches[5:]:
            train.optimisation_step(net, opt, b, t, dev)
        bench._sync(dev)
        wall = time.perf_counter() - start
    events = prof.key_averages()
    attr = "self_device_time_total" if hasattr(events[0], "self_device_time_total") else "self_cuda_time_total"
    if dev.type == "cpu":
        attr = "self_cpu_time_total"
    by_device = events.table(sort_by=attr, row_limit=30)
    # the profiler's own footer: operators and their kernels both carry device time, so summing the
    # rows would count it twice
    label = "CPU" if dev.type == "cpu" else "(?:CUDA|Device)"
    found = re.search(rf"Self {label} time total: ([\d.]+)(us|ms|s)\b", by_device)
    busy_ms = float(found.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[found.group(2)] if found else float("nan")
    kernels = sum(1 for e in prof.events() if str(getattr(e, "device_type", "")).endswith("CUDA"))
    with open(out / "profile.txt", "w") as f:
        f.write(by_device + "\n\n")
        f.write(events.table(sort_by="cpu_time_total", row_limit=30) + "\n")
    n = len(batches) - 5
    return {"steps": n, "wall_ms_per_step": 1e3 * wall / n, "gpu_busy_ms_per_step": busy_ms / n,
            "kernels_per_step": kernels / n}


def train_multi30k(data: Path, out: Path, minutes: float) -> dict:
    """Train examples/multi30k.yaml on the GPU for at most `minutes`; decode test2016 with its best weights."""
    import yaml

    from seqattn.evaluate import score
    from seqattn.translator import SearchOptions, Translator

    work = Path("/tmp/seqattn_gpu")
    cfg = yaml.safe_load((ROOT / "examples" / "multi30k.yaml").read_text())
    cfg["model_dir"] = str(work / "model")
    cfg["data"].update({f"{split}_{side}": str(data / f"{name}.{lang}.gz") for split, name in
                        (("train", "train"), ("valid", "val")) for side, lang in (("src", "de"), ("tgt", "en"))})
    if (data / "spm.model").exists():
        cfg["data"]["spm_model"] = str(data / "spm.model")
    cfg["train"].update(device=DEVICE.type, max_minutes=minutes, tensorboard=False)
    work.mkdir(parents=True, exist_ok=True)
    (work / "config.yaml").write_text(yaml.safe_dump(cfg))
    start = time.perf_counter()
    with open(out / "train.txt", "w") as log:
        rc = subprocess.run([sys.executable, "-m", "seqattn", "train", str(work / "config.yaml"), "--overwrite"],
                            stdout=log, stderr=subprocess.STDOUT, timeout=minutes * 60 + 240).returncode
    result = {"rc": rc, "wall_s": time.perf_counter() - start}
    records = [json.loads(x) for x in (work / "model" / "train_log.jsonl").read_text().splitlines()]
    (out / "train_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    speeds = [r["tokens_per_s"] for r in records if r["kind"] == "train"]
    speeds = speeds[1:] or speeds   # the first window holds the warm-up
    valid = [r for r in records if r["kind"] == "valid"]
    result.update(tokens_per_s=statistics.median(speeds), steps=records[-1]["step"],
                  train_minutes=records[-1].get("minutes"), valid_bleu=[(r["step"], r["bleu"]) for r in valid])
    src = [x.decode() for x in _gunzip(data / f"{TEST}.de.gz")]
    refs = [x.decode() for x in _gunzip(data / f"{TEST}.en.gz")]
    tr = Translator.load(work / "model", device=DEVICE.type)
    tr.translate(src[:128])
    for name, batch, beam in (("greedy", 64, 1), ("beam5", 64, 5), ("greedy_b1000", 1000, 1), ("beam5_b1000", 1000, 5)):
        bench._sync(DEVICE)
        t = time.perf_counter()
        hyps = [o.text for o in tr.translate(src, batch_size=batch, options=SearchOptions(beam=beam))]
        seconds = time.perf_counter() - t
        result[f"{name}_bleu"] = score(hyps, refs)["bleu"]
        result[f"{name}_sents_per_s"] = len(src) / seconds
    one = work / "one.de"
    one.write_text(src[0] + "\n", encoding="utf-8")
    times = []
    for _ in range(3):
        t = time.perf_counter()
        with open(one) as inp:
            subprocess.run([sys.executable, "-m", "seqattn", "translate", str(work / "model")], stdin=inp,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        times.append(time.perf_counter() - t)
    result["startup_s"] = statistics.median(times)
    return result


def _gunzip(path: Path) -> list[bytes]:
    import gzip

    return gzip.decompress(path.read_bytes()).splitlines()


def run_tests(out: Path) -> dict:
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_cuda.py",
                           "-o", "timeout=150"], cwd=ROOT, capture_output=True, text=True, timeout=420)
    (out / "tests.txt").write_text(proc.stdout + proc.stderr)
    return {"rc": proc.returncode, "summary": (proc.stdout.strip().splitlines() or [""])[-1]}


def table(r: dict) -> str:
    env = r.get("env", {})
    lines = [f"{env.get('gpu')} ({env.get('sms')} SMs), torch {env.get('torch')}, CUDA {env.get('cuda')}, "
             f"cuDNN {env.get('cudnn')}, {env.get('cpus')} CPUs; {env.get('date')}",
             f"bf16 8192^3 matrix product: {r.get('peak_bf16_tflops', float('nan')):.0f} TFLOP/s", "",
             "| variant | batch tokens | target tokens/s | GEMM TFLOP/s at model shapes | ceiling tokens/s | MFU |",
             "|---|---|---|---|---|---|"]
    for b in r.get("bench", []):
        lines.append(f"| {b['variant']} | {b['batch_tokens']:,} | {b['tokens_per_s']:,.0f} | "
                     f"{b['gemm_gflops'] / 1e3:.1f} | {b['ceiling_tokens_per_s']:,.0f} | {100 * b['mfu']:.2f}% |")
    if "profile" in r:
        p = r["profile"]
        lines.append(f"\nprofile at 3000 tokens: {p['wall_ms_per_step']:.2f} ms/step wall, GPU busy "
                     f"{p['gpu_busy_ms_per_step']:.2f} ms/step, {p['kernels_per_step']:.0f} kernels/step")
    if "train" in r:
        t = r["train"]
        lines.append(f"\nMulti30k recipe: {t['steps']} steps in {t['train_minutes']:.2f} min, "
                     f"{t['tokens_per_s']:,.0f} tok/s; valid BLEU {t['valid_bleu']}")
        for name in ("greedy", "beam5", "greedy_b1000", "beam5_b1000"):
            lines.append(f"test2016 {name}: BLEU {t[f'{name}_bleu']:.2f}, {t[f'{name}_sents_per_s']:,.0f} sent/s")
        lines.append(f"translate start-up {t['startup_s']:.2f} s")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--train-minutes", type=float, default=2.5)
    ap.add_argument("--bench-seconds", type=float, default=5.0)
    ap.add_argument("--skip-tests", action="store_true")
    ap.add_argument("--skip-train", action="store_true")
    ap.add_argument("--device", default="cuda", help="cpu: a quick dry run of the script itself")
    a = ap.parse_args()
    global DEVICE
    DEVICE = torch.device(a.device)
    if DEVICE.type == "cuda" and not torch.cuda.is_available():
        print("gpu.py: no CUDA GPU visible to torch", file=sys.stderr)
        return 2
    a.out.mkdir(parents=True, exist_ok=True)
    results: dict = {"env": environment()}
    print(json.dumps(results["env"]), flush=True)
    sections = [("tests", lambda: None if a.skip_tests else run_tests(a.out)),
                ("peak_bf16_tflops", peak_bf16_tflops),
                ("bench", lambda: bench_variants(a.bench_seconds)),
                ("profile", lambda: profile(a.out)),
                ("train", lambda: None if a.skip_train else train_multi30k(a.data, a.out, a.train_minutes))]
    for name, fn in sections:
        t = time.perf_counter()
        try:
            value = fn()
            if value is not None:
                results[name] = value
        except Exception:   # keep going: one call of a lent machine should bring back every figure it can
            results[f"{name}_error"] = traceback.format_exc()
            print(results[f"{name}_error"], file=sys.stderr, flush=True)
        print(f"[{name}: {time.perf_counter() - t:.0f} s] {json.dumps(results.get(name))[:400]}", flush=True)
        (a.out / "gpu.json").write_text(json.dumps(results, indent=1))
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
