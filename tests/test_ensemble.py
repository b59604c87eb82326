"""Ensemble decoding: the mean of the models' log-probabilities at every step, through every search and the
commands; an ensemble of one model (or of copies of it) is that model; mismatched vocabularies are refused."""

import json

import numpy as np
import pytest
import torch
from conftest import assert_one_line_error, model_of, reverse_pairs, run, sources, write_tiny_config

from seqattn.config import load_config
from seqattn.ensemble import Ensemble
from seqattn.fast import Decoding
from seqattn.fast import search as engine
from seqattn.search import Sampling, beam_search, greedy, state_of
from seqattn.train import Trainer
from seqattn.translator import SearchOptions, Translator


def searches(model, steps, fast: bool):
    """Greedy, beam and sampling outputs of the plain search over the model, or of the engine over steps."""
    src, src_len, limit = sources(12, seed=8)
    if not fast:
        return [greedy(model, src, src_len, limit),
                [n[0] for n in beam_search(model, src, src_len, limit, beam=3, nbest=2, alpha=1.0)],
                greedy(model, src, src_len, limit, sampling=Sampling(seed=3))]
    return [engine.greedy(steps, src, src_len, limit, width=5),
            [n[0] for n in engine.beam_search(steps, src, src_len, limit, beam=3, nbest=2, alpha=1.0, width=4)],
            engine.greedy(steps, src, src_len, limit, sampling=Sampling(seed=3), width=5)]


@pytest.mark.parametrize("copies", [1, 2])
def test_an_ensemble_of_one_model_or_copies_of_it_is_that_model(copies):
    model = model_of("lstm", "general", feed=True, tgt_vocab=12).eval()
    alone = searches(model, model, fast=False)
    together = searches(model, Ensemble([model] * (copies - 1) + [Decoding(model)]), fast=True)
    for a, b in zip(alone, together):
        assert [h.ids for h in a] == [h.ids for h in b]
        assert [h.score for h in a] == pytest.approx([h.score for h in b], abs=1e-4)
        assert all(np.allclose(x.attention, y.attention, atol=1e-5) for x, y in zip(a, b))


def test_a_step_averages_the_models_log_probabilities_and_attention():
    """Two different models (an LSTM with dot attention, a GRU with input feeding and concat): the step's
    scores are the mean of their log-softmaxes, its weights the mean of theirs; greedy's first output of each
    sentence is the argmax of that mean, and batched decoding equals decoding each sentence alone."""
    a = model_of("lstm", "dot", tgt_vocab=12, seed=1).eval()
    b = model_of("gru", "concat", feed=True, tgt_vocab=12, seed=2).eval()
    ens = Ensemble([Decoding(a), b])
    src, src_len, limit = sources(9, seed=4)
    with torch.no_grad():
        enc = ens.encode(src, src_len)
        y = torch.full((9,), 2)
        logp, _, _, alpha = ens.step(y, state_of(enc), enc, ens.initial_feed(9, torch.device("cpu")))
        ref = []
        for m in (a, b):
            e = m.encode(src, src_len)
            logits, _, _, att = m.step(y, e.state, e, m.initial_feed(9, torch.device("cpu")))
            ref.append((torch.log_softmax(logits, -1), att))
    assert torch.allclose(logp, (ref[0][0] + ref[1][0]) / 2, atol=1e-5)
    assert torch.allclose(alpha, (ref[0][1] + ref[1][1]) / 2, atol=1e-6)
    together = engine.greedy(ens, src, src_len, limit, width=4)
    assert [h.ids[0] if h.ids else 3 for h in together] == logp.argmax(-1).tolist()
    for i, h in enumerate(together):
        n = int(src_len[i])
        (alone,) = greedy(a, src[i : i + 1, :n], src_len[i : i + 1], limit[i : i + 1], steps=ens)
        assert h.ids == alone.ids and h.score == pytest.approx(alone.score, abs=1e-4)
    beams = engine.beam_search(ens, src, src_len, limit, beam=3, nbest=3, width=4)
    assert all(len(n) == 3 and n[0].score >= n[-1].score for n in beams)


@pytest.fixture(scope="module")
def two_models(tmp_path_factory):
    """Two small models trained on the same data (the same vocabularies, different seeds), and a third on other
    data (another vocabulary)."""
    tmp = tmp_path_factory.mktemp("ensemble")
    pairs = reverse_pairs(40, seed=2)
    dirs = []
    for name, seed in (("a", 1), ("b", 2)):
        (tmp / name).mkdir()
        path = write_tiny_config(tmp / name, pairs, train__max_steps=120, train__valid_every=60, train__seed=seed)
        Trainer(load_config(path)).run()
        dirs.append(tmp / name / "model")
    (tmp / "c").mkdir()
    other = [(s.upper(), t.upper()) for s, t in reverse_pairs(40, seed=5)]
    Trainer(load_config(write_tiny_config(tmp / "c", other, train__max_steps=5, train__valid_every=5))).run()
    return dirs, tmp / "c" / "model", pairs


def test_translate_evaluate_and_serve_take_an_ensemble(two_models, tmp_path):
    (a, b), _, pairs = two_models
    src = [s for s, _ in pairs[:10]]
    text = "".join(s + "\n" for s in src)
    single = run("translate", a, "--beam", "3", stdin=text)
    same = run("translate", a, "--beam", "3", "--ensemble", a, a / "best.pt", stdin=text)
    assert single.returncode == 0 and same.stdout == single.stdout          # copies of one model: that model
    both = Translator.load(a, device="cpu", ensemble=[str(b)])
    assert len(both.members) == 1 and isinstance(both._decoding(), Ensemble)
    out = both.translate(src, attention=True, options=SearchOptions(beam=3))
    assert all(len(o.attention) == len(o.tgt_tokens) and abs(sum(o.attention[0]) - 1) < 1e-3 for o in out)
    proc = run("translate", a, "--ensemble", b, "--beam", "3", stdin=text)
    assert proc.returncode == 0 and proc.stdout.splitlines() == [o.text for o in out]
    (tmp_path / "s").write_text(text)
    (tmp_path / "r").write_text("".join(t + "\n" for _, t in pairs[:10]))
    ev = run("evaluate", a, "--ensemble", b, "--src", tmp_path / "s", "--ref", tmp_path / "r", "--json")
    assert ev.returncode == 0, ev.stderr
    assert json.loads(ev.stdout.splitlines()[-1])["exact"] == pytest.approx(
        100 * sum(o.text == t for o, (_, t) in zip(both.translate(src), pairs)) / 10)
    from fastapi.testclient import TestClient

    from seqattn_runtime.serve.app import create_app

    client = TestClient(create_app(both))
    assert client.get("/info").json()["ensemble"] == 2
    got = client.post("/translate", json={"texts": src[:3], "beam": 3}).json()["translations"]
    assert [g["translation"] for g in got] == [o.text for o in out[:3]]


def test_an_ensemble_with_another_vocabulary_is_a_one_line_error(two_models):
    (a, _), other, _ = two_models
    assert_one_line_error(run("translate", a, "--ensemble", other, stdin="apple\n"), str(other), "vocabular")
    assert_one_line_error(run("translate", a, "--ensemble", a / "missing", stdin="apple\n"), "missing")
