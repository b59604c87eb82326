"""The CLI end to end in a temporary directory, and its one-line errors for bad input."""

import gzip
import json
import subprocess
import sys

import pytest
import torch
from conftest import assert_one_line_error, reverse_pairs, run, write_tiny_config


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli")
    pairs = reverse_pairs(30, seed=5)
    cfg = write_tiny_config(tmp, pairs, train__max_steps=250, train__valid_every=50, train__valid_metric="exact",
                            train__early_stopping=2, train__tensorboard=True)
    proc = run("train", cfg)
    assert proc.returncode == 0, proc.stderr
    return tmp, pairs, cfg


def test_train_writes_a_complete_model_directory(trained):
    tmp, _, _ = trained
    model = tmp / "model"
    for name in ("config.yaml", "spm.model", "spm.vocab", "best.pt", "last.pt", "train_log.jsonl"):
        assert (model / name).exists(), name
    assert any((model / "tensorboard").iterdir())
    log = [json.loads(line) for line in (model / "train_log.jsonl").read_text().splitlines()]
    valid = [r for r in log if r["kind"] == "valid"]
    assert valid and {"loss", "ppl", "bleu", "chrf", "exact"} <= valid[0].keys()
    assert any(r["kind"] == "train" and r["tokens_per_s"] > 0 for r in log)


def test_translate_stdin_file_and_attention(trained):
    tmp, pairs, _ = trained
    src = [s for s, _ in pairs[:5]]
    proc = run("translate", tmp / "model", stdin="\n".join(src) + "\n")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [t for _, t in pairs[:5]]
    with gzip.open(tmp / "in.gz", "wt", encoding="utf-8") as f:
        f.write("\n".join(src) + "\n")
    att = tmp / "att.json"
    proc = run("translate", tmp / "model", "--input", tmp / "in.gz", "--attention", att)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [t for _, t in pairs[:5]]
    records = json.loads(att.read_text(encoding="utf-8"))
    assert len(records) == 5
    for r in records:
        weights = torch.tensor(r["attention"])
        assert weights.shape == (len(r["target_tokens"]), len(r["source_tokens"]))
        assert torch.allclose(weights.sum(-1), torch.ones(len(r["target_tokens"])), atol=1e-3)
        assert r["source_tokens"][-1] == "<eos>" and r["target_tokens"][-1] == "<eos>"


def test_translate_int8_matches_float(trained):
    tmp, pairs, _ = trained
    src = "\n".join(s for s, _ in pairs[:10]) + "\n"
    fp32 = run("translate", tmp / "model", stdin=src)
    int8 = run("translate", tmp / "model", "--quantize", "int8", "--beam", "3", stdin=src)
    assert int8.returncode == 0 and int8.stderr == "", int8.stderr
    same = sum(a == b for a, b in zip(int8.stdout.splitlines(), fp32.stdout.splitlines()))
    assert same >= 9, (int8.stdout, fp32.stdout)


def test_quantize_int8_replaces_linear_and_rnn_layers(trained):
    import torch

    from seqattn.translator import Translator

    tmp, pairs, _ = trained
    tr = Translator.load(tmp / "model", device="cpu", quantize="int8")
    kinds = {type(m).__module__ for m in tr.model.modules() if isinstance(m, (torch.nn.Linear, torch.nn.LSTM))}
    kinds |= {type(tr.model.decoder.out).__module__, type(tr.model.encoder.rnn).__module__}
    assert all("quantized.dynamic" in k for k in kinds), kinds
    assert tr.translate([pairs[0][0]])[0].text == pairs[0][1]


def test_evaluate_json(trained):
    tmp, pairs, _ = trained
    (tmp / "src.txt").write_text("".join(s + "\n" for s, _ in pairs))
    (tmp / "ref.txt").write_text("".join(t + "\n" for _, t in pairs))
    proc = run("evaluate", tmp / "model", "--src", tmp / "src.txt", "--ref", tmp / "ref.txt", "--json")
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads(proc.stdout.splitlines()[-1])
    assert metrics["exact"] == 100.0 and metrics["bleu"] == pytest.approx(100.0)
    assert metrics["bleu_signature"].startswith("nrefs:1")
    proc = run("evaluate", tmp / "model", "--src", tmp / "src.txt", "--ref", tmp / "ref.txt")
    assert "BLEU 100.00" in proc.stdout and "chrF" in proc.stdout
    # an empty source line is translated as the empty line, in greedy and in beam search
    (tmp / "src2.txt").write_text(pairs[0][0] + "\n\n" + pairs[1][0] + "\n")
    (tmp / "ref2.txt").write_text(pairs[0][1] + "\n\n" + pairs[1][1] + "\n")
    for beam in ("1", "4"):
        proc = run("evaluate", tmp / "model", "--src", tmp / "src2.txt", "--ref", tmp / "ref2.txt", "--beam", beam,
                   "--json", "--output", tmp / "hyp.txt")
        assert proc.returncode == 0, proc.stderr
        assert (tmp / "hyp.txt").read_text() == (tmp / "ref2.txt").read_text()
        assert json.loads(proc.stdout.splitlines()[-1])["exact"] == 100.0


