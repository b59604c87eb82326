"""The fast package: each path computes the plain model's function (outputs, states, gradients, decoded
outputs), applies where it was written for, and steps aside for an edited model."""

import copy

import pytest
import torch
from conftest import model_of, sources

from seqattn.fast import Decoding, accelerate
from seqattn.fast.check import REEXPRESSES, WRITTEN_FOR, code_hash, written_for
from seqattn.fast.decoding import EncoderTables
from seqattn.fast.onednn import pack, packing_available
from seqattn.fast.search import beam_search, greedy
from seqattn.model.attention import Attention
from seqattn.model.encoder import Encoder
from seqattn.search import state_of

ALL_DECODING = ["encoder_tables", "decoder_cells", "decoder_table", "packed_hh", "split_combine", "packed_out"]
# lstm/gru x every score and none x (input feeding, layers, bidirectional)
CONFIGS = [(rnn, att, feed, layers, bi) for rnn in ("lstm", "gru") for att in ("dot", "general", "concat", "none")
           for feed, layers, bi in ((False, 1, True), (True, 1, False), (False, 2, False), (True, 2, True))
           if not (feed and att == "none")]




def batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    src_len = torch.tensor([7, 5, 3, 7, 1])
    src = torch.randint(4, 30, (5, 7), generator=g)
    src[torch.arange(7) >= src_len.unsqueeze(1)] = 0
    return src, src_len, torch.randint(4, 25, (5, 6), generator=g)


def outputs_and_gradients(model, src, src_len, tgt):
    """Return [logits, attention] and the gradient of every parameter of a loss over both."""
    logits, alpha = model(src, src_len, tgt)
    g = torch.Generator().manual_seed(1)
    loss = (logits * torch.randn(logits.shape, generator=g)).sum()
    if alpha is not None:
        loss = loss + (alpha * torch.randn(alpha.shape, generator=g)).sum()
    return [logits, alpha], torch.autograd.grad(loss, list(model.parameters()))


def steps_of(steps, model, src, src_len, y_seq, group=1):
    """Return every tensor of `encode` then steps on y_seq (steps x rows) from `steps` (the model or Decoding)."""
    with torch.no_grad():
        enc = steps.encode(src, src_len)
        state = state_of(enc)
        rows = y_seq.size(1)
        if group > 1:
            state = tuple(s.repeat_interleave(group, 1) for s in state) if isinstance(state, tuple) \
                else state.repeat_interleave(group, 1)
        feed = torch.zeros(rows, model.decoder.hidden_size) if model.decoder.input_feeding else None
        got = []
        for y in y_seq:
            logits, state, feed, alpha = steps.step(y, state, enc, feed, group)
            got += [logits, *(state if isinstance(state, tuple) else (state,)), feed]
            if alpha is not None:
                got.append(alpha)
        return got


def assert_close(a, b, atol):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert (x is None) == (y is None)
        if x is not None:
            assert x.shape == y.shape and torch.allclose(x, y, atol=atol), (x - y).abs().max()


@pytest.mark.parametrize("rnn,att,feed,layers,bi", CONFIGS)
def test_accelerated_training_gives_the_plain_models_outputs_and_gradients(rnn, att, feed, layers, bi):
    """Outputs and every gradient within 1e-5 (float32) of the plain model, in training mode."""
    plain = model_of(rnn, att, feed, layers, bi).train()
    fast = copy.deepcopy(plain)
    swapped = accelerate(fast)
    assert set(swapped) == {"FastLSTM" if rnn == "lstm" else "FastGRU", "FastDropout", "FastEncoder"}
    src, src_len, tgt = batch()
    (out_a, grad_a), (out_b, grad_b) = (outputs_and_gradients(m, src, src_len, tgt) for m in (plain, fast))
    assert_close(out_a, out_b, 1e-5)
    assert_close(list(grad_a), list(grad_b), 1e-5)
    assert fast.state_dict().keys() == plain.state_dict().keys()


