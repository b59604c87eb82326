"""seqattn explain: one sentence step by step, checked against the translator and the batched forward."""

import json
import math
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import reverse_pairs, write_tiny_config

from seqattn.config import load_config
from seqattn.data.batching import pad_sources
from seqattn.data.tokenizer import EOS, SOS
from seqattn.errors import SeqattnError
from seqattn.explain import SCORES, explain, render, render_step
from seqattn.train import Trainer
from seqattn.translator import Translator

MODELS = {"lstm-dot-trained": dict(model__rnn="lstm", model__attention="dot", train__max_steps=80),
          "gru-none": dict(model__rnn="gru", model__attention="none", train__max_steps=10),
          "general-feeding-2layers": dict(model__attention="general", model__input_feeding=True, model__layers=2,
                                          train__max_steps=10)}
EVERY = pytest.mark.parametrize("model", list(MODELS), indirect=True)
TRAINED = pytest.mark.parametrize("model", ["lstm-dot-trained"], indirect=True)   # the one that learns


@pytest.fixture(scope="module")
def model(request, tmp_path_factory):
    """(translator, pairs, model directory) of MODELS[the test's parameter], trained once per module."""
    tmp = tmp_path_factory.mktemp("explain")
    pairs = reverse_pairs(40, seed=3)
    path = write_tiny_config(tmp, pairs, train__valid_every=40, **MODELS[request.param])
    Trainer(load_config(path)).run()
    return Translator.load(tmp / "model", device="cpu"), pairs, tmp / "model"


@EVERY
def test_free_decoding_is_greedy_search_and_the_context_vector_is_the_decoders_first_state(model):
    translator, pairs, _ = model
    for src, _ in pairs[:4]:
        e = explain(translator, src)
        assert e.output == translator.translate([src])[0].text                # the search, through its fast path
        assert e.free[0].input == "<sos>" and [s.input for s in e.free[1:]] == [s.output for s in e.free[:-1]]
        assert e.source_pieces == translator.tok.src.pieces(translator.tok.src.encode([src])[0]) + ["<eos>"]
        ids, lens = pad_sources(translator.tok.src.encode([src]))
        state = translator.model.encode(ids, lens).state
        h = state[0] if isinstance(state, tuple) else state
        assert torch.allclose(torch.tensor(e.context), h[-1, 0], atol=1e-4)
        assert (e.cell is None) == (translator.cfg.model.rnn == "gru")
        attends = translator.cfg.model.attention != "none"
        assert all((s.attends is not None) == attends for s in e.free)
        assert all(s.attends in e.source_pieces for s in e.free if attends)


@EVERY
def test_teacher_forcing_feeds_the_reference_and_its_loss_is_the_forced_score(model):
    translator, pairs, _ = model
    src, ref = pairs[0]
    wrong = " ".join(reversed(ref.split()))                                     # a reference the model won't write
    for target in (ref, wrong):
        e = explain(translator, src, reference=target)
        pieces = translator.tok.tgt.pieces(translator.tok.tgt.encode([target])[0]) + ["<eos>"]
        assert [s.reference for s in e.forced] == pieces
        assert [s.input for s in e.forced] == ["<sos>"] + pieces[:-1]
        forced = translator.forced_scores([src], [target])[0]
        assert math.isclose(e.forced_loss, -forced["logprob"] / forced["tokens"], abs_tol=2e-4)
        by_hand = -sum(math.log(s.reference_prob) for s in e.forced) / len(e.forced)
        assert math.isclose(e.forced_loss, by_hand, rel_tol=1e-5)


@TRAINED
def test_a_trained_model_writes_the_reference_and_forcing_changes_nothing_then(model):
    translator, pairs, _ = model
    right = [(s, r) for s, r in pairs if translator.translate([s])[0].text == r]
    assert right, "the 80-step reversal model should get some pairs right"
    e = explain(translator, *right[0])
    assert [s.output for s in e.forced] == [s.output for s in e.free] == [s.reference for s in e.forced]
    text = render(e)
    assert "free decoding (test time)" in text and "teacher forcing (training)" in text and "≠" not in text


