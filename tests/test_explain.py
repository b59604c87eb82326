"""seqattn explain: one sentence step by step, checked against the translator and the batched forward."""

import json
import math
import subprocess
import sys

import pytest
import torch
from conftest import reverse_pairs, write_tiny_config

from seqattn.config import load_config
from seqattn.data.batching import pad_sources
from seqattn.explain import explain, render
from seqattn.train import Trainer
from seqattn.translator import Translator


@pytest.fixture(scope="module", params=[dict(model__rnn="lstm", model__attention="dot", train__max_steps=80),
                                        dict(model__rnn="gru", model__attention="none", train__max_steps=10),
                                        dict(model__attention="general", model__input_feeding=True,
                                             model__layers=2, train__max_steps=10)])
def model(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("explain")
    pairs = reverse_pairs(40, seed=3)
    path = write_tiny_config(tmp, pairs, train__valid_every=40, **request.param)
    Trainer(load_config(path)).run()
    return Translator.load(tmp / "model", device="cpu"), pairs, tmp / "model"


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


def test_a_trained_model_writes_the_reference_and_forcing_changes_nothing_then(model):
    translator, pairs, _ = model
    if translator.cfg.model.attention != "dot":
        pytest.skip("only the trained model")
    right = [(s, r) for s, r in pairs if translator.translate([s])[0].text == r]
    assert right, "the 80-step reversal model should get some pairs right"
    e = explain(translator, *right[0])
    assert [s.output for s in e.forced] == [s.output for s in e.free] == [s.reference for s in e.forced]
    text = render(e)
    assert "free decoding (test time)" in text and "teacher forcing (training)" in text and "≠" not in text


def test_the_cli_prints_the_steps_and_json(model):
    translator, pairs, model_dir = model
    if translator.cfg.model.attention != "dot":
        pytest.skip("one model is enough for the command line")
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