@pytest.mark.parametrize("packed", [True, False])
@pytest.mark.parametrize("rnn,att,feed,layers,bi", CONFIGS)
def test_fast_decoding_gives_the_plain_models_steps_and_outputs(rnn, att, feed, layers, bi, packed):
    """Encode and three steps (beams sharing encoder rows too) within 1e-5; greedy and beam outputs identical;
    packed=False (plain products, cells as products: what an export traces) too."""
    model = model_of(rnn, att, feed, layers, bi, tgt_vocab=12).eval()
    fast = Decoding(accelerate(model) and model, packed=packed)
    expected = {"decoder_cells"} | ({"split_combine"} if att != "none" else set())
    if not feed:
        expected.add("decoder_table")
    if rnn == "lstm" and layers == 1 and packed:
        expected.add("encoder_tables")
    if packed and packing_available():
        expected |= {"packed_out"} | ({"packed_hh"} if not feed else set())
    elif packed:
        expected -= {"split_combine", "encoder_tables"}
    assert set(fast.paths) == expected
    src, src_len, _ = batch()
    y = torch.randint(4, 12, (3, 5), generator=torch.Generator().manual_seed(2))
    assert_close(steps_of(fast, model, src, src_len, y), steps_of(model, model, src, src_len, y), 1e-5)
    y2 = torch.randint(4, 12, (3, 10), generator=torch.Generator().manual_seed(3))
    assert_close(steps_of(fast, model, src, src_len, y2, group=2), steps_of(model, model, src, src_len, y2, group=2),
                 1e-5)
    src, src_len, limit = sources(12, seed=5)
    for search in (lambda s: greedy(s, src, src_len, limit, width=5),
                   lambda s: beam_search(s, src, src_len, limit, beam=3, nbest=2, alpha=1.0, width=4)):
        got, ref = search(fast), search(model)
        flat = lambda r: [h for x in r for h in (x if isinstance(x, list) else [x])]
        assert [h.ids for h in flat(got)] == [h.ids for h in flat(ref)]
        assert [h.score for h in flat(got)] == pytest.approx([h.score for h in flat(ref)], abs=1e-4)


def test_every_path_applies_to_the_stock_model():
    """The model code each path re-expresses hashes to the value recorded for it (`python -m
    seqattn.fast.check` prints the current ones)."""
    assert {name: code_hash(*(getattr(c, f) for c, f in fs)) for name, fs in REEXPRESSES.items()} == WRITTEN_FOR
    model = model_of()
    assert accelerate(model) == ["FastEncoder", "FastLSTM", "FastDropout"]
    if packing_available():
        assert Decoding(model.eval()).paths == ALL_DECODING


class ScaledDot(Attention):
    """An attention variant a user might try: dot scores divided by sqrt(d)."""

    def forward(self, query, keys, values, mask):
        return super().forward(query / query.size(-1) ** 0.5, keys, values, mask)


def scaled_forward(self, query, keys, values, mask):
    """Attention.forward as a user might edit it in place: the weights squared and renormalised."""
    e = torch.bmm(query, keys.transpose(1, 2)).masked_fill(~mask.unsqueeze(1), float("-inf"))
    alpha = torch.softmax(e, dim=-1) ** 2
    alpha = alpha / alpha.sum(-1, keepdim=True)
    return torch.bmm(alpha, values) + 0.1, alpha


@pytest.mark.parametrize("edit", ["subclass", "in place"])
def test_an_edited_attention_makes_its_fast_path_step_aside(edit, monkeypatch):
    """A subclassed or edited attention turns the fast step off whole (its split of W_c assumes
    a_t = alpha_t . h); the encoder's path stays, and training and decoding give the edited model's own
    results."""
    model = model_of(att="dot")
    if edit == "subclass":
        model.decoder.attention = ScaledDot("dot", 24, 24)
    else:
        monkeypatch.setattr(Attention, "forward", scaled_forward)
        assert not written_for("decoder_step") and written_for("encoder")
    plain = copy.deepcopy(model).train()
    fast = copy.deepcopy(model).train()
    accelerate(fast)
    src, src_len, tgt = batch()
    (out_a, grad_a), (out_b, grad_b) = (outputs_and_gradients(m, src, src_len, tgt) for m in (plain, fast))
    assert_close(out_a + list(grad_a), out_b + list(grad_b), 1e-5)
    decoding = Decoding(fast.eval())
    assert decoding.paths == (["encoder_tables"] if packing_available() else [])
    plain.eval()
    y = torch.randint(4, 25, (3, 5), generator=torch.Generator().manual_seed(2))
    assert_close(steps_of(decoding, fast, src, src_len, y), steps_of(plain, plain, src, src_len, y), 1e-5)
    src, src_len, limit = sources(12, seed=5)
    got = beam_search(decoding, src, src_len, limit, beam=3, width=4)
    ref = beam_search(plain, src, src_len, limit, beam=3, width=4)
    assert [n[0].ids for n in got] == [n[0].ids for n in ref]


