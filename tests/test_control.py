"""Controlled decoding: target prefixes (forced, then searched) and word alignments from attention, through
the search, the Translator, the CLI, the HTTP API and the torch-free runtime."""

import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import assert_one_line_error, random_model, reverse_pairs, run, sources, write_tiny_config
from fastapi.testclient import TestClient

from seqattn.config import load_config
from seqattn.data.batching import pad_sources
from seqattn.errors import SeqattnError
from seqattn.search import Sampling, beam_search, greedy, max_lengths
from seqattn.train import Trainer
from seqattn.translator import SearchOptions, Translator
from seqattn_runtime.align import pharaoh, word_of, word_weights
from seqattn_runtime.rules import EOS, SOS, length_penalty
from seqattn_runtime.serve.app import create_app
from seqattn_runtime.serve.backend import RuntimeTranslator


def forced_logprob(model, src, src_len, row: int, ids: list[int], finished: bool) -> float:
    """Return the model's log-probability of ids (then <eos> when finished) for sentence `row`, stepping
    Seq2Seq.step by hand."""
    enc = model.encode(src[row : row + 1], src_len[row : row + 1])
    state, feed, y, total = enc.state, model.initial_feed(1, src.device), torch.tensor([SOS]), 0.0
    with torch.no_grad():
        for tok in ids + ([EOS] if finished else []):
            logits, state, feed, _ = model.step(y, state, enc, feed)
            total += float(torch.log_softmax(logits.float(), -1)[0, tok])
            y = torch.tensor([tok])
    return total


