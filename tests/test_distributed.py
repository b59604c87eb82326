"""Two training processes (DDP, gloo) follow one process's loss curve; a failing rank stops them all."""

import json
import os
import time

import pytest
from conftest import assert_one_line_error, reverse_pairs, run, write_tiny_config

from seqattn.checkpoint import load_checkpoint
from seqattn.data.batching import collate
from seqattn.data.tokenizer import Tokenizer


def _losses(model_dir):
    log = [json.loads(x) for x in (model_dir / "train_log.jsonl").read_text().splitlines()]
    return [r["loss"] for r in log if r["kind"] == "train"], [r["loss"] for r in log if r["kind"] == "valid"]


def test_rows_split_a_batch_into_shares():
    b = collate([[5], [5, 6, 7], [5, 6], [8]], [[9, 9], [9], [9, 9, 9, 9], [9]])
    a, c = b.rows(0, 2), b.rows(1, 2)
    assert a.src.tolist() == [[5, 3, 0], [5, 6, 3]] and c.src.tolist() == [[5, 6, 7, 3], [8, 3, 0, 0]]
    assert a.tgt_out.shape == (2, 5) and c.tgt_out.shape == (2, 2)          # cut to their own longest target
    assert a.n_tokens + c.n_tokens == b.n_tokens


def test_two_processes_follow_the_one_process_curve(tmp_path):
    pairs = reverse_pairs(200, seed=6)
    Tokenizer.train([x for pair in pairs for x in pair], 40).save(tmp_path / "spm.model")   # shared by both runs
    settings = dict(train__max_steps=24, train__valid_every=12, train__log_every=1, train__valid_metric="loss",
                    data__spm_model=str(tmp_path / "spm.model"))
    (tmp_path / "one").mkdir()
    one = write_tiny_config(tmp_path / "one", pairs, **settings)
    two = write_tiny_config(tmp_path, pairs, **settings)
    proc = run("train", one)
    assert proc.returncode == 0, proc.stderr
    proc = run("train", two, "--nproc", "2")
    assert proc.returncode == 0, proc.stderr
    assert "(2 processes)" in proc.stderr
    train1, valid1 = _losses(tmp_path / "one" / "model")
    train2, valid2 = _losses(tmp_path / "model")
    assert len(train1) == len(train2) == 24
    assert train2 == pytest.approx(train1, rel=1e-4)
    assert valid2 == pytest.approx(valid1, rel=1e-4)
    a = load_checkpoint(tmp_path / "one" / "model" / "last.pt")["model"]
    b = load_checkpoint(tmp_path / "model" / "last.pt")["model"]
    assert all((a[k] - b[k]).abs().max() < 1e-4 for k in a)
    # a distributed run resumes
    longer = tmp_path / "longer.yaml"
    longer.write_text(two.read_text().replace("max_steps: 24", "max_steps: 36"))
    proc = run("train", longer, "--nproc", "2", "--resume")
    assert proc.returncode == 0, proc.stderr
    assert load_checkpoint(tmp_path / "model" / "last.pt")["progress"]["step"] == 36


@pytest.mark.parametrize("when", ["", ":before-joining"])   # rank 0 then waits in training, or in joining
def test_a_failing_rank_stops_every_rank(tmp_path, when):
    cfg = write_tiny_config(tmp_path, reverse_pairs(50, seed=1), train__max_steps=1000)
    os.environ["SEQATTN_TEST_FAIL_RANK"] = "1" + when
    try:
        start = time.monotonic()
        proc = run("train", cfg, "--nproc", "2", timeout=300)
    finally:
        del os.environ["SEQATTN_TEST_FAIL_RANK"]
    assert_one_line_error(proc, "rank 1: failure injected")
    assert time.monotonic() - start < 120
    assert not (tmp_path / "model" / "last.pt").exists()