@TRAINED
def test_the_cli_prints_the_steps_and_json(model):
    translator, pairs, model_dir = model
    src, ref = pairs[1]
    run = [sys.executable, "-m", "seqattn", "explain", str(model_dir), src, "--reference", ref, "--device", "cpu"]
    out = subprocess.run(run + ["--numbers", "3"], capture_output=True, text=True, check=True).stdout
    assert "context vector" in out and f"output: {explain(translator, src).output}" in out
    assert len(out.split("first 3: ")[1].split("...")[0].split()) == 3
    data = json.loads(subprocess.run(run + ["--json"], capture_output=True, text=True, check=True).stdout)
    assert data["source_pieces"][-1] == "<eos>" and len(data["forced"]) == len(translator.tok.tgt.encode([ref])[0]) + 1
    bad = subprocess.run([sys.executable, "-m", "seqattn", "explain", str(model_dir / "nope"), src],
                         capture_output=True, text=True)
    assert bad.returncode != 0 and len(bad.stderr.strip().splitlines()) == 1 and "nope" in bad.stderr


# --- `explain --step`: every quantity of one step, recomputed by hand in numpy from the weights -------------

def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _cell(rnn: str, sd: dict, name: str, x, state, suffix: str = ""):
    """One step of torch's LSTM (gates i, f, g, o) or GRU (r, z, n) `name` (suffix "_reverse": its backward
    direction) by hand: return (output, new state)."""
    wih, whh = sd[f"{name}.weight_ih_l0{suffix}"], sd[f"{name}.weight_hh_l0{suffix}"]
    bih, bhh = sd[f"{name}.bias_ih_l0{suffix}"], sd[f"{name}.bias_hh_l0{suffix}"]
    if rnn == "lstm":
        h, c = state
        i, f, g, o = np.split(wih @ x + bih + whh @ h + bhh, 4)
        c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
        h = _sigmoid(o) * np.tanh(c)
        return h, (h, c)
    (h,) = state
    xr, xz, xn = np.split(wih @ x + bih, 3)
    hr, hz, hn = np.split(whh @ h + bhh, 3)
    r, z = _sigmoid(xr + hr), _sigmoid(xz + hz)
    h = (1 - z) * np.tanh(xn + r * hn) + z * h
    return h, (h,)


def _by_hand(model, src_ids: list[int], steps: int, rnn: str, score: str, feeding: bool,
             reference: list[int] | None) -> dict:
    """Run the model by hand (one layer, bidirectional encoder) on src_ids for `steps` decoder steps from
    <sos>, fed the reference's tokens (teacher forcing) or, without one, its own most likely ones; return
    the quantities of the last step and the ids fed."""
    sd = {k: v.double().numpy() for k, v in model.state_dict().items()}

    n_states = 2 if rnn == "lstm" else 1
    x = sd["encoder.embed.weight"][src_ids]
    hidden = sd["encoder.rnn.weight_hh_l0"].shape[1]
    state, forward = (np.zeros(hidden),) * n_states, []
    for xi in x:
        h, state = _cell(rnn, sd, "encoder.rnn", xi, state)
        forward.append(h)
    final_fw = state
    state, backward = (np.zeros(hidden),) * n_states, []
    for xi in x[::-1]:
        h, state = _cell(rnn, sd, "encoder.rnn", xi, state, "_reverse")
        backward.append(h)
    memory = np.concatenate([np.array(forward), np.array(backward[::-1])], axis=1)   # h_i = [->h_i; <-h_i]
    state = tuple(np.concatenate([f, b]) for f, b in zip(final_fw, state))            # [->h_N; <-h_1] (and c)
    assert "bridge.0.weight" not in sd                                                # the sizes agree
    s_tilde = np.zeros(sd["decoder.out.weight"].shape[1])
    fed, probs = [SOS], None
    for t in range(steps):
        if t:
            fed.append(reference[t - 1] if reference is not None else int(np.argmax(probs)))
        inp = sd["decoder.embed.weight"][fed[-1]]
        if feeding:
            inp = np.concatenate([inp, s_tilde])
        s, state = _cell(rnn, sd, "decoder.rnn", inp, state)
        if score == "dot":
            e = memory @ s
        elif score == "general":
            e = (memory @ sd["decoder.attention.w_a.weight"].T) @ s
        else:
            q = sd["decoder.attention.w_q.weight"] @ s + sd["decoder.attention.w_q.bias"]
            e = np.tanh(q + memory @ sd["decoder.attention.w_k.weight"].T) @ sd["decoder.attention.v_a.weight"][0]
        alpha = np.exp(e - e.max()) / np.exp(e - e.max()).sum()
        a = alpha @ memory
        joined = np.concatenate([a, s])
        s_tilde = np.tanh(sd["decoder.combine.weight"] @ joined + sd["decoder.combine.bias"])
        logits = sd["decoder.out.weight"] @ s_tilde + sd["decoder.out.bias"]
        probs = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    return {"state": s, "scores": e, "weights": alpha, "value": a, "joined": joined, "attentional": s_tilde,
            "probs": probs, "fed": fed}


