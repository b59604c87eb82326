"""The Translator and its commands on a trained model: forced scores, live weights, `translate` and `score`,
search options."""

import json
import math

import pytest
import torch
from conftest import assert_one_line_error, run

from seqattn.data.batching import pad_sources
from seqattn.translator import SearchOptions, Translator


def test_forced_scores_equal_the_sum_of_token_log_probabilities(model_dir):
    model, pairs = model_dir
    t = Translator.load(model, device="cpu")        # the reference below steps the decoder on CPU tensors
    src, tgt = [s for s, _ in pairs[:4]], [x for _, x in pairs[:4]]
    scores = t.forced_scores(src, tgt)
    for s, y, got in zip(src, tgt, scores):
        ids, src_len = pad_sources(t.tok.src.encode([s]))
        enc = t.model.encode(ids, src_len)
        prev, state, total = 2, enc.state, 0.0
        target = t.tok.tgt.encode([y])[0] + [3]
        with torch.no_grad():
            for tok in target:
                logits, state, _, _ = t.model.step(torch.tensor([prev]), state, enc)
                total += torch.log_softmax(logits, -1)[0, tok].item()
                prev = tok
        assert got["tokens"] == len(target)
        assert got["logprob"] == pytest.approx(total, abs=1e-4)
        assert got["ppl"] == pytest.approx(math.exp(-total / len(target)), rel=1e-4)


def test_a_translator_of_a_training_model_follows_its_weights(model_dir):
    """The trainer's validation decodes with the live model: what the Translator derives from the weights
    (`fast.Decoding`) must be derived again after they change, also by a fused optimizer
    step, which changes them in place without counting a tensor version."""
    model, pairs = model_dir
    loaded = Translator.load(model, device="cpu")
    live = Translator(loaded.model, loaded.tok, loaded.cfg, loaded.device)   # as train.py builds it
    src = [s for s, _ in pairs[:12]]
    assert [o.text for o in live.translate(src)] == [o.text for o in loaded.translate(src)]
    net = loaded.model
    net.train()
    for p in net.parameters():
        p.grad = torch.randn_like(p)
    torch.optim.Adam(net.parameters(), lr=0.05, fused=True).step()
    got = live.translate(src, options=SearchOptions(beam=3))
    plain = Translator(net, loaded.tok, loaded.cfg, loaded.device)
    plain._decoding = lambda: net                            # the reference: the model's own encode and step
    ref = plain.translate(src, options=SearchOptions(beam=3))
    assert [o.text for o in got] == [o.text for o in ref]
    assert [o.score for o in got] == pytest.approx([o.score for o in ref], abs=1e-4)


def test_translate_cli_beam_nbest_sample_and_bad_lines(model_dir, tmp_path):
    model, pairs = model_dir
    text = "\n".join([pairs[0][0], "", "apple " * 150, "ζ日本 apple"]) + "\n"
    proc = run("translate", model, "--beam", "3", "--nbest", "2", "--alpha", "0.6", stdin=text)
    assert proc.returncode == 0, proc.stderr
    rows = [line.split("\t") for line in proc.stdout.splitlines()]
    assert [int(r[0]) for r in rows] == [0, 0, 1, 2, 2, 3, 3]      # the empty line: its one, empty output
    assert rows[2] == ["1", "0.0000", ""]
    assert float(rows[0][1]) >= float(rows[1][1])
    assert "input line 3 is longer than the model's 100 pieces" in proc.stderr
    greedy_out = run("translate", model, stdin=text).stdout.splitlines()
    beam1 = run("translate", model, "--beam", "1", stdin=text).stdout.splitlines()
    assert greedy_out == beam1 and len(greedy_out) == 4 and greedy_out[1] == ""
    att = tmp_path / "a.json"
    proc = run("translate", model, "--beam", "4", "--attention", att, stdin=pairs[1][0] + "\n")
    rec = json.loads(att.read_text())[0]
    assert len(rec["attention"]) == len(rec["target_tokens"]) and len(rec["attention"][0]) == len(rec["source_tokens"])
    s1 = run("translate", model, "--sample", "--num-samples", "3", "--seed", "5", "--temperature", "3",
             stdin=pairs[0][0] + "\n")
    s2 = run("translate", model, "--sample", "--num-samples", "3", "--seed", "5", "--temperature", "3",
             stdin=pairs[0][0] + "\n")
    assert s1.returncode == 0 and s1.stdout == s2.stdout and len(s1.stdout.splitlines()) == 3
    assert_one_line_error(run("translate", model, "--beam", "2", "--nbest", "3", stdin="x\n"), "--nbest")


def test_score_cli(model_dir, tmp_path):
    model, pairs = model_dir
    (tmp_path / "s").write_text("".join(s + "\n" for s, _ in pairs[:3]))
    (tmp_path / "t").write_text("".join(t + "\n" for _, t in pairs[:3]))
    proc = run("score", model, "--src", tmp_path / "s", "--tgt", tmp_path / "t", "--json")
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert [r["line"] for r in rows] == [1, 2, 3] and all(r["logprob"] < 0 and r["ppl"] >= 1 for r in rows)
    tsv = run("score", model, "--src", tmp_path / "s", "--tgt", tmp_path / "t").stdout.splitlines()
    assert tsv[0] == "line\tlogprob\ttokens\tppl" and len(tsv) == 4


def test_search_options_are_checked():
    from seqattn.errors import SeqattnError

    with pytest.raises(SeqattnError, match="--sample and --beam"):
        SearchOptions(beam=3, sample=True).check()
    with pytest.raises(SeqattnError, match="--num-samples needs --sample"):
        SearchOptions(num_samples=2).check()
