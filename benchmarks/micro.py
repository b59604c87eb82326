"""The microbenchmarks behind BENCHMARKS.md's explanations (opt-in, not in CI), each torch's way against
seqattn's on the CPU, medians of repeated calls in one process:

- dropout of a 3,000 x 512 tensor, forward + backward: torch's mask (`rand_like(x) >= p`, two products)
  against `seqattn.fast.dropout.cpu_dropout`;
- padding a packed encoder memory (140 sentences, 512 features), forward + backward:
  `pad_packed_sequence` against `seqattn.fast.rnn.pad_packed`;
- a packed bidirectional LSTM (256 -> 256 x 2) over the same batch, forward + backward: nn.LSTM's own
  packed path against `seqattn.fast.rnn.packed_rnn`;
- the GEMM rate at the output layer's shape (rows x 512 x 3,963) for 64 and 320 rows, float32 and bf16
  (whether bf16 decoding could pay on this CPU);
- a decoding step's three products (output layer 512 -> 3,963, W_c 1,024 -> 512, the LSTM's W_hh
  512 -> 2,048) at 7, 33, 64 and 320 rows: torch's addmm against `seqattn.fast.onednn.PackedLinear`;
- with --model: decoder rows, steps and their matrix-product GFLOP when decoding test2016 greedy and beam 5;
- with --pieces DIR (train.sp.de / train.sp.en, SentencePiece pieces separated by spaces): the packed
  bidirectional LSTM's forward + backward over every training batch of 3,000 target tokens (the training
  batching, random rows), the loop alone against the loop after torch's fused LSTM for the leading steps
  (`seqattn.fast.rnn.FUSED_MIN_STEPS`), alternating, three rounds;
- with --profile-steps N: where N training steps of the Multi30k-sized model spend their time (torch
  profiler, synthetic Multi30k-shaped batches of 3,000 target tokens, after 5 warm-up steps).

usage: python benchmarks/micro.py [--model MODEL_DIR --src test_2016_flickr.de] [--pieces PEERS/work]
                                  [--profile-steps 10]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from seqattn.fast.dropout import cpu_dropout  # noqa: E402
from seqattn.fast.onednn import pack  # noqa: E402
from seqattn.fast.rnn import packed_rnn, pad_packed  # noqa: E402


def ms(fn, reps: int = 30) -> float:
    """Return the median milliseconds of fn() over reps calls, after 3 warm-up calls."""
    for _ in range(3):
        fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1e3 * statistics.median(times)


def packed_batch(batch: int = 140, longest: int = 32, features: int = 256, seed: int = 0):
    """Return a packed batch of random rows, lengths about 16 +- 5 (batch x longest x features)."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.clamp((torch.randn(batch, generator=g) * 5 + 16).round().long(), 3, longest)
    lengths[0] = longest
    return pack_padded_sequence(torch.randn(batch, longest, features, generator=g), lengths, batch_first=True,
                                enforce_sorted=False)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path)
    ap.add_argument("--src", type=Path)
    ap.add_argument("--pieces", type=Path)
    ap.add_argument("--profile-steps", type=int, default=0)
    a = ap.parse_args()
    if a.model and (a.src is None or not a.src.is_file() or not a.model.is_dir()):
        sys.exit(f"--model needs a model directory ({a.model}) and --src a source file to decode ({a.src})")
    pieces = [] if a.pieces is None else [a.pieces / f"train.sp.{x}" for x in ("de", "en")]
    if any(not f.is_file() for f in pieces):
        sys.exit(f"--pieces needs train.sp.de and train.sp.en in {a.pieces}")
    torch.manual_seed(0)
    res: dict = {"threads": torch.get_num_threads()}

    x = torch.randn(3000, 512, requires_grad=True)
    grad = torch.randn(3000, 512)
    torch_drop = lambda: (x * (torch.rand_like(x) >= 0.2) * 1.25).backward(grad)
    res["dropout_ms"] = {"torch": ms(torch_drop), "seqattn": ms(lambda: cpu_dropout(x, 0.2).backward(grad))}

    mem = packed_batch(features=512)
    data = mem.data.clone().requires_grad_()
    grad = torch.randn(140, 32, 512)
    res["pad_memory_ms"] = {
        "torch": ms(lambda: pad_packed_sequence(mem._replace(data=data), batch_first=True, total_length=32)[0]
                    .backward(grad)),
        "seqattn": ms(lambda: pad_packed(mem._replace(data=data), 32).backward(grad))}

    lstm = torch.nn.LSTM(256, 256, batch_first=True, bidirectional=True)
    inp = packed_batch()

    def run(fn):
        out, (h, c) = fn(inp)
        (out.data.sum() + h.sum() + c.sum()).backward()

    res["encoder_lstm_ms"] = {"torch": ms(lambda: run(lstm), 10), "seqattn": ms(lambda: run(
        lambda p: packed_rnn(lstm, p)), 10)}

    res["output_gemm_gflops"], res["output_gemm_gflops_bf16"] = {}, {}
    for key, dtype in (("output_gemm_gflops", torch.float32), ("output_gemm_gflops_bf16", torch.bfloat16)):
        w = torch.randn(3963, 512).to(dtype)
        for rows in (64, 320):
            h = torch.randn(rows, 512).to(dtype)
            res[key][rows] = 2 * rows * 512 * 3963 / ms(lambda h=h, w=w: torch.nn.functional.linear(h, w), 100) / 1e6
    res["decoding_gemm_ms"] = {}
    for name, (n_in, n_out) in {"output": (512, 3963), "combine": (1024, 512), "lstm_hh": (512, 2048)}.items():
        w, b = torch.randn(n_out, n_in) * 0.05, torch.randn(n_out)
        packed = pack(w, b)
        for rows in (7, 33, 64, 320):
            h = torch.randn(rows, n_in)
            res["decoding_gemm_ms"][f"{name} {rows} rows"] = {
                "addmm": ms(lambda h=h, w=w, b=b: torch.addmm(b, h, w.t()), 100),
                "packed": None if packed is None else ms(lambda h=h, p=packed: p(h), 100)}
    if pieces:
        res["encoder_training_batches_s"] = encoder_over_batches(lstm, *pieces)
    if a.model:
        from seqattn.errors import SeqattnError

        try:
            res["decode"] = decode_rows(a.model, a.src)
        except SeqattnError as e:
            sys.exit(str(e))
    print(json.dumps(res, indent=1))
    if a.profile_steps > 0:
        print(profile_training(a.profile_steps))
    return 0