@pytest.mark.parametrize("setting", [dict(model__rnn="lstm", model__attention="dot"),
                                     dict(model__rnn="gru", model__attention="general"),
                                     dict(model__rnn="lstm", model__attention="concat", model__input_feeding=True)],
                         ids=lambda s: s["model__attention"])
def test_every_quantity_of_a_step_is_the_hand_computed_one(tmp_path, setting):
    pairs = reverse_pairs(40, seed=5)
    path = write_tiny_config(tmp_path, pairs, train__max_steps=20, train__valid_every=20,
                             model__enc_hidden_size=24, model__dec_hidden_size=48, **setting)
    Trainer(load_config(path)).run()
    translator = Translator.load(tmp_path / "model", device="cpu")
    model, tok = translator.model, translator.tok
    rnn, score, feeding = setting["model__rnn"], setting["model__attention"], setting.get("model__input_feeding",
                                                                                           False)
    src, ref = pairs[2]
    src_ids = tok.src.encode([src])[0] + [EOS]
    targets = tok.tgt.encode([ref])[0] + [EOS]
    free_steps = len(explain(translator, src).free)
    for reference, t in [(ref, 1), (ref, 3), (ref, len(targets)), (None, 1), (None, free_steps)]:
        e = explain(translator, src, reference=reference, step=t)
        d = e.detail
        hand = _by_hand(model, src_ids, t, rnn, score, feeding, None if reference is None else targets)
        assert [s.input for s in (e.forced if reference else e.free)[:t]] == [_piece_of(tok, y) for y in hand["fed"]]
        assert d.step == t and d.teacher_forcing == (reference is not None) and d.score == score
        assert d.input_id == hand["fed"][-1]
        for name in ("state", "scores", "weights", "value", "joined", "attentional"):
            assert np.allclose(getattr(d, name), hand[name], atol=2e-5), (name, t)
        assert math.isclose(sum(d.weights), 1.0, abs_tol=1e-5)
        best = np.argsort(-hand["probs"])[:5]
        assert [c.id for c in d.top] == list(best)
        assert np.allclose([c.prob for c in d.top], hand["probs"][best], atol=2e-5)
        text = render_step(e, numbers=4)           # what is printed is those numbers
        rows = [line.split() for line in text.splitlines() if re.match(r"  \d+  ", line)]
        assert [float(r[2]) for r in rows] == pytest.approx(hand["scores"], abs=1.1e-3)
        assert f"e_t,i = {SCORES[score]}" in text and f"{np.linalg.norm(hand['attentional']):.2f}" in text


def _piece_of(tok, i: int) -> str:
    return {SOS: "<sos>", EOS: "<eos>"}.get(i) or tok.tgt.pieces([i])[0]


@EVERY
def test_a_step_without_attention_and_a_step_past_the_end(model):
    translator, pairs, model_dir = model
    src, ref = pairs[0]
    e = explain(translator, src, step=1)
    d = e.detail
    attends = translator.cfg.model.attention != "none"
    assert (d.scores is not None) == attends and (d.value is not None) == attends
    if not attends:
        assert d.attentional == pytest.approx(d.state) and "no attention" in render_step(e)
    probs = sorted((c.prob for c in d.top), reverse=True)
    assert [c.prob for c in d.top] == probs and probs[0] == pytest.approx(e.free[0].prob, abs=1e-6)
    with pytest.raises(SeqattnError, match=r"--step 99: teacher forcing of this sentence has steps 1 to \d+"):
        explain(translator, src, reference=ref, step=99)
    out = subprocess.run([sys.executable, "-m", "seqattn", "explain", str(model_dir), src, "--step", "99",
                          "--device", "cpu"], capture_output=True, text=True)
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "free decoding of this sentence" in out.stderr
    data = json.loads(subprocess.run([sys.executable, "-m", "seqattn", "explain", str(model_dir), src, "--step", "1",
                                      "--json", "--device", "cpu"], capture_output=True, text=True,
                                     check=True).stdout)
    assert data["detail"]["state"] == pytest.approx(d.state) and len(data["detail"]["top"]) == 5
