"""The model: shapes, the context vector, packing, and batched training == step-by-step decoding."""

from dataclasses import replace

import pytest
import torch

from seqattn.config import ModelConfig
from seqattn.model.encoder import Encoder
from seqattn.model.packed import pack, packing_available
from seqattn.model.seq2seq import Seq2Seq

VARIANTS = [(rnn, att, feed) for rnn in ("lstm", "gru") for att in ("dot", "general", "concat", "none")
            for feed in (False, True) if not (feed and att == "none")]


def _batch():
    torch.manual_seed(0)
    src = torch.randint(4, 30, (3, 7))
    src[1, 5:] = 0
    src[2, 3:] = 0
    src_len = torch.tensor([7, 5, 3])
    tgt = torch.randint(4, 25, (3, 6))
    return src, src_len, tgt


@pytest.mark.parametrize("rnn,att,feed", VARIANTS)
def test_batched_teacher_forcing_equals_step_by_step(rnn, att, feed):
    cfg = ModelConfig(rnn=rnn, attention=att, input_feeding=feed, emb_size=16, enc_hidden_size=12,
                      dec_hidden_size=24 if att == "dot" else 20, dropout=0.0)
    model = Seq2Seq(cfg, 30, 25).eval()
    src, src_len, tgt = _batch()
    logits, alpha = model(src, src_len, tgt)
    assert logits.shape == (3, 6, 25)
    enc = model.encode(src, src_len)
    state, feed_v = enc.state, torch.zeros(3, cfg.dec_hidden_size) if feed else None
    for t in range(tgt.size(1)):
        step_logits, state, feed_v, step_alpha = model.decoder.step(tgt[:, t], state, enc.memory, enc.keys,
                                                                     enc.mask, feed_v)
        assert torch.allclose(step_logits, logits[:, t], atol=1e-5)
        if att == "none":
            assert alpha is None and step_alpha is None
        else:
            assert torch.allclose(step_alpha, alpha[:, t], atol=1e-5)
    if att != "none":
        assert alpha.shape == (3, 6, 7)
        assert torch.all(alpha[1, :, 5:] == 0) and torch.all(alpha[2, :, 3:] == 0)


def test_context_vector_starts_the_decoder():
    """Equal sizes: the decoder's initial state is the encoder's final state (both directions, per layer)."""
    cfg = ModelConfig(rnn="lstm", emb_size=8, enc_hidden_size=6, bidirectional=True, dec_hidden_size=12,
                      layers=2, dropout=0.0)
    model = Seq2Seq(cfg, 20, 20).eval()
    assert model.bridge is None
    src, src_len = torch.randint(4, 20, (2, 5)), torch.tensor([5, 5])
    enc = model.encode(src, src_len)
    h, c = enc.state
    assert h.shape == c.shape == (2, 2, 12)
    _, (h_raw, _) = model.encoder.rnn(model.encoder.embed(src))
    # top layer: forward final state then backward final state
    assert torch.allclose(h[1], torch.cat([h_raw[2], h_raw[3]], -1), atol=1e-6)
    # forward half of the top layer equals the forward output at the last position
    assert torch.allclose(h[1, :, :6], enc.memory[:, -1, :6], atol=1e-6)


def test_bridge_when_sizes_differ():
    cfg = ModelConfig(rnn="gru", emb_size=8, enc_hidden_size=6, bidirectional=False, dec_hidden_size=10,
                      attention="general", dropout=0.0)
    model = Seq2Seq(cfg, 20, 20)
    assert model.bridge is not None and len(model.bridge) == 1
    enc = model.encode(torch.randint(4, 20, (2, 5)), torch.tensor([5, 3]))
    assert enc.state.shape == (1, 2, 10)
    assert torch.all(enc.state.abs() <= 1)  # tanh