def encoder_over_batches(lstm: torch.nn.LSTM, src_file: Path, tgt_file: Path, rounds: int = 3) -> dict:
    """Return the seconds of lstm's forward + backward (packed, `packed_rnn`) over every training batch of
    3,000 target tokens of the pieces files (random rows of the batches' source lengths, <eos> included):
    each round the loop alone, then with torch's fused LSTM for the leading steps."""
    from seqattn.data.batching import token_batches
    from seqattn.fast import rnn as rnn_module

    lengths = [[len(line.split()) for line in f.read_text(encoding="utf-8").splitlines()] for f in (src_file, tgt_file)]
    g = torch.Generator().manual_seed(0)
    batches = []
    for index in token_batches(*lengths, 3000):
        src_len = torch.tensor([lengths[0][i] + 1 for i in index])
        x = torch.randn(len(index), int(src_len.max()), lstm.input_size, generator=g)
        p = pack_padded_sequence(x, src_len, batch_first=True, enforce_sorted=False)
        batches.append(p._replace(data=p.data.requires_grad_()))
    default, res = rnn_module.FUSED_MIN_STEPS, {"batches": len(batches), "loop": [], "fused head": []}
    try:
        for _ in range(rounds):
            for key, fused_min in (("loop", 10**9), ("fused head", default)):
                rnn_module.FUSED_MIN_STEPS = fused_min
                t = time.perf_counter()
                for p in batches:
                    out, (h, c) = packed_rnn(lstm, p)
                    (out.data.sum() + h.sum() + c.sum()).backward()
                res[key].append(round(time.perf_counter() - t, 2))
    finally:
        rnn_module.FUSED_MIN_STEPS = default
    return res


def profile_training(steps: int) -> str:
    """Return the torch profiler's table (self CPU time) of `steps` training steps of the Multi30k-sized
    model (dropout 0.2, 8,000 source / 3,963 target pieces) on synthetic batches of 3,000 target tokens."""
    from torch.profiler import ProfilerActivity, profile

    from seqattn.bench import synthetic_batches
    from seqattn.config import ModelConfig, TrainConfig
    from seqattn.fast import accelerate
    from seqattn.model.seq2seq import Seq2Seq
    from seqattn.train import make_optimizer, optimisation_step

    net = Seq2Seq(ModelConfig(dropout=0.2), 8000, 3963).train()
    accelerate(net)   # as the trainer runs it
    optimizer, t, cpu = make_optimizer(net, 1e-3), TrainConfig(), torch.device("cpu")
    batches = synthetic_batches(300 * (steps + 5), 8000, 3963, 3000)
    for batch in batches[:5]:
        optimisation_step(net, optimizer, batch, t, cpu)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for batch in batches[5:5 + steps]:
            optimisation_step(net, optimizer, batch, t, cpu)
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25)


def decode_rows(model_dir: Path, src_file: Path) -> dict:
    """Return, for greedy and beam 5 over src_file (batch 64), the decoder rows computed, the steps and
    the GFLOP of the decoding matrix products: per row the LSTM's hidden part, W_c's state half and the
    output layer (the input projection is a table lookup), per encoded source position W_c's context half
    (applied to the memory once per batch, `Decoder.project_memory`)."""
    from seqattn.translator import SearchOptions, Translator

    tr = Translator.load(model_dir, device="cpu")
    dec, m = tr.model.decoder, tr.cfg.model
    src = src_file.read_text(encoding="utf-8").splitlines()
    real_step, real_encode, count = dec.step, tr.model.encode, [0, 0, 0]

    def step(y, *args, **kwargs):
        count[0] += y.numel()
        count[1] += 1
        return real_step(y, *args, **kwargs)

    def encode(src_ids, *args, **kwargs):
        count[2] += src_ids.numel()
        return real_encode(src_ids, *args, **kwargs)

    dec.step, tr.model.encode = step, encode
    hid, mem = m.dec_hidden_size, m.enc_hidden_size * (2 if m.bidirectional else 1)
    per_row = 2 * (hid * 4 * hid + hid * hid + hid * dec.out.out_features)
    out = {}
    for beam in (1, 5):
        count[:] = [0, 0, 0]
        tr.translate(src, batch_size=64, options=SearchOptions(beam=beam))
        out[f"beam{beam}"] = {"rows": count[0], "steps": count[1], "source_positions": count[2],
                              "gemm_gflop": (count[0] * per_row + count[2] * 2 * mem * hid) / 1e9}
    return out


if __name__ == "__main__":
    sys.exit(main())