def test_an_edited_encoder_or_step_keeps_its_own_code(monkeypatch):
    """An edited Encoder.forward keeps the encoder as it is in training (no FastEncoder) and decoding (no
    tables); an edited Decoder.step turns the whole prepared step off."""
    real = Encoder.forward

    def forward(self, src, src_len):
        memory, final = real(self, src, src_len)
        return memory * 0.5, final

    monkeypatch.setattr(Encoder, "forward", forward)
    model = model_of()
    assert "FastEncoder" not in accelerate(model)
    decoding = Decoding(model.eval())
    assert "encoder_tables" not in decoding.paths and "decoder_cells" in decoding.paths
    src, src_len, _ = batch()
    y = torch.randint(4, 25, (2, 5), generator=torch.Generator().manual_seed(2))
    assert_close(steps_of(decoding, model, src, src_len, y), steps_of(model, model, src, src_len, y), 1e-5)
    monkeypatch.undo()
    from seqattn.model.decoder import Decoder

    step = Decoder.step
    monkeypatch.setattr(Decoder, "step", lambda self, *a, **k: step(self, *a, **k))
    assert Decoding(model_of().eval()).paths == (["encoder_tables"] if packing_available() else [])


def test_rnns_run_in_float32_under_autocast():
    """Autocast keeps bf16 for the matrix products around the fast RNNs, not for the RNNs (whose CUDA
    autocast rule is fp16 without loss scaling): the encoder's states are the float32 ones, bit for bit."""
    model = model_of()
    accelerate(model)
    model.eval()
    src, src_len, tgt = batch()
    ref = model.encode(src, src_len)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        enc = model.encode(src, src_len)
        logits, _ = model(src, src_len, tgt)
    assert enc.memory.dtype == torch.float32 and torch.equal(enc.memory, ref.memory)
    assert all(torch.equal(a, b) for a, b in zip(enc.state, ref.state))
    assert logits.dtype == torch.bfloat16                    # the output layer still runs in bf16


@pytest.mark.skipif(not packing_available(), reason="this torch has no oneDNN linear operators")
@pytest.mark.parametrize("bidirectional", [True, False])
def test_encoder_tables_equal_torchs_packed_lstm(bidirectional):
    """Encoding from tables (input projections looked up, both directions in one loop) gives torch's packed
    LSTM's memory (zeros past each end, rows in the batch's order) and final h and c."""
    torch.manual_seed(5)
    enc = Encoder(40, 16, 12, 1, bidirectional, "lstm", 0.0).eval()
    lengths = torch.tensor([3, 9, 1, 9, 4, 2, 6])
    src = torch.randint(4, 40, (7, 11))                                  # padded past the longest, too
    src[torch.arange(11) >= lengths.unsqueeze(1)] = 0
    tables = EncoderTables.of(enc)
    assert tables.table.shape == (40 * (2 if bidirectional else 1), 4 * 12) and not tables.filled.any()
    with torch.no_grad():
        (mem, (h, c)), (ref_mem, (ref_h, ref_c)) = tables(src, lengths), enc(src, lengths)
    assert torch.equal(tables.filled.nonzero().squeeze(1), src.unique())   # the rows of the ids met, only
    assert mem.shape == ref_mem.shape == (7, 11, 24 if bidirectional else 12)
    assert torch.allclose(mem, ref_mem, atol=1e-6) and torch.allclose(h, ref_h, atol=1e-6)
    assert torch.allclose(c, ref_c, atol=1e-6) and h.shape == ref_h.shape
    assert mem[2, 1:].abs().sum() == 0                                   # past the end of a 1-token sentence
    assert EncoderTables.of(Encoder(40, 16, 12, 1, True, "gru", 0.0)) is None
    assert EncoderTables.of(Encoder(40, 16, 12, 2, True, "lstm", 0.0)) is None