def test_padding_does_not_change_a_sentence():
    """A sentence gives the same logits alone and inside a padded batch (packing + masking)."""
    cfg = ModelConfig(emb_size=8, enc_hidden_size=8, dec_hidden_size=16, dropout=0.0)
    model = Seq2Seq(cfg, 30, 30).eval()
    src, src_len, tgt = _batch()
    batched, _ = model(src, src_len, tgt)
    alone, _ = model(src[2:, :3], src_len[2:], tgt[2:])
    assert torch.allclose(batched[2], alone[0], atol=1e-5)


def test_tied_embeddings_share_the_weight():
    cfg = ModelConfig(emb_size=16, enc_hidden_size=8, dec_hidden_size=16, tie_embeddings=True)
    model = Seq2Seq(cfg, 30, 30)
    assert model.decoder.out.weight is model.decoder.embed.weight


@pytest.mark.parametrize("tie", [False, True])
def test_init_range_bounds_every_parameter_and_keeps_padding_zero(tie):
    size = 16 if tie else 8
    model = Seq2Seq(ModelConfig(emb_size=size, enc_hidden_size=8, dec_hidden_size=16, tie_embeddings=tie,
                                init_range=0.05), 30, 40)
    params = list(model.parameters())
    assert all(p.abs().max() <= 0.05 for p in params)
    assert all(p.abs().max() > 0.04 for p in params if p.numel() > 50)   # spread over the range, not shrunk
    assert model.encoder.embed.weight[0].abs().sum() == 0 and model.decoder.embed.weight[0].abs().sum() == 0
    assert (model.decoder.out.weight is model.decoder.embed.weight) == tie


def test_init_range_zero_keeps_pytorchs_initialisation():
    torch.manual_seed(0)
    emb = Seq2Seq(ModelConfig(emb_size=64, enc_hidden_size=8, dec_hidden_size=16, init_range=0.0),
                  500, 40).encoder.embed.weight[1:]
    assert 0.9 < emb.std() < 1.1        # nn.Embedding's N(0, 1)


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.3])
def test_smoothed_cross_entropy_equals_torch_value_and_gradient(smoothing):
    import torch.nn.functional as F

    from seqattn.model.loss import smoothed_cross_entropy

    g = torch.Generator().manual_seed(3)
    logits = torch.randn(12, 9, generator=g, dtype=torch.float64).float()
    target = torch.randint(1, 9, (12,), generator=g)
    target[[2, 7]] = 0                                               # padding rows count for nothing
    a = logits.clone().requires_grad_()
    b = logits.clone().requires_grad_()
    mine = smoothed_cross_entropy(a, target, smoothing, 0)
    ref = F.cross_entropy(b, target, ignore_index=0, label_smoothing=smoothing, reduction="sum")
    (mine * 0.5).backward()
    (ref * 0.5).backward()
    assert torch.allclose(mine, ref, atol=1e-5)
    assert torch.allclose(a.grad, b.grad, atol=1e-6)
    assert a.grad[2].abs().sum() == 0 and a.grad[7].abs().sum() == 0
    with torch.no_grad():
        assert torch.allclose(smoothed_cross_entropy(logits, target, smoothing, 0), ref, atol=1e-5)
    # by hand for one row: (1-e) * -log p(y) + e * mean_v -log p(v)
    logp = torch.log_softmax(logits[0], -1)
    one = smoothed_cross_entropy(logits[:1].clone().requires_grad_(), target[:1], smoothing, 0)
    assert torch.isclose(one, (1 - smoothing) * -logp[target[0]] - smoothing * logp.mean(), atol=1e-5)
    # the gradient is scaled in place in backward, so a second backward would be wrong: it is refused
    again = smoothed_cross_entropy(logits.clone().requires_grad_(), target, smoothing, 0)
    again.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="twice"):
        again.backward()


