"""What each part of seqattn's CPU decoding path is worth, in one process (opt-in, not in CI).

Decodes a source file (test2016: 1,000 sentences) greedy and beam 5 at batch 64 with one loaded model,
the variants interleaved round after round so that all see the same machine, and prints the median
sentences/s of each (the first round, which pays one-time costs, is left out of the median):

- `modules`: no prepared weights (the modules as they are: torch's packed LSTM, addmm, nn.Linear);
- `packed`: the decoder's products from weights packed for oneDNN, its input table;
- `+encoder`: the encoder's input table and both directions in one loop;
- `+context`: W_c's context half applied once per batch to the memory (all of `Seq2Seq.prepare`);
- `+context, batch by batch`: the same, each batch of 64 decoded on its own (no sentences joining).

--threads N runs it all on N threads (default: every core, as seqattn does); --profile then times one
more greedy and beam-5 translate (all of `prepare`) under torch's profiler and prints the share of
their operator time spent in matrix products.

usage: python benchmarks/decode_parts.py --model MODEL_DIR --src test_2016_flickr.de [--rounds 4]
                                         [--threads N] [--profile]
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

import seqattn.translator as translator_module  # noqa: E402
from seqattn.translator import SearchOptions, Translator  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--checkpoint")
    ap.add_argument("--src", type=Path, required=True)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: every core)")
    ap.add_argument("--profile", action="store_true", help="the matrix products' share of decoding time")
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
    full = tr.model.prepare()
    if full.encoder is None or full.decoder.out is None:
        sys.exit("this model or torch build has no packed path to compare (not an LSTM, or no oneDNN)")
    dec = full.decoder
    variants = {
        "modules": (None, translator_module.REFILL_BATCHES),
        "packed": (replace(full, encoder=None, decoder=replace(dec, context=None, combine=None)),
                   translator_module.REFILL_BATCHES),
        "+encoder": (replace(full, decoder=replace(dec, context=None, combine=None)), translator_module.REFILL_BATCHES),
        "+context": (full, translator_module.REFILL_BATCHES),
        "+context, batch by batch": (full, 1),
    }
    rows, real_step = [0, 0], tr.model.decoder.step

    def counted(y, *args, **kwargs):
        rows[0] += 1
        rows[1] += y.numel()
        return real_step(y, *args, **kwargs)

    tr.model.decoder.step = counted
    out = {}
    for beam in (1, 5):
        times: dict[str, list[float]] = {name: [] for name in variants}
        for r in range(a.rounds):
            for name, (prepared, batches) in variants.items():
                tr._prepared = prepared
                tr.model.prepare = lambda p=prepared: p   # what Translator._prepare derives, per variant
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
        tr.model.decoder.step = real_step
        tr._prepared, translator_module.REFILL_BATCHES = variants["+context"]   # all of prepare, as translate runs
        tr.model.prepare = lambda: full
        out["profile"] = {f"beam{beam}": products_share(tr, src, beam) for beam in (1, 5)}
    out["threads"] = torch.get_num_threads()
    print(json.dumps(out, indent=1))
    return 0


PRODUCTS = ("mkldnn::_linear_pointwise", "aten::mm", "aten::addmm", "aten::bmm", "aten::addmm_")


def products_share(tr: Translator, src: list[str], beam: int) -> dict:
    """Return the seconds of one translate of src, and of its profiled operator time (self CPU time) the
    seconds in matrix products (PRODUCTS) and in everything else."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        t = time.perf_counter()
        tr.translate(src, batch_size=64, options=SearchOptions(beam=beam))
        seconds = time.perf_counter() - t
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events) / 1e6
    products = sum(e.self_cpu_time_total for e in events if e.key in PRODUCTS) / 1e6
    return {"seconds_profiled": round(seconds, 3), "products_s": round(products, 3),
            "other_ops_s": round(total - products, 3), "products_share": round(products / total, 3)}


if __name__ == "__main__":
    sys.exit(main())
