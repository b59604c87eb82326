"""Training throughput against this machine's limit: FLOPs per target token, GEMM ceiling, MFU.

The model's FLOPs are counted from its shapes (matrix products only: forward, and twice that for
backward). The ceiling is the rate of this machine's matrix products at exactly the shapes one
training batch runs (forward and backward, measured on all cores), so MFU = achieved FLOP/s / that
rate says how much of the step is spent outside efficient GEMMs (padding, element-wise work, the
optimizer, Python).
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field

import torch

from .config import ModelConfig, TrainConfig
from .data.batching import Batch, collate, token_batches


@dataclass
class BatchShape:
    """The sizes of one batch that its FLOPs depend on (real tokens, padding excluded)."""

    sentences: int
    src_tokens: int          # <eos> included
    tgt_tokens: int          # <eos> included: the decoder's steps
    attn_pairs: int          # sum over sentences of src_len x tgt_len

    @classmethod
    def of(cls, batch: Batch) -> BatchShape:
        """Return the shape of a padded batch."""
        src_len = batch.src_len.to(torch.long)
        tgt_len = (batch.tgt_out != 0).sum(1).cpu()
        return cls(len(src_len), int(src_len.sum()), int(tgt_len.sum()), int((src_len * tgt_len).sum()))


def _gemms(m: ModelConfig, tgt_vocab: int, shape: BatchShape) -> list[tuple[float, float, float, float]]:
    """Return the forward matrix products of a batch as (rows, inner, cols, times); cols may be an average."""
    gates = 4 if m.rnn == "lstm" else 3
    dirs = 2 if m.bidirectional else 1
    b, s, t = shape.sentences, shape.src_tokens, shape.tgt_tokens
    mem, hd = m.enc_hidden_size * dirs, m.dec_hidden_size
    out: list[tuple[float, float, float, float]] = []
    size = m.emb_size
    for _ in range(m.layers):   # input projections for all steps at once; recurrent ones step by step
        out += [(s, size, gates * m.enc_hidden_size, dirs), (b, m.enc_hidden_size, gates * m.enc_hidden_size,
                                                              dirs * s / b)]
        size = mem
    size = m.emb_size + (hd if m.input_feeding else 0)
    for _ in range(m.layers):
        out += [(t, size, gates * hd, 1), (b, hd, gates * hd, t / b)]
        size = hd
    if mem != hd:                                      # bridge of the context vector
        out.append((b, mem, hd, m.layers * (2 if m.rnn == "lstm" else 1)))
    if m.attention != "none":
        if m.attention in ("general", "concat"):
            out.append((s, mem, hd, 1))                # keys W_a h_i / W_k h_i
        if m.attention == "concat":
            out.append((t, hd, hd, 1))                 # W_q s_t
        per_t = shape.attn_pairs / max(t, 1)          # source positions each target step attends over
        out += [(t, hd, per_t, 1), (t, per_t, mem, 1)]  # scores e_t,i, then a_t = sum_i alpha_t,i h_i
        out.append((t, mem + hd, hd, 1))               # W_c [a_t; s_t]
    out.append((t, hd, tgt_vocab, 1))                  # W_y
    return out


def train_flops(m: ModelConfig, tgt_vocab: int, shape: BatchShape) -> float:
    """Return the FLOPs of one training step on a batch of this shape: 3 x the forward matrix products."""
    return 3.0 * sum(2.0 * r * k * c * n for r, k, c, n in _gemms(m, tgt_vocab, shape))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def gemm_rate(m: ModelConfig, tgt_vocab: int, shape: BatchShape, device: torch.device,
              min_seconds: float = 0.05) -> float:
    """Return this machine's matrix-product rate (FLOP/s) at the shapes of a training step on a batch.

    Every forward product (r x k) @ (k x c) is timed with its two backward ones (r x c) @ (c x k) and
    (k x r) @ (r x c), weighted by how often a step runs it. float32 on the CPU, bf16 on CUDA (autocast).
    """
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    flops = seconds = 0.0
    for r, k, c, n in _gemms(m, tgt_vocab, shape):
        r, k, c = (max(1, round(x)) for x in (r, k, c))
        for a_shape, b_shape in (((r, k), (k, c)), ((r, c), (c, k)), ((k, r), (r, c))):
            a = torch.randn(*a_shape, device=device, dtype=dtype)
            b = torch.randn(*b_shape, device=device, dtype=dtype)
            a @ b
            _sync(device)
            reps, start = 0, time.perf_counter()
            while True:
                a @ b
                reps += 1
                if reps % 4 == 0:
                    _sync(device)
                    if time.perf_counter() - start >= min_seconds:
                        break
            each = (time.perf_counter() - start) / reps
            flops += 2.0 * a_shape[0] * a_shape[1] * b_shape[1] * n
            seconds += each * n
    return flops / seconds


def synthetic_batches(n_pairs: int, src_vocab: int, tgt_vocab: int, batch_tokens: int,
                      seed: int = 0) -> list[Batch]:
    """Return token batches of random ids with Multi30k's length profile (target about 13 +- 5 pieces,
    source about 1.2x the target)."""
    rng = random.Random(seed)
    src, tgt = [], []
    for _ in range(n_pairs):
        t = min(45, max(3, round(rng.gauss(13.0, 5.0))))
        s = min(54, max(3, round(t * rng.gauss(1.2, 0.15))))
        src.append([rng.randrange(4, src_vocab) for _ in range(s)])
        tgt.append([rng.randrange(4, tgt_vocab) for _ in range(t)])
    index = token_batches([len(x) for x in src], [len(y) for y in tgt], batch_tokens)
    return [collate([src[i] for i in b], [tgt[i] for i in b]) for b in index]


@dataclass
class BenchResult:
    tokens_per_s: float        # target tokens (padding excluded) per second of training steps
    flops_per_token: float     # training FLOPs per target token of the measured batches
    gemm_flops_per_s: float    # the machine's GEMM rate at the model's shapes, over the timed stretches
    steps: int
    device: str
    allocator: str = "system"
    gemm_probes: list[float] = field(default_factory=list)   # each read of that rate, in order (FLOP/s)

    @property
    def ceiling_tokens_per_s(self) -> float:
        return self.gemm_flops_per_s / self.flops_per_token

    @property
    def mfu(self) -> float:
        return self.tokens_per_s / self.ceiling_tokens_per_s

    def to_dict(self) -> dict:
        return {"tokens_per_s": self.tokens_per_s, "ceiling_tokens_per_s": self.ceiling_tokens_per_s,
                "gemm_gflops": self.gemm_flops_per_s / 1e9, "flops_per_token": self.flops_per_token,
                "mfu": self.mfu, "steps": self.steps, "device": self.device,
                "allocator": self.allocator, "gemm_probes_gflops": [r / 1e9 for r in self.gemm_probes]}


def run_bench(seconds: float = 20.0, model: ModelConfig | None = None, src_vocab: int = 8000,
              tgt_vocab: int = 4000, batch_tokens: int = 3000, device: torch.device | None = None,
              seed: int = 1234, probes: int = 4, probe_seconds: float = 0.02) -> BenchResult:
    """Train the model (default: the LSTM with dot attention at the peers' matched size) on synthetic batches for
    about `seconds` after warming up; return its throughput against the GEMM ceiling.

    Warm-up: 3 steps on the CPU; on CUDA one step on every batch shape, so that cuDNN's and cuBLAS's
    per-shape set-up (as in a real run's first epoch) stays out of the timing. At least 24 distinct
    batches are cycled through.

    The GEMM rate is read `probes` times (at least 2), before, between and after equal stretches of the
    training (each product timed for `probe_seconds`; the reads are not counted as training time). A
    machine whose speed drifts (a shared VM: 20-30% within an hour here) then moves both figures
    together: each stretch's FLOPs are set against the mean of the reads around it, and the ceiling is
    the rate that gives the same total time (`gemm_probes` keeps every read).
    """
    from .device import allocator, pick_device
    from .fast import accelerate
    from .model.seq2seq import Seq2Seq
    from .train import make_optimizer, optimisation_step

    device = device or pick_device("auto")
    m = model or ModelConfig()
    torch.manual_seed(seed)
    net = Seq2Seq(m, src_vocab, tgt_vocab).to(device).train()
    accelerate(net)
    optimizer = make_optimizer(net, 1e-3)
    batches = synthetic_batches(max(8000, 24 * batch_tokens // 13), src_vocab, tgt_vocab, batch_tokens, seed)
    random.Random(seed).shuffle(batches)
    t = TrainConfig(label_smoothing=0.1)
    warm = batches if device.type == "cuda" else batches[:3]
    for batch in warm:
        optimisation_step(net, optimizer, batch, t, device)
    timed = batches[len(warm):] or batches
    step_flops = [train_flops(m, tgt_vocab, BatchShape.of(b)) for b in timed]   # counted before the clock runs
    typical = BatchShape.of(sorted(batches, key=lambda b: b.n_tokens)[len(batches) // 2])
    rate = lambda: gemm_rate(m, tgt_vocab, typical, device, probe_seconds)
    stretches = max(1, probes - 1)
    reads = [rate()]
    tokens = flops = steps = 0
    elapsed = ideal = 0.0
    for _ in range(stretches):
        _sync(device)
        start, stretch_flops = time.perf_counter(), 0.0
        while time.perf_counter() - start < seconds / stretches:
            batch = timed[steps % len(timed)]
            optimisation_step(net, optimizer, batch, t, device)
            tokens += batch.n_tokens
            stretch_flops += step_flops[steps % len(timed)]
            steps += 1
        _sync(device)
        elapsed += time.perf_counter() - start
        reads.append(rate())
        ideal += stretch_flops / ((reads[-2] + reads[-1]) / 2)
        flops += stretch_flops
    return BenchResult(tokens / elapsed, flops / tokens, flops / ideal, steps, str(device), allocator(), reads)