def test_bad_inputs_end_in_one_line_and_keep_the_checkpoint(trained, tmp_path):
    tmp, pairs, cfg = trained
    last = (tmp / "model" / "last.pt").read_bytes()
    best = (tmp / "model" / "best.pt").read_bytes()
    good = cfg.read_text()

    def config(text):
        p = tmp_path / "c.yaml"
        p.write_text(text)
        return p

    # missing file
    assert_one_line_error(run("train", config(good.replace(str(tmp / "train.tsv"), str(tmp / "nope.tsv"))),
                              "--resume"), "nope.tsv: file not found")
    # line-count mismatch (both files, both counts)
    (tmp_path / "s.txt").write_text("a\nb\nc\n")
    (tmp_path / "t.txt").write_text("a\nb\n")
    text = good.replace(f"train_tsv: {tmp / 'train.tsv'}",
                        f"train_src: {tmp_path / 's.txt'}\n  train_tgt: {tmp_path / 't.txt'}")
    assert_one_line_error(run("train", config(text), "--resume"), "s.txt has 3 lines", "t.txt has 2 lines")
    # empty file
    (tmp_path / "empty.tsv").write_text("")
    assert_one_line_error(run("train", config(good.replace(str(tmp / "train.tsv"), str(tmp_path / "empty.tsv"))),
                              "--resume"), "empty.tsv: file is empty")
    # invalid UTF-8, with file and line number
    (tmp_path / "bad.tsv").write_bytes(b"a\tb\nc\xc3\x28\td\n")
    assert_one_line_error(run("train", config(good.replace(str(tmp / "train.tsv"), str(tmp_path / "bad.tsv"))),
                              "--resume"), "bad.tsv:2: invalid UTF-8")
    # unknown config key, with the closest valid key
    assert_one_line_error(run("train", config(good.replace("batch_tokens", "batch_tokenz")), "--resume"),
                          "unknown key 'train.batch_tokenz'", "did you mean 'train.batch_tokens'")
    # wrong type
    assert_one_line_error(run("train", config(good.replace("lr: 0.01", "lr: fast")), "--resume"),
                          "train.lr must be float")
    # training over an existing model without --resume
    assert_one_line_error(run("train", cfg), "already holds a trained model")
    # translate: missing model dir, invalid UTF-8 on stdin, corrupt checkpoint
    assert_one_line_error(run("translate", tmp_path / "nomodel", stdin="x\n"), "model directory not found")
    proc = subprocess.run([sys.executable, "-m", "seqattn", "translate", str(tmp / "model")], input=b"ok\n\xff\n",
                          capture_output=True, timeout=300)
    assert proc.returncode != 0 and b"Traceback" not in proc.stderr and b"<stdin>:2: invalid UTF-8" in proc.stderr
    assert_one_line_error(run("evaluate", tmp / "model", "--src", tmp_path / "s.txt", "--ref", tmp_path / "t.txt"),
                          "line counts differ")
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("config.yaml", "spm.model"):
        (broken / name).write_bytes((tmp / "model" / name).read_bytes())
    (broken / "last.pt").write_bytes(last[: len(last) // 2])
    assert_one_line_error(run("translate", broken, stdin="x\n"), "last.pt: not a valid seqattn checkpoint")

    # an output path that cannot be written
    assert_one_line_error(run("translate", tmp / "model", "--attention", tmp_path / "no" / "a.json", stdin="x\n"),
                          "No such file or directory")

    assert (tmp / "model" / "last.pt").read_bytes() == last
    assert (tmp / "model" / "best.pt").read_bytes() == best


def test_demo_dates_reaches_the_target(tmp_path):
    # a step budget, not a time budget, so a loaded machine cannot fail it (the time target is a benchmark)
    proc = run("demo", "--task", "dates", "--out", tmp_path, "--seconds", "1800", "--steps", "450", "--json",
               timeout=1800)
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads(proc.stdout.strip().splitlines()[-1])
    assert metrics["exact"] >= 98.0
    png = tmp_path / "attention.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Glyph" not in proc.stderr  # matplotlib warns "Glyph ... missing from font(s)" on empty boxes


def test_plot_from_model_and_from_json(trained, tmp_path):
    tmp, pairs, _ = trained
    png = tmp_path / "a.png"
    proc = run("plot", tmp / "model", pairs[0][0], "--out", png, "--beam", "2")
    assert proc.returncode == 0, proc.stderr
    assert png.read_bytes()[:4] == b"\x89PNG"
    att = tmp_path / "att.json"
    assert run("translate", tmp / "model", "--attention", att, stdin=pairs[1][0] + "\n").returncode == 0
    svg = tmp_path / "a.svg"
    proc = run("plot", "--from-json", att, "--out", svg)
    assert proc.returncode == 0, proc.stderr
    assert "<svg" in svg.read_text(encoding="utf-8")
    assert_one_line_error(run("plot", "--from-json", att, "--index", "5", "--out", svg), "no record 5")
    assert_one_line_error(run("plot", "--out", svg), "give MODEL_DIR and TEXT")


def test_translate_refuses_a_batch_size_below_one(tmp_path):
    proc = run("translate", tmp_path, "--batch-size", "0", stdin="x\n")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.splitlines()[-1].endswith("argument --batch-size: must be at least 1, got 0")
