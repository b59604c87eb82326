"""The model: shapes, the context vector, packing, and batched training == step-by-step decoding."""

import pytest
import torch

from seqattn.config import ModelConfig
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
        step_logits, state, feed_v, step_alpha = model.step(tgt[:, t], state, enc, feed_v)
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