def test_forcing_the_models_own_output_gives_it_back_greedy_and_sampled():
    model = random_model()
    src, src_len, limit = sources(16, seed=4)
    own = greedy(model, src, src_len, limit)
    again = greedy(model, src, src_len, limit, prefixes=[h.ids for h in own])
    for a, b in zip(own, again):
        assert a.ids == b.ids and a.finished == b.finished and a.score == pytest.approx(b.score, abs=1e-5)
        assert np.allclose(a.attention, b.attention)
    sampling = Sampling(temperature=1.5, seed=3)
    drawn = greedy(model, src, src_len, limit, sampling=sampling)
    half = [h.ids[: len(h.ids) // 2] for h in drawn]           # the draws are keyed by position: the rest follows
    redrawn = greedy(model, src, src_len, limit, sampling=sampling, prefixes=half)
    assert [h.ids for h in redrawn] == [h.ids for h in drawn]


@pytest.mark.parametrize("beam", [1, 4])
def test_a_prefix_the_model_would_never_write_is_honoured_and_scored(beam):
    model = random_model()
    src, src_len, limit = sources(10, seed=5)
    own = greedy(model, src, src_len, limit)
    # each sentence's prefix: 3 tokens the model finds least likely after <sos> (never <eos>), then none
    enc = model.encode(src, src_len)
    with torch.no_grad():
        first, _, _, _ = model.step(torch.full((10,), SOS), enc.state, enc, model.initial_feed(10, src.device))
    unlikely = first.argsort(-1)[:, :4].tolist()
    prefixes = [[t for t in row if t != EOS][:3] for row in unlikely]
    prefixes[1] = []                                              # one sentence without a prefix
    got = beam_search(model, src, src_len, limit, beam, alpha=1.0, nbest=beam, prefixes=prefixes) if beam > 1 \
        else [[h] for h in greedy(model, src, src_len, limit, prefixes=prefixes)]
    for i, nbest in enumerate(got):
        assert len(nbest) == beam
        for h in nbest:
            assert h.ids[: len(prefixes[i])] == prefixes[i]
            raw = forced_logprob(model, src, src_len, i, h.ids, h.finished)
            penalty = length_penalty(len(h.ids) + h.finished, 1.0) if beam > 1 else 1.0
            assert h.score == pytest.approx(raw / penalty, abs=1e-4)
        if beam > 1:
            assert [h.score for h in nbest] == sorted((h.score for h in nbest), reverse=True)
    assert got[1][0].ids == own[1].ids or beam > 1                # no prefix: greedy's own output
    long = [[5, 6, 7, 8] * 10] * 10                               # longer than every limit: the whole output
    for h in greedy(model, src, src_len, limit, prefixes=long):
        assert h.ids == long[0] and not h.finished


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("control")
    pairs = reverse_pairs(60, seed=11)
    Trainer(load_config(write_tiny_config(tmp, pairs, train__max_steps=200, train__valid_every=100))).run()
    return Translator.load(tmp / "model", device="cpu"), pairs, tmp


def test_on_the_reversal_task_a_prefix_steers_the_rest_and_the_engine_steps_aside(trained):
    translator, pairs, _ = trained
    lines, refs = [s for s, _ in pairs[:20]], [t for _, t in pairs[:20]]
    assert sum(o.text == r for o, r in zip(translator.translate(lines), refs)) >= 18
    first = [r.split()[0] for r in refs]
    steered = translator.translate(lines, prefixes=first)
    assert sum(o.text == r for o, r in zip(steered, refs)) >= 18
    wrong = ["lion" if f != "lion" else "apple" for f in first]
    for options in (None, SearchOptions(beam=3, nbest=2)):
        outs = translator.translate_n(lines, options=options, prefixes=wrong, attention=True)
        for nbest, w in zip(outs, wrong):
            assert all(o.text.split()[0] == w for o in nbest)
            assert len(nbest[0].attention) == len(nbest[0].tgt_tokens)
    mixed = translator.translate(lines[:3] + [""], prefixes=["", first[1], "", "cat"])
    assert mixed[0].text == translator.translate([lines[0]])[0].text and mixed[1].text.startswith(first[1])
    assert mixed[3].text == ""                                     # an empty source is not decoded
    with pytest.raises(Exception, match="2 prefixes for 3 lines"):
        translator.translate(lines[:3], prefixes=["a", "b"])


def test_alignments_of_the_reversal_task_point_at_the_mirrored_word(trained):
    """Target word j of a reversal copies source word n-1-j: the attention must say so."""
    translator, pairs, _ = trained
    outs = translator.translate([s for s, _ in pairs], attention=True)
    right = total = 0
    for (src, ref), o in zip(pairs, outs):
        if o.text != ref:
            continue
        n = len(src.split())
        links = [tuple(map(int, link.split("-"))) for link in pharaoh(o.src_tokens, o.tgt_tokens, o.attention).split()]
        assert [j for _, j in links] == list(range(n))            # one link per target word, in order
        right += sum(i == n - 1 - j for i, j in links)
        total += n
    assert total >= 100 and right / total >= 0.95, (right, total)


def test_pharaoh_merges_pieces_into_words_and_drops_eos():
    src = ["▁Ein", "▁Mann", "▁fähr", "t", ".", "<eos>"]
    tgt = ["▁A", "▁man", "▁driv", "es", ".", "<eos>"]
    assert word_of(src[:-1]).tolist() == [0, 1, 2, 2, 2]
    att = np.zeros((6, 6))
    att[0, 1] = att[1, 0] = 1.0                    # "A" looks at "Mann", "man" at "Ein"
    att[2, 2], att[2, 3] = 0.5, 0.5                # "driv" at both pieces of "fährt."
    att[3, 2], att[3, 0] = 0.6, 0.4                # "es": mostly "fährt.", some "Ein"
    att[4, 4] = 1.0
    att[5, 5] = 1.0                                # <eos> row and column: dropped
    weights = word_weights(src[:-1], tgt[:-1], att)
    assert weights.shape == (3, 3) and weights[2].tolist() == pytest.approx([0.4 / 3, 0.0, 2.6 / 3])
    assert pharaoh(src, tgt, att) == "1-0 0-1 2-2"
    assert pharaoh(src, tgt, att, threshold=0.1) == "1-0 0-1 0-2 2-2"
    assert pharaoh(src, ["<eos>"], att[-1:]) == "" and pharaoh(src, tgt, None) == ""


def test_the_cli_takes_prefixes_and_prints_alignments(trained, tmp_path):
    translator, pairs, tmp = trained
    lines = [s for s, _ in pairs[:4]]
    (tmp_path / "in.txt").write_text("".join(f"{s}\n" for s in lines))
    (tmp_path / "prefix.txt").write_text("lion\n\nhat cat\n\n")
    proc = run("translate", tmp / "model", "--input", tmp_path / "in.txt", "--prefix", tmp_path / "prefix.txt",
               "--align")
    assert proc.returncode == 0, proc.stderr
    rows = [line.split("\t") for line in proc.stdout.splitlines()]
    want = translator.translate(lines, prefixes=["lion", "", "hat cat", ""], attention=True)
    assert [r[0] for r in rows] == [w.text for w in want]
    assert [r[1] for r in rows] == [pharaoh(w.src_tokens, w.tgt_tokens, w.attention) for w in want]
    assert rows[0][0].startswith("lion") and rows[2][0].startswith("hat cat")
    nbest = run("translate", tmp / "model", "--input", tmp_path / "in.txt", "--prefix", tmp_path / "prefix.txt",
                "--beam", "3", "--nbest", "2", "--align-threshold", "0.3")
    assert nbest.returncode == 0 and all(len(r.split("\t")) == 4 for r in nbest.stdout.splitlines())
    (tmp_path / "short.txt").write_text("lion\n")
    assert_one_line_error(run("translate", tmp / "model", "--input", tmp_path / "in.txt", "--prefix",
                              tmp_path / "short.txt"), "short.txt: 1 prefixes for 4 input lines")


def test_the_api_takes_prefixes_and_answers_alignments(trained):
    translator, pairs, _ = trained
    client = TestClient(create_app(translator))
    src = pairs[0][0]
    got = client.post("/translate", json={"text": src, "prefix": "lion", "align": True}).json()["translations"][0]
    want = translator.translate([src], prefixes=["lion"], attention=True)[0]
    assert got["translation"] == want.text and got["translation"].startswith("lion")
    assert got["alignment"] == pharaoh(want.src_tokens, want.tgt_tokens, want.attention) and "attention" not in got
    many = client.post("/translate", json={"texts": [src, pairs[1][0]], "prefixes": ["", "cat"], "beam": 2}).json()
    assert many["translations"][1]["translation"].startswith("cat")
    assert many["translations"][0]["translation"] == translator.translate([src])[0].text
    for body, message in (({"text": src, "prefixes": ["a"]}, "'prefixes' with 'texts'"),
                          ({"texts": [src], "prefixes": ["a", "b"]}, "2 prefixes for 1 texts")):
        answer = client.post("/translate", json=body)
        assert answer.status_code == 422 and message in answer.json()["error"]


def test_the_runtime_forces_prefixes_and_aligns_as_pytorch_does(trained, tmp_path):
    pytest.importorskip("onnxruntime")
    from seqattn.export import export_model_dir
    from seqattn_runtime import Runtime

    translator, pairs, tmp = trained
    export_model_dir(tmp / "model", tmp_path / "export")
    runtime = Runtime(tmp_path / "export")
    lines = [s for s, _ in pairs[:6]]
    prefixes = ["lion", "", "hat cat", "egg", "", "kite kite kite"]
    for beam, nbest in ((1, 1), (3, 2)):
        want = translator.translate_n(lines, attention=True, options=SearchOptions(beam=beam, nbest=nbest),
                                      prefixes=prefixes)
        got = runtime.translate_n(lines, beam, nbest, attention=True, prefixes=prefixes)
        for g_list, w_list in zip(got, want):
            for g, w in zip(g_list, w_list):
                assert g.text == w.text and abs(g.score - w.score) < 1e-4
                assert pharaoh(g.src_tokens, g.tgt_tokens, g.attention) == \
                    pharaoh(w.src_tokens, w.tgt_tokens, w.attention)
    served = TestClient(create_app(RuntimeTranslator(tmp_path / "export")))
    answer = served.post("/translate", json={"text": lines[0], "prefix": "lion", "align": True}).json()
    assert answer["translations"][0]["translation"] == want[0][0].text
    (tmp_path / "in.txt").write_text("".join(f"{s}\n" for s in lines))
    (tmp_path / "prefix.txt").write_text("".join(f"{p}\n" for p in prefixes))
    proc = subprocess.run([sys.executable, "-m", "seqattn_runtime.cli", "translate", str(tmp_path / "export"),
                           "--input", str(tmp_path / "in.txt"), "--prefix", str(tmp_path / "prefix.txt"), "--align"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    first = translator.translate(lines, prefixes=prefixes, attention=True)
    assert proc.stdout.splitlines() == [f"{w.text}\t{pharaoh(w.src_tokens, w.tgt_tokens, w.attention)}" for w in first]


def test_the_coverage_penalty_through_the_translator_cli_api_and_runtime(trained, tmp_path):
    pytest.importorskip("onnxruntime")
    from seqattn.export import export_model_dir
    from seqattn_runtime import Runtime

    translator, pairs, tmp = trained
    lines = [s for s, _ in pairs[:8]]
    options = SearchOptions(beam=3, nbest=2, coverage_penalty=0.5)
    got = translator.translate_n(lines, options=options)
    ids = translator.tok.src.encode(lines)
    src, src_len = pad_sources(ids)
    want = beam_search(translator.model, src, src_len, max_lengths(src_len, translator.cfg.decode.max_output_ratio), 3,
                      1.0, 2, coverage=0.5)
    for g_list, w_list in zip(got, want):
        assert [g.text for g in g_list] == [translator.tok.tgt.decode(w.ids) for w in w_list]
        assert [g.score for g in g_list] == pytest.approx([w.score for w in w_list], abs=1e-5)
    export_model_dir(tmp / "model", tmp_path / "export")
    runtime = Runtime(tmp_path / "export")
    for g_list, r_list in zip(got, runtime.translate_n(lines, 3, 2, coverage=0.5)):
        assert [g.text for g in g_list] == [r.text for r in r_list]
        assert [g.score for g in g_list] == pytest.approx([r.score for r in r_list], abs=1e-4)
    (tmp_path / "in.txt").write_text("".join(f"{s}\n" for s in lines))
    proc = run("translate", tmp / "model", "--input", tmp_path / "in.txt", "--beam", "3", "--nbest", "2",
               "--coverage-penalty", "0.5")
    assert proc.returncode == 0, proc.stderr
    assert [line.split("\t")[2] for line in proc.stdout.splitlines()] == [g.text for g_list in got for g in g_list]
    assert_one_line_error(run("translate", tmp / "model", "--input", tmp_path / "in.txt", "--coverage-penalty", "0.5"),
                          "--coverage-penalty must be >= 0 and needs --beam > 1")
    client = TestClient(create_app(translator))
    answer = client.post("/translate", json={"texts": lines[:2], "beam": 3, "coverage_penalty": 0.5}).json()
    assert [t["translation"] for t in answer["translations"]] == [g_list[0].text for g_list in got[:2]]
    assert client.post("/translate", json={"text": lines[0], "coverage_penalty": 0.5}).status_code == 422


def test_alternatives_are_the_models_choices_along_its_output_in_the_api_and_the_runtime(trained, tmp_path):
    pytest.importorskip("onnxruntime")
    from seqattn.export import export_model_dir
    from seqattn_runtime import Runtime

    translator, pairs, tmp = trained
    src = pairs[3][0]
    best = translator.translate([src], options=SearchOptions(alternatives=3))[0]
    pieces = translator.tok.tgt.pieces(translator.tok.tgt.encode([best.text])[0]) + ["<eos>"]
    assert len(best.alternatives) == len(pieces)
    for position, piece in zip(best.alternatives, pieces):    # greedy: each position's first choice is the output
        assert len(position) == 3 and position[0][0] == piece
        assert [p for _, p in position] == sorted((p for _, p in position), reverse=True) and position[0][1] <= 1
    prefixed = translator.translate([src], prefixes=["lion"], options=SearchOptions(alternatives=3))[0]
    assert prefixed.text.startswith("lion") and prefixed.alternatives[0] == best.alternatives[0]   # same context
    client = TestClient(create_app(translator))
    answer = client.post("/translate", json={"text": src, "alternatives": 3}).json()["translations"][0]
    assert [[a["token"] for a in pos] for pos in answer["alternatives"]] == \
        [[t for t, _ in pos] for pos in best.alternatives]
    export_model_dir(tmp / "model", tmp_path / "export")
    got = Runtime(tmp_path / "export").translate_n([src], alternatives=3)[0][0]
    assert [[t for t, _ in pos] for pos in got.alternatives] == [[t for t, _ in pos] for pos in best.alternatives]
    assert np.allclose([[p for _, p in pos] for pos in got.alternatives],
                       [[p for _, p in pos] for pos in best.alternatives], atol=1e-4)


def test_stopping_rules_through_the_translator_config_cli_api_and_runtime(trained, tmp_path):
    """Each rule reaches every path: the Translator (engine) equals the plain search with that rule; the
    model's decode section is the default; an export carries it to the runtime; the CLIs and the API take
    --stopping / --patience / stopping, and refuse what does not fit with one line."""
    pytest.importorskip("onnxruntime")
    from seqattn.config import DecodeConfig, save_config
    from seqattn.export import export_model_dir
    from seqattn.search import Stopping
    from seqattn_runtime import Runtime

    translator, pairs, tmp = trained
    lines = [s for s, _ in pairs[:12]]
    src, src_len = pad_sources(translator.tok.src.encode(lines))
    limits = max_lengths(src_len, translator.cfg.decode.max_output_ratio)
    got = {}
    for mode, patience in (("exact", None), ("heuristic", None), ("patience", 0.5)):
        got[mode] = translator.translate_n(lines, options=SearchOptions(beam=3, nbest=2, stopping=mode,
                                                                        patience=patience))
        want = beam_search(translator.model, src, src_len, limits, 3, 1.0, 2, stopping=Stopping(mode, patience or 1))
        for g_list, w_list in zip(got[mode], want):
            assert [g.text for g in g_list] == [translator.tok.tgt.decode(w.ids) for w in w_list]
            assert [g.score for g in g_list] == pytest.approx([w.score for w in w_list], abs=1e-5)
    scores = lambda results: [g.score for g_list in results for g in g_list]
    assert scores(got["patience"]) != pytest.approx(scores(got["exact"]), abs=1e-5)   # the rule reached the search
    assert translator.stopping == Stopping()
    shutil.copytree(tmp / "model", tmp_path / "patient")                    # a model whose config says patience
    cfg = load_config(tmp_path / "patient" / "config.yaml")
    cfg.decode = DecodeConfig("patience", 0.5)
    save_config(cfg, tmp_path / "patient" / "config.yaml")
    patient = Translator.load(tmp_path / "patient", device="cpu")
    assert scores(patient.translate_n(lines, options=SearchOptions(beam=3, nbest=2))) == \
        pytest.approx(scores(got["patience"]), abs=1e-5)
    with pytest.raises(SeqattnError, match="--patience needs stopping 'patience' .the stopping here is 'exact'"):
        patient.translate(lines, options=SearchOptions(beam=3, stopping="exact", patience=2.0))
    export_model_dir(tmp_path / "patient", tmp_path / "export")
    runtime = Runtime(tmp_path / "export")
    assert runtime.stopping == Stopping("patience", 0.5)
    assert scores(runtime.translate_n(lines, 3, 2)) == pytest.approx(scores(got["patience"]), abs=1e-4)
    assert scores(runtime.translate_n(lines, 3, 2, stopping=Stopping("heuristic"))) == \
        pytest.approx(scores(got["heuristic"]), abs=1e-4)
    (tmp_path / "in.txt").write_text("".join(f"{s}\n" for s in lines))
    best = [g_list[0].text for g_list in got["heuristic"]]
    proc = run("translate", tmp / "model", "--input", tmp_path / "in.txt", "--beam", "3", "--stopping", "heuristic")
    assert proc.returncode == 0 and proc.stdout.splitlines() == best, proc.stderr
    rt = [sys.executable, "-m", "seqattn_runtime.cli", "translate", str(tmp_path / "export"), "--input",
          str(tmp_path / "in.txt"), "--beam", "3"]
    proc = subprocess.run(rt + ["--stopping", "heuristic"], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.splitlines() == best, proc.stderr
    for bad, message in ((["--stopping", "early"], "--stopping must be one of exact, heuristic, patience, got 'early'"),
                         (["--stopping", "heuristic", "--patience", "2"], "--patience needs stopping 'patience'"),
                         (["--stopping", "patience", "--patience", "0"], "--patience must be > 0, got 0.0")):
        assert_one_line_error(run("translate", tmp / "model", "--input", tmp_path / "in.txt", "--beam", "3", *bad),
                              message)
        proc = subprocess.run(rt + bad, capture_output=True, text=True)
        assert proc.returncode != 0 and len(proc.stderr.strip().splitlines()) == 1
        assert proc.stderr.startswith(f"seqattn-runtime: error: {message}")
    client = TestClient(create_app(translator))
    answer = client.post("/translate", json={"texts": lines, "beam": 3, "stopping": "heuristic"}).json()
    assert [t["translation"] for t in answer["translations"]] == best
    for body in ({"text": lines[0], "beam": 3, "stopping": "early"}, {"text": lines[0], "beam": 3, "patience": 2}):
        assert client.post("/translate", json=body).status_code == 422