def test_a_decoding_snapshot_multiplies_by_its_own_packed_copy():
    """Decoding keeps snapshots: the step multiplies by the packed copy, not the module."""
    if not packing_available():
        pytest.skip("this torch has no oneDNN linear operators")
    model = model_of(tgt_vocab=12).eval()
    decoding = Decoding(model)
    out = model.decoder.out
    decoding.out = pack(torch.zeros_like(out.weight), out.bias)
    src, src_len, _ = batch()
    with torch.no_grad():
        enc = decoding.encode(src, src_len)
        logits = decoding.step(torch.full((5,), 2), state_of(enc), enc)[0]
        assert torch.allclose(logits, out.bias.expand(5, -1))
        with torch.enable_grad():   # with gradients, or in training, the model's code runs on the model's state
            state = state_of(enc)
            assert torch.equal(decoding.step(torch.full((5,), 2), state, enc)[0],
                               model.step(torch.full((5,), 2), state, enc.enc)[0])


def test_pack_applies_to_float32_cpu_weights_only(monkeypatch):
    w = torch.randn(6, 4)
    assert pack(w.double()) is None and pack(w.bfloat16()) is None
    assert pack(w, torch.zeros(6, dtype=torch.float64)) is None
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: False)
    assert pack(w) is None                                          # a torch without oneDNN: the modules as they are
    assert Decoding(model_of().eval()).paths == ["decoder_cells", "decoder_table"]


def test_the_encoder_trains_through_the_packed_path_on_the_cpu(monkeypatch):
    import seqattn.fast.rnn as rnn_module

    calls = []
    real = rnn_module.packed_rnn
    monkeypatch.setattr(rnn_module, "packed_rnn", lambda *a: calls.append(1) or real(*a))
    model = model_of()
    accelerate(model)
    src, src_len, tgt = batch()
    with torch.no_grad():
        ref, _ = model(src, src_len, tgt)          # inference: torch's packed RNN
    assert calls == []
    logits, _ = model(src, src_len, tgt)           # training: the split-based path, same numbers
    assert calls == [1] and torch.allclose(logits, ref, atol=1e-5)


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.3])
def test_smoothed_cross_entropy_equals_torch_value_and_gradient(smoothing):
    import torch.nn.functional as F

    from seqattn.fast.loss import smoothed_cross_entropy

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



@pytest.mark.parametrize("kind,layers,bidirectional", [("lstm", 1, True), ("gru", 1, True), ("lstm", 2, False),
                                                       ("gru", 2, True)])
@pytest.mark.parametrize("lengths", [[3, 7, 1, 7, 4, 2], [5, 7, 5, 6, 5, 5], [6, 6, 6]])
@pytest.mark.parametrize("fused_min", [1, 4, 100])
def test_packed_training_path_equals_torchs_packed_rnn(kind, layers, bidirectional, lengths, fused_min, monkeypatch):
    """seqattn's CPU training path for packed sequences computes what nn.LSTM / nn.GRU compute: outputs,
    final states (in the batch's own order) and every gradient; for an LSTM whether the steps all rows are
    alive for run in torch's fused LSTM (as many as FUSED_MIN_STEPS or more) or in seqattn's loop."""
    from torch.nn.utils.rnn import pack_padded_sequence

    from seqattn.fast import rnn as rnn_module
    from seqattn.fast.rnn import packed_rnn
    from seqattn.model.encoder import RNNS

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



@pytest.mark.parametrize("enforce_sorted,total", [(False, 7), (False, 9), (True, 7)])
def test_pad_packed_equals_torchs_pad_packed_sequence(enforce_sorted, total):
    """The gather that pads the encoder's memory gives pad_packed_sequence's tensor (zeros past each end,
    rows in the batch's order) and the same gradient."""
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    from seqattn.fast.rnn import pad_packed

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