def test_rnns_run_in_float32_under_autocast():
    """Autocast keeps bf16 for the matrix products around the RNNs, not for the RNNs (whose CUDA autocast
    rule is fp16 without loss scaling): the encoder's states are the float32 ones, bit for bit."""
    cfg = ModelConfig(emb_size=16, enc_hidden_size=12, dec_hidden_size=24, dropout=0.0)
    model = Seq2Seq(cfg, 30, 25).eval()
    src, src_len, tgt = _batch()
    ref = model.encode(src, src_len)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        enc = model.encode(src, src_len)
        logits, _ = model(src, src_len, tgt)
    assert enc.memory.dtype == torch.float32 and torch.equal(enc.memory, ref.memory)
    assert all(torch.equal(a, b) for a, b in zip(enc.state, ref.state))
    assert logits.dtype == torch.bfloat16                    # the output layer still runs in bf16


@pytest.mark.parametrize("kind,layers,bidirectional", [("lstm", 1, True), ("gru", 1, True), ("lstm", 2, False),
                                                       ("gru", 2, True)])
@pytest.mark.parametrize("lengths", [[3, 7, 1, 7, 4, 2], [5, 7, 5, 6, 5, 5], [6, 6, 6]])
@pytest.mark.parametrize("fused_min", [1, 4, 100])
def test_packed_training_path_equals_torchs_packed_rnn(kind, layers, bidirectional, lengths, fused_min, monkeypatch):
    """seqattn's CPU training path for packed sequences computes what nn.LSTM / nn.GRU compute: outputs,
    final states (in the batch's own order) and every gradient; for an LSTM whether the steps all rows are
    alive for run in torch's fused LSTM (as many as FUSED_MIN_STEPS or more) or in seqattn's loop."""
    from torch.nn.utils.rnn import pack_padded_sequence

    from seqattn.model import rnn as rnn_module
    from seqattn.model.rnn import RNNS, packed_rnn

    monkeypatch.setattr(rnn_module, "FUSED_MIN_STEPS", fused_min)
    torch.manual_seed(3)
    rnn = RNNS[kind](6, 5, layers, batch_first=True, bidirectional=bidirectional)   # dropout 0: deterministic
    lengths = torch.tensor(lengths)
    x = torch.randn(len(lengths), int(lengths.max()), 6, requires_grad=True)
    results = []
    for run in (lambda p: rnn(p), lambda p: packed_rnn(rnn, p)):
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        out, final = run(packed)
        finals = final if isinstance(final, tuple) else (final,)
        w = torch.randn_like(out.data, generator=torch.Generator().manual_seed(0))
        loss = (out.data * w).sum() + sum((f * (i + 2)).sum() for i, f in enumerate(finals))
        grads = torch.autograd.grad(loss, [x, *rnn.parameters()])
        results.append((out.data, finals, grads))
    (out_a, fin_a, grad_a), (out_b, fin_b, grad_b) = results
    assert torch.allclose(out_a, out_b, atol=1e-6)
    assert len(fin_a) == len(fin_b) and all(a.shape == b.shape and torch.allclose(a, b, atol=1e-6)
                                            for a, b in zip(fin_a, fin_b))
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(grad_a, grad_b))


