"""Luong attention against numbers computed by hand."""

import math

import pytest
import torch

from seqattn.config import ModelConfig
from seqattn.model.attention import Attention
from seqattn.model.seq2seq import Seq2Seq


def test_dot_attention_by_hand():
    # s = [1, 0]; h1 = [1, 0], h2 = [0, 1], h3 = padding. Scores 1, 0, -inf.
    att = Attention("dot", 2, 2)
    s = torch.tensor([[[1.0, 0.0]]])
    h = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [5.0, 5.0]]])
    mask = torch.tensor([[True, True, False]])
    context, alpha = att(s, att.keys(h), h, mask)
    e = math.e
    assert alpha.shape == (1, 1, 3)
    assert alpha[0, 0].tolist() == pytest.approx([e / (e + 1), 1 / (e + 1), 0.0], abs=1e-7)
    assert alpha[0, 0, 2].item() == 0.0  # exactly zero, not just small
    assert context[0, 0].tolist() == pytest.approx([e / (e + 1), 1 / (e + 1)], abs=1e-7)


def test_general_and_concat_scores_by_hand():
    torch.manual_seed(0)
    s = torch.randn(1, 1, 3)
    h = torch.randn(1, 4, 3)
    mask = torch.ones(1, 4, dtype=torch.bool)
    gen = Attention("general", 3, 3).requires_grad_(False)
    _, alpha = gen(s, gen.keys(h), h, mask)
    W = gen.w_a.weight  # maps key -> query space: score = s . (W h)
    e = [float(s[0, 0] @ (W @ h[0, i])) for i in range(4)]
    z = sum(math.exp(x) for x in e)
    assert alpha[0, 0].tolist() == pytest.approx([math.exp(x) / z for x in e], abs=1e-6)

    cat = Attention("concat", 3, 3).requires_grad_(False)
    _, alpha = cat(s, cat.keys(h), h, mask)
    e = [float(cat.v_a.weight[0] @ torch.tanh(cat.w_q.weight @ s[0, 0] + cat.w_q.bias + cat.w_k.weight @ h[0, i]))
         for i in range(4)]
    z = sum(math.exp(x) for x in e)
    assert alpha[0, 0].tolist() == pytest.approx([math.exp(x) / z for x in e], abs=1e-6)


def test_decoder_output_layer_by_hand():
    """s~ = tanh(W_c [a; s] + b_c), y = softmax(W_y s~ + b_y) with set weights, through the real decoder."""
    cfg = ModelConfig(rnn="gru", emb_size=2, enc_hidden_size=2, bidirectional=False, dec_hidden_size=2,
                      attention="dot", dropout=0.0)
    model = Seq2Seq(cfg, 6, 3).eval()
    dec = model.decoder
    with torch.no_grad():
        dec.combine.weight.copy_(torch.tensor([[1.0, 0.0, 0.5, 0.0], [0.0, 1.0, 0.0, -0.5]]))
        dec.combine.bias.copy_(torch.tensor([0.1, -0.1]))
        dec.out.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))
        dec.out.bias.copy_(torch.tensor([0.0, 0.2, -0.1]))
    s = torch.tensor([[[1.0, 0.0]]])
    memory = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    mask = torch.ones(1, 2, dtype=torch.bool)
    s_tilde, alpha = dec.attend(s, memory, dec.keys(memory), mask)
    e = math.e
    a = [e / (e + 1), 1 / (e + 1)]
    st = [math.tanh(a[0] + 0.5 * 1.0 + 0.1), math.tanh(a[1] - 0.5 * 0.0 - 0.1)]
    assert s_tilde[0, 0].tolist() == pytest.approx(st, abs=1e-6)
    logits = dec.out(s_tilde)[0, 0]
    z = [st[0], st[1] + 0.2, st[0] + st[1] - 0.1]
    assert logits.tolist() == pytest.approx(z, abs=1e-6)
    probs = torch.softmax(logits, -1).tolist()
    total = sum(math.exp(x) for x in z)
    assert probs == pytest.approx([math.exp(x) / total for x in z], abs=1e-6)


@pytest.mark.parametrize("score", ["dot", "general", "concat"])
def test_padding_gets_zero_weight_and_rows_sum_to_one(score):
    torch.manual_seed(1)
    att = Attention(score, 8, 8)
    h = torch.randn(3, 5, 8)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0]], dtype=torch.bool)
    _, alpha = att(torch.randn(3, 4, 8), att.keys(h), h, mask)
    assert alpha.shape == (3, 4, 5)
    assert torch.all(alpha.masked_select(~mask.unsqueeze(1).expand_as(alpha)) == 0)
    assert torch.allclose(alpha.sum(-1), torch.ones(3, 4), atol=1e-6)
