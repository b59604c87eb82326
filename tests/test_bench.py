"""FLOP counting against a hand computation; the GEMM ceiling and `seqattn bench` end to end."""

import json

import pytest
import torch
from conftest import run

from seqattn.bench import BatchShape, gemm_rate, run_bench, synthetic_batches, train_flops
from seqattn.config import ModelConfig
from seqattn.data.batching import collate


def test_train_flops_match_a_hand_count():
    m = ModelConfig(rnn="lstm", emb_size=4, enc_hidden_size=3, bidirectional=True, dec_hidden_size=6,
                    attention="dot", input_feeding=False)
    shape = BatchShape(sentences=2, src_tokens=5, tgt_tokens=4, attn_pairs=3 * 2 + 2 * 2)
    enc = 2 * (2 * 5 * 4 * (4 * 3) + 2 * 5 * 3 * (4 * 3))   # two directions: W_ih x and W_hh h per source token
    dec = 2 * 4 * 4 * (4 * 6) + 2 * 4 * 6 * (4 * 6)         # W_ih y and W_hh s per target token
    attention = 2 * 6 * 10 + 2 * 6 * 10                      # s_t.h_i and sum alpha h_i per (target, source) pair
    combine = 2 * 4 * (6 + 6) * 6                            # W_c [a; s]
    output = 2 * 4 * 6 * 10                                  # W_y over 10 target pieces
    assert train_flops(m, 10, shape) == 3 * (enc + dec + attention + combine + output)
    feeding = ModelConfig(**{**m.__dict__, "input_feeding": True})
    assert train_flops(feeding, 10, shape) - train_flops(m, 10, shape) == 3 * 2 * 4 * 6 * (4 * 6)
    general = ModelConfig(**{**m.__dict__, "attention": "general", "enc_hidden_size": 2})   # bridge 4 -> 6
    keys, bridge = 2 * 5 * 4 * 6, 2 * (2 * 2 * 4 * 6)
    enc2 = 2 * (2 * 5 * 4 * 8 + 2 * 5 * 2 * 8)
    att2 = 2 * 6 * 10 + 2 * 4 * 10 + 2 * 4 * (4 + 6) * 6
    assert train_flops(general, 10, shape) == 3 * (enc2 + dec + bridge + keys + att2 + output)


def test_batch_shape_counts_real_tokens_only():
    batch = collate([[5, 6], [5, 6, 7, 8]], [[9], [9, 9, 9]])
    shape = BatchShape.of(batch)
    assert (shape.sentences, shape.src_tokens, shape.tgt_tokens) == (2, 3 + 5, 2 + 4)
    assert shape.attn_pairs == 3 * 2 + 5 * 4


def test_gemm_rate_and_bench_are_consistent():
    m = ModelConfig(emb_size=16, enc_hidden_size=16, dec_hidden_size=32)
    shape = BatchShape.of(synthetic_batches(200, 50, 40, 300)[0])
    assert gemm_rate(m, 40, shape, torch.device("cpu"), min_seconds=0.001) > 1e6
    r = run_bench(0.5, m, 50, 40, 300, torch.device("cpu"))
    assert r.steps >= 1 and r.tokens_per_s > 0
    assert abs(r.mfu - r.tokens_per_s * r.flops_per_token / r.gemm_flops_per_s) < 1e-9
    assert len(r.gemm_probes) == 4 and min(r.gemm_probes) <= r.gemm_flops_per_s <= max(r.gemm_probes)


def test_bench_sets_each_stretch_against_the_gemm_reads_around_it(monkeypatch):
    import seqattn.bench as bench

    m = ModelConfig(emb_size=16, enc_hidden_size=16, dec_hidden_size=32)
    reads = iter([1e9, 3e9, 3e9])
    monkeypatch.setattr(bench, "gemm_rate", lambda *a, **k: next(reads))
    r = run_bench(0.3, m, 50, 40, 300, torch.device("cpu"), probes=2)    # one stretch, between 1 and 3
    assert r.gemm_probes == [1e9, 3e9] and r.gemm_flops_per_s == pytest.approx(2e9)
    reads = iter([1e9, 3e9, 3e9])
    r = run_bench(0.3, m, 50, 40, 300, torch.device("cpu"), probes=3)    # stretches at 2 and 3 GFLOP/s
    assert r.gemm_probes == [1e9, 3e9, 3e9] and 2e9 < r.gemm_flops_per_s < 3e9


def test_bench_command_prints_mfu_last():
    proc = run("bench", "--seconds", "1", "--src-vocab", "300", "--tgt-vocab", "200", "--batch-tokens", "400",
               "--device", "cpu", "--json")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines[-1].startswith("training ") and "MFU" in lines[-1]
    figures = json.loads(lines[-2])
    assert figures["tokens_per_s"] > 0 and 0 < figures["mfu"] and figures["gemm_gflops"] > 0


def test_train_and_bench_run_under_tcmalloc_when_installed():
    import ctypes.util
    import os

    have = ctypes.util.find_library("tcmalloc_minimal") or ctypes.util.find_library("tcmalloc")
    args = ("bench", "--seconds", "0.2", "--src-vocab", "100", "--tgt-vocab", "100", "--batch-tokens", "300",
            "--device", "cpu", "--json")
    figures = json.loads(run(*args).stdout.strip().splitlines()[-2])
    assert figures["allocator"] == ("tcmalloc" if have else "system")
    os.environ["SEQATTN_TCMALLOC"] = "0"
    try:
        assert json.loads(run(*args).stdout.strip().splitlines()[-2])["allocator"] == "system"
    finally:
        del os.environ["SEQATTN_TCMALLOC"]