@pytest.mark.parametrize("rnn,layers", [("lstm", 1), ("gru", 1), ("lstm", 2), ("gru", 2)])
def test_prepared_decoding_step_equals_the_cells(rnn, layers):
    """A decoding step from `prepare()` (the first layer's input projection looked up, the memory multiplied
    by W_ca once, the products from packed weights) gives what torch's cells and modules give."""
    torch.manual_seed(4)
    model = Seq2Seq(ModelConfig(rnn=rnn, layers=layers, emb_size=16, enc_hidden_size=12, dec_hidden_size=24,
                                dropout=0.0), 30, 25).eval()
    src, src_len = torch.randint(4, 30, (5, 7)), torch.tensor([7, 7, 5, 3, 1])
    y = torch.tensor([1, 4, 9, 24, 3])
    prepared = model.prepare()
    assert prepared.decoder.table.shape == (25, (4 if rnn == "lstm" else 3) * 24)
    if packing_available():
        assert all(p is not None for p in (prepared.decoder.hh, prepared.decoder.context, prepared.decoder.combine,
                                           prepared.decoder.out))

    def step(prepared, grad=False):
        with torch.set_grad_enabled(grad):
            enc = model.encode(src, src_len, prepared)
            logits, state, s_tilde, alpha = model.decoder.step(y, enc.state, enc.memory, enc.keys, enc.mask,
                                                               prepared=prepared and prepared.decoder)
        return [logits, *(state if isinstance(state, tuple) else (state,)), s_tilde, alpha]

    mine, ref = step(prepared), step(None)                    # None: torch's lstm_cell / gru_cell, nn.Linear
    assert all(a.shape == b.shape and torch.allclose(a, b, atol=1e-5) for a, b in zip(mine, ref))
    with_grad = step(prepared, grad=True)                     # snapshots have no gradients: the modules run
    assert with_grad[0].requires_grad and all(torch.equal(a, b) for a, b in zip(with_grad, step(None, grad=True)))
    if packing_available():   # the step multiplies by the packed copy, not the module
        out = model.decoder.out
        zeroed = replace(prepared, decoder=replace(prepared.decoder, out=pack(torch.zeros_like(out.weight), out.bias)))
        assert torch.allclose(step(zeroed)[0], out.bias.expand(5, -1))
    fed = Seq2Seq(ModelConfig(input_feeding=True, emb_size=16, enc_hidden_size=12, dec_hidden_size=24), 30, 25)
    assert fed.decoder.prepare().table is None                # the input also holds s~_{t-1}: no table


@pytest.mark.skipif(not packing_available(), reason="this torch has no oneDNN linear operators")
@pytest.mark.parametrize("bidirectional", [True, False])
def test_prepared_encoder_equals_torchs_packed_lstm(bidirectional):
    """Encoding from `Encoder.prepare()` (input projections looked up, both directions in one loop) gives
    torch's packed LSTM's memory (zeros past each end, rows in the batch's order) and final h and c."""
    torch.manual_seed(5)
    enc = Encoder(40, 16, 12, 1, bidirectional, "lstm", 0.0).eval()
    lengths = torch.tensor([3, 9, 1, 9, 4, 2, 6])
    src = torch.randint(4, 40, (7, 11))                                  # padded past the longest, too
    src[torch.arange(11) >= lengths.unsqueeze(1)] = 0
    prepared = enc.prepare()
    assert prepared.table.shape == (40 * (2 if bidirectional else 1), 4 * 12) and not prepared.filled.any()
    with torch.no_grad():
        (mem, (h, c)), (ref_mem, (ref_h, ref_c)) = enc(src, lengths, prepared), enc(src, lengths)
    assert torch.equal(prepared.filled.nonzero().squeeze(1), src.unique())   # the rows of the ids met, only
    assert mem.shape == ref_mem.shape == (7, 11, 24 if bidirectional else 12)
    assert torch.allclose(mem, ref_mem, atol=1e-6) and torch.allclose(h, ref_h, atol=1e-6)
    assert torch.allclose(c, ref_c, atol=1e-6) and h.shape == ref_h.shape
    assert mem[2, 1:].abs().sum() == 0                                   # past the end of a 1-token sentence
    enc.train()
    trained = enc(src, lengths, prepared)[0]                             # training ignores it: the modules run
    assert trained.requires_grad and torch.allclose(trained, ref_mem, atol=1e-6)
    assert Encoder(40, 16, 12, 1, True, "gru", 0.0).prepare() is None
    assert Encoder(40, 16, 12, 2, True, "lstm", 0.0).prepare() is None


