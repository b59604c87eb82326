"""What each part of seqattn's CPU decoding path is worth, in one process (opt-in, not in CI).

Decodes a source file (test2016: 1,000 sentences) greedy and beam 5 at batch 64 with one loaded model,
the variants interleaved round after round so that all see the same machine, and prints the median
sentences/s of each (the first round, which pays one-time costs, is left out of the median):

- `modules`: the plain model's `encode` and `step` (torch's packed LSTM, nn.LSTM on one step, nn.Linear);
- `packed`: `fast.Decoding`'s decoder step: its input table, cells and products packed for oneDNN;
- `+encoder`: the encoder's input table and both directions in one loop;
- `+context`: W_c's context half applied once per batch to the memory (all of `fast.Decoding`);
- `+context, batch by batch`: the same, each batch of 64 decoded on its own (no sentences joining).

--threads N runs it all on N threads (default: every core, as seqattn does); --profile then times one
more greedy and beam-5 translate (all of `fast.Decoding`) under torch's profiler and prints how their
operator time divides: matrix products (PRODUCTS), the arithmetic any decoder of this model computes
(ARITHMETIC: the cells' gates, tanh, the softmaxes and log-normaliser, the argmax / top-k) and lookups
(LOOKUPS: input-table rows, beam reordering), and the rest (the batch's bookkeeping). Those three bound how
much faster decoding could get: the translate's seconds over theirs, were the rest and all Python free
(mul, sub and sum count as arithmetic whole, though the search's bookkeeping uses a few of them too).

usage: python benchmarks/decode_parts.py --model MODEL_DIR --src test_2016_flickr.de [--rounds 4]
                                         [--threads N] [--profile]
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

import seqattn.translator as translator_module  # noqa: E402
from seqattn.fast import Decoding  # noqa: E402
from seqattn.translator import SearchOptions, Translator  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--checkpoint")
    ap.add_argument("--src", type=Path, required=True)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: every core)")
    ap.add_argument("--profile", action="store_true", help="how decoding's operator time divides")
    a = ap.parse_args()
    if a.threads < 0:
        sys.exit(f"--threads must be 0 (every core) or more, got {a.threads}")
    if not a.model.is_dir() or not a.src.is_file():
        sys.exit(f"--model needs a model directory ({a.model}) and --src a source file ({a.src})")
    tr = Translator.load(a.model, device="cpu", checkpoint=a.checkpoint)
    if a.threads:
        torch.set_num_threads(a.threads)
    gc.freeze()
    src = a.src.read_text(encoding="utf-8").splitlines()
    full = Decoding(tr.model)
    if "encoder_tables" not in full.paths or "packed_out" not in full.paths:
        sys.exit("this model or torch build has no packed path to compare (not an LSTM, or no oneDNN)")

    def without(*parts: str) -> Decoding:
        d = copy.copy(full)
        for part in parts:
            setattr(d, part, None)
        return d

    variants = {
        "modules": (tr.model, translator_module.REFILL_BATCHES),
        "packed": (without("encoder", "context", "combine"), translator_module.REFILL_BATCHES),
        "+encoder": (without("context", "combine"), translator_module.REFILL_BATCHES),
        "+context": (full, translator_module.REFILL_BATCHES),
        "+context, batch by batch": (full, 1),
    }
    rows = [0, 0]

    def counted(steps):
        real = steps.step

        def step(y, *args, **kwargs):
            rows[0] += 1
            rows[1] += y.numel()
            return real(y, *args, **kwargs)
        return step

    out = {}
    for beam in (1, 5):
        times: dict[str, list[float]] = {name: [] for name in variants}
        for r in range(a.rounds):
            for name, (steps, batches) in variants.items():
                counting = copy.copy(steps)
                counting.step = counted(steps)
                tr._decoding = lambda s=counting: s   # what the Translator decodes with, per variant
                translator_module.REFILL_BATCHES = batches
                rows[:] = [0, 0]
                t = time.perf_counter()
                tr.translate(src, batch_size=64, options=SearchOptions(beam=beam))
                times[name].append(time.perf_counter() - t)
                if r == 0:
                    out[f"beam{beam}/{name}/steps_rows"] = list(rows)
        for name, ts in times.items():
            out[f"beam{beam}/{name}"] = {"sents_per_s": round(len(src) / statistics.median(ts[1:] or ts)),
                                         "all": [round(len(src) / t) for t in ts]}
    if a.profile:
        tr._decoding, translator_module.REFILL_BATCHES = (lambda: full), variants["+context"][1]   # as translate runs
        out["profile"] = {f"beam{beam}": time_shares(tr, src, beam) for beam in (1, 5)}
    out["threads"] = torch.get_num_threads()
    print(json.dumps(out, indent=1))
    return 0


PRODUCTS = ("mkldnn::_linear_pointwise", "aten::mm", "aten::addmm", "aten::bmm", "aten::addmm_")
ARITHMETIC = ("aten::tanh", "aten::tanh_", "aten::sigmoid", "aten::sigmoid_", "aten::addcmul", "aten::mul",
              "aten::exp", "aten::exp_", "aten::log_", "aten::sub", "aten::sub_", "aten::sum", "aten::_softmax",
              "aten::_log_softmax", "aten::amax", "aten::max", "aten::argmax", "aten::topk")
LOOKUPS = ("aten::index_select", "aten::gather")


def time_shares(tr: Translator, src: list[str], beam: int) -> dict:
    """Return the seconds of one translate of src, and how its profiled operator time (self CPU time) divides:
    seconds and share in PRODUCTS, ARITHMETIC, LOOKUPS and the rest; `bound`: the translate's seconds over the
    first three's (how much faster it could be with the rest and all Python free; the seconds include the
    profiler's own cost, so the bound errs high)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        t = time.perf_counter()
        tr.translate(src, batch_size=64, options=SearchOptions(beam=beam))
        seconds = time.perf_counter() - t
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events) / 1e6
    out = {"seconds_profiled": round(seconds, 3), "operators_s": round(total, 3)}
    for name, ops in (("products", PRODUCTS), ("arithmetic", ARITHMETIC), ("lookups", LOOKUPS)):
        part = sum(e.self_cpu_time_total for e in events if e.key in ops) / 1e6
        out[f"{name}_s"], out[f"{name}_share"] = round(part, 3), round(part / total, 3)
    out["rest_share"] = round(1 - out["products_share"] - out["arithmetic_share"] - out["lookups_share"], 3)
    out["bound"] = round(seconds / (out["products_s"] + out["arithmetic_s"] + out["lookups_s"]), 2)
    return out


if __name__ == "__main__":
    sys.exit(main())
