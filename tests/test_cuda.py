"""The CUDA path: the same numbers as the CPU, bf16 autocast training that learns, checkpoints that move
between devices, beam search and sampling on the GPU. Skipped where torch sees no GPU (CI); run on a
GPU machine with `pytest tests/test_cuda.py` (benchmarks/gpu.py runs it first)."""

import pytest
import torch
from conftest import assert_one_line_error, reverse_pairs, run, write_tiny_config

from seqattn.bench import BatchShape, gemm_rate, run_bench
from seqattn.checkpoint import load_checkpoint
from seqattn.config import ModelConfig, load_config
from seqattn.data.batching import collate
from seqattn.data.tokenizer import SOS
from seqattn.device import autocast
from seqattn.errors import SeqattnError
from seqattn.fast import Decoding, accelerate
from seqattn.fast.loss import smoothed_cross_entropy
from seqattn.model.seq2seq import Seq2Seq
from seqattn.search import state_of
from seqattn.train import Trainer
from seqattn.translator import SearchOptions, Translator

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
CUDA = torch.device("cuda")


@pytest.fixture
def exact_float32():
    """Plain float32 on the GPU (no TF32 in matrix products or cuDNN) for comparisons with the CPU."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    lens = [9, 4, 7, 1, 6]
    src = [torch.randint(4, 50, (n,), generator=g).tolist() for n in lens]
    tgt = [torch.randint(4, 40, (n + 2,), generator=g).tolist() for n in reversed(lens)]
    return collate(src, tgt)


def _loss(model, batch, device):
    b = batch.to(device)
    with autocast(device):
        logits, alpha = model(b.src, b.src_len, b.tgt_in)
    return smoothed_cross_entropy(logits.flatten(0, 1), b.tgt_out.flatten(), 0.1, 0), logits, alpha


@pytest.mark.parametrize("rnn,att,feed", [("lstm", "dot", False), ("gru", "general", False), ("lstm", "concat", True)])
def test_float32_forward_and_gradients_match_the_cpu(exact_float32, rnn, att, feed):
    cfg = ModelConfig(rnn=rnn, attention=att, input_feeding=feed, emb_size=16, enc_hidden_size=12,
                      dec_hidden_size=24, dropout=0.0)
    torch.manual_seed(0)
    cpu = Seq2Seq(cfg, 50, 40)
    gpu = Seq2Seq(cfg, 50, 40)
    gpu.load_state_dict(cpu.state_dict())
    gpu.to(CUDA)
    accelerate(cpu)     # as the trainer runs them: the CPU's packed path, cuDNN on the GPU
    accelerate(gpu)
    batch = _batch()
    loss_c, logits_c, alpha_c = _loss(cpu, batch, torch.device("cpu"))
    with torch.autocast("cuda", enabled=False):   # the model's float32 path, not bf16
        b = batch.to(CUDA)
        logits_g, alpha_g = gpu(b.src, b.src_len, b.tgt_in)
        loss_g = smoothed_cross_entropy(logits_g.flatten(0, 1), b.tgt_out.flatten(), 0.1, 0)
    assert torch.allclose(logits_g.cpu(), logits_c, atol=1e-5, rtol=1e-4)
    assert torch.allclose(alpha_g.cpu(), alpha_c, atol=1e-6)
    loss_c.backward()
    loss_g.backward()
    assert loss_g.item() == pytest.approx(loss_c.item(), rel=1e-5)
    for (name, p), q in zip(cpu.named_parameters(), gpu.parameters()):
        assert torch.allclose(q.grad.cpu(), p.grad, atol=1e-5, rtol=1e-3), name


def test_bf16_autocast_stays_close_to_float32():
    torch.manual_seed(1)
    model = Seq2Seq(ModelConfig(dropout=0.0, emb_size=64, enc_hidden_size=64, dec_hidden_size=128), 50, 40).to(CUDA)
    accelerate(model)
    batch = _batch(1)
    loss_bf16, logits, _ = _loss(model, batch, CUDA)
    assert logits.dtype == torch.bfloat16                      # autocast reached the output layer
    with autocast(CUDA):
        enc = model.encode(batch.src.to(CUDA), batch.src_len)
    assert enc.memory.dtype == torch.float32                   # cuDNN's LSTM ran in float32, not fp16
    model.eval()
    with torch.no_grad(), autocast(CUDA):                      # decoding's cell steps: the same precision
        sos = torch.full((batch.src.size(0),), SOS, device=CUDA)
        _, state, _, _ = Decoding(model).step(sos, enc.state, enc)
    assert all(s.dtype == torch.float32 for s in state)
    with torch.autocast("cuda", enabled=False):
        b = batch.to(CUDA)
        ref, _ = model(b.src, b.src_len, b.tgt_in)
    assert ref.dtype == torch.float32
    rel = (logits.float() - ref).norm() / ref.norm()
    assert 0 < rel < 2e-2                                      # bf16 operands: between 1e-3 and 1e-2 typically
    assert torch.isfinite(loss_bf16)
    loss_bf16.backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 and torch.isfinite(p.grad).all()
               for p in model.parameters() if p.requires_grad and p.grad is not None)


def test_one_step_decoding_on_cuda_equals_the_batched_decoder(exact_float32):
    torch.manual_seed(2)
    cfg = ModelConfig(emb_size=16, enc_hidden_size=12, dec_hidden_size=24, dropout=0.0)
    model = Seq2Seq(cfg, 50, 40).to(CUDA).eval()
    accelerate(model)
    decoding = Decoding(model)
    assert "decoder_table" in decoding.paths and "packed_out" not in decoding.paths   # no oneDNN on the GPU
    b = _batch(2).to(CUDA)
    with torch.no_grad():
        logits, alpha = model(b.src, b.src_len, b.tgt_in)
        enc = decoding.encode(b.src, b.src_len)
        state = state_of(enc)
        for t in range(b.tgt_in.size(1)):   # torch.lstm_cell per step against cuDNN over the whole target
            step_logits, state, _, step_alpha = decoding.step(b.tgt_in[:, t], state, enc)
            assert torch.allclose(step_logits, logits[:, t], atol=1e-5)
            assert torch.allclose(step_alpha, alpha[:, t], atol=1e-6)


def test_trains_with_bf16_on_cuda_and_decodes_on_either_device(tmp_path):
    pairs = reverse_pairs(20, seed=3)
    path = write_tiny_config(tmp_path, pairs, train__device="cuda", train__max_steps=300, train__valid_every=50,
                             train__valid_metric="exact", train__early_stopping=2)
    result = Trainer(load_config(path)).run()
    assert result["best"] == 100.0
    src, refs = [s for s, _ in pairs], [t for _, t in pairs]
    assert load_checkpoint(tmp_path / "model" / "best.pt")["model"]["decoder.out.weight"].device.type == "cpu"
    for device in ("cuda", "cpu"):
        tr = Translator.load(tmp_path / "model", device=device)
        assert next(tr.model.parameters()).device.type == device
        assert [o.text for o in tr.translate(src)] == refs
        assert [o.text for o in tr.translate(src, options=SearchOptions(beam=4, alpha=0.6))] == refs
    tr = Translator.load(tmp_path / "model", device="cuda")
    with_att = tr.translate(src[:3], attention=True)
    for o in with_att:   # attention rows over the source pieces (and <eos>), each summing to 1
        assert len(o.attention) == len(o.tgt_tokens)
        assert all(abs(sum(row) - 1) < 1e-2 and len(row) == len(o.src_tokens) for row in o.attention)
    draws = [[o.text for o in tr.translate(src, options=SearchOptions(sample=True, seed=5, temperature=1.5))]
             for _ in range(2)]
    assert draws[0] == draws[1]                        # a seeded CUDA generator repeats its draws
    with pytest.raises(SeqattnError, match="CPU only"):
        Translator.load(tmp_path / "model", device="cuda", quantize="int8")


def test_resume_on_cuda_continues_the_same_run(tmp_path):
    pairs = reverse_pairs(60, seed=1)
    common = dict(model__dropout=0.3, train__valid_every=10, train__label_smoothing=0.1, train__device="cuda")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    Trainer(load_config(write_tiny_config(tmp_path / "a", pairs, train__max_steps=40, **common))).run()
    Trainer(load_config(write_tiny_config(tmp_path / "b", pairs, train__max_steps=20, **common))).run()
    resumed = write_tiny_config(tmp_path / "b", pairs, train__max_steps=40, **common)
    Trainer(load_config(resumed), resume=True).run()
    a = load_checkpoint(tmp_path / "a" / "model" / "last.pt")
    b = load_checkpoint(tmp_path / "b" / "model" / "last.pt")
    assert a["progress"]["step"] == b["progress"]["step"] == 40
    # the CUDA generator state travels in last.pt, so the dropout masks after resuming are the same ones;
    # cuDNN's kernels may sum in another order from run to run, hence a tolerance instead of bit equality
    for key, value in a["model"].items():
        assert torch.allclose(value, b["model"][key], atol=1e-3, rtol=1e-3), key
    va = [r["loss"] for r in a["progress"]["history"]]
    vb = [r["loss"] for r in b["progress"]["history"]]
    assert vb == pytest.approx(va, rel=1e-3)


def test_bench_runs_on_cuda_against_the_bf16_gemm_ceiling():
    m = ModelConfig(emb_size=64, enc_hidden_size=64, dec_hidden_size=128, dropout=0.0)
    r = run_bench(1.0, m, 200, 150, 1000, CUDA)
    assert r.device.startswith("cuda") and r.steps > 3
    assert r.tokens_per_s > 0 and 0 < r.mfu < 1
    # at the peers' matched size the bf16 matrix units run far beyond any CPU (tiny shapes above do not)
    shape = BatchShape(sentences=200, src_tokens=3100, tgt_tokens=2800, attn_pairs=45000)
    assert gemm_rate(ModelConfig(), 4000, shape, CUDA, min_seconds=0.01) > 3e12


def test_more_processes_than_gpus_is_one_line_error(tmp_path):
    cfg = write_tiny_config(tmp_path, reverse_pairs(50, seed=1), train__device="cuda")
    n = torch.cuda.device_count() + 1
    assert_one_line_error(run("train", cfg, "--nproc", n, timeout=300), f"{n} processes", "GPU")