@pytest.mark.skipif(not packing_available(), reason="this torch has no oneDNN linear operators")
@pytest.mark.parametrize("rows", [1, 7, 64])
def test_packed_linear_equals_the_product_it_replaces(rows):
    """PackedLinear's products (plain, with tanh, with a fused addition) equal torch's, any row count."""
    g = torch.Generator().manual_seed(rows)
    w, b = torch.randn(48, 20, generator=g), torch.randn(48, generator=g)
    x, add = torch.randn(rows, 20, generator=g), torch.randn(rows, 48, generator=g)
    ref = x @ w.t() + b
    assert torch.allclose(pack(w, b)(x), ref, atol=1e-5)
    assert torch.allclose(pack(w, b, "tanh")(x), torch.tanh(ref), atol=1e-5)
    assert torch.allclose(pack(w)(x, add=add), x @ w.t() + add, atol=1e-5)
    assert pack(w, b)(x.view(1, rows, 20)).shape == (1, rows, 48)     # leading dimensions kept
    w.add_(1.0)                                                         # a snapshot: later changes do not reach it
    assert torch.allclose(pack(w.sub(1.0), b)(x), ref, atol=1e-5)


def test_pack_applies_to_float32_cpu_weights_only(monkeypatch):
    w = torch.randn(6, 4)
    assert pack(w.double()) is None and pack(w.bfloat16()) is None
    assert pack(w, torch.zeros(6, dtype=torch.float64)) is None
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: False)
    assert pack(w) is None                                          # a torch without oneDNN: the modules as they are
    model = Seq2Seq(ModelConfig(emb_size=8, enc_hidden_size=6, dec_hidden_size=12), 10, 9)
    prepared = model.decoder.prepare()
    assert prepared.table is not None and prepared.hh is None and prepared.out is None
    assert prepared.context is None and prepared.combine is None
    assert model.prepare().encoder is None                          # its loop needs the packed W_hh


@pytest.mark.parametrize("enforce_sorted,total", [(False, 7), (False, 9), (True, 7)])
def test_pad_packed_equals_torchs_pad_packed_sequence(enforce_sorted, total):
    """The gather that pads the encoder's memory gives pad_packed_sequence's tensor (zeros past each end,
    rows in the batch's order) and the same gradient."""
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    from seqattn.model.rnn import pad_packed

    lengths = torch.tensor([7, 5, 4, 4, 2, 1]) if enforce_sorted else torch.tensor([3, 7, 1, 7, 4, 2])
    x = torch.randn(6, 7, 2, 3)
    packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=enforce_sorted)
    data = packed.data.clone().requires_grad_()
    mine = pad_packed(packed._replace(data=data), total)
    ref, _ = pad_packed_sequence(packed._replace(data=data), batch_first=True, total_length=total)
    assert mine.shape == (6, total, 2, 3) and torch.equal(mine, ref)
    for b, n in enumerate(lengths.tolist()):
        assert torch.equal(mine[b, :n], x[b, :n]) and mine[b, n:].abs().sum() == 0
    w = torch.randn(mine.shape)
    assert torch.equal(torch.autograd.grad((mine * w).sum(), data)[0], torch.autograd.grad((ref * w).sum(), data)[0])


def test_the_encoder_trains_through_the_packed_path_on_the_cpu(monkeypatch):
    import seqattn.model.rnn as rnn_module

    calls = []
    real = rnn_module.packed_rnn
    monkeypatch.setattr(rnn_module, "packed_rnn", lambda *a: calls.append(1) or real(*a))
    model = Seq2Seq(ModelConfig(emb_size=16, enc_hidden_size=12, dec_hidden_size=24, dropout=0.0), 30, 25)
    src, src_len, tgt = _batch()
    with torch.no_grad():
        ref, _ = model(src, src_len, tgt)          # inference: torch's packed RNN
    assert calls == []
    logits, _ = model(src, src_len, tgt)           # training: the split-based path, same numbers
    assert calls == [1] and torch.allclose(logits, ref, atol=1e-5)
