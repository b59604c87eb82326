"""Binarized corpora: ids on disk, the same batches and the same training as in memory, clean errors."""

import json

import numpy as np
import pytest
from conftest import assert_one_line_error, reverse_pairs, run, write_tiny_config

from seqattn.config import load_config
from seqattn.data.binarized import BinarizedBatches, binarize
from seqattn.data.tokenizer import Tokenizer, Tokenizers
from seqattn.errors import SeqattnError
from seqattn.train import prepare_data


@pytest.fixture()
def setup(tmp_path):
    pairs = reverse_pairs(300, seed=11) + [("x " * 150, "too long")]        # one pair over max_len
    Tokenizer.train([x for p in pairs for x in p], 40).save(tmp_path / "spm.model")
    cfg = write_tiny_config(tmp_path, pairs, data__spm_model=str(tmp_path / "spm.model"), train__max_steps=20,
                            train__valid_every=10, train__log_every=1, train__valid_metric="loss")
    return tmp_path, pairs, cfg


def test_binarized_batches_equal_the_in_memory_ones(setup):
    tmp, pairs, cfg_path = setup
    cfg = load_config(cfg_path)
    meta = binarize(cfg, tmp / "bin")
    assert meta["pairs"] == 300 and meta["dropped"] == 1 and meta["dtype"] == "uint16"
    assert json.loads((tmp / "bin" / "meta.json").read_text()) == meta
    memory = prepare_data(cfg, None).train
    disk = BinarizedBatches(tmp / "bin", cfg.train.batch_tokens)
    assert len(disk) == len(memory)
    for a, b in zip(memory, (disk[i] for i in range(len(disk)))):
        for field in ("src", "src_len", "tgt_in", "tgt_out"):
            assert getattr(a, field).equal(getattr(b, field))
        assert a.n_tokens == b.n_tokens
    toks = Tokenizers.load(tmp / "bin")
    offsets = np.load(tmp / "bin" / "tgt.offsets.npy")
    ids = np.memmap(tmp / "bin" / "tgt.ids", dtype=np.uint16, mode="r")
    assert ids[offsets[0]:offsets[1]].tolist() == toks.tgt.encode([pairs[0][1]])[0]


def test_training_from_binarized_data_is_the_same_training(setup):
    tmp, _, cfg_path = setup
    assert run("data", "binarize", cfg_path, "--out", tmp / "bin").returncode == 0
    text = cfg_path.read_text()
    memory = run("train", cfg_path)
    assert memory.returncode == 0, memory.stderr
    (tmp / "model").rename(tmp / "memory")
    binned = tmp / "binned.yaml"
    binned.write_text(text.replace(f"train_tsv: {tmp / 'train.tsv'}", f"binarized: {tmp / 'bin'}"))
    assert "binarized" in binned.read_text() and "train_tsv" not in binned.read_text()
    disk = run("train", binned)
    assert disk.returncode == 0, disk.stderr
    loss = lambda d: [json.loads(x)["loss"] for x in (d / "train_log.jsonl").read_text().splitlines()
                      if '"kind": "train"' in x]
    assert loss(tmp / "model") == loss(tmp / "memory") and len(loss(tmp / "memory")) == 20
    out = run("translate", tmp / "model", stdin="apple bear\n")
    assert out.returncode == 0, out.stderr


def test_binarize_errors_are_one_line(setup, tmp_path):
    tmp, _, cfg_path = setup
    with pytest.raises(SeqattnError, match="not a binarized corpus"):
        BinarizedBatches(tmp_path / "nothing", 100)
    assert run("data", "binarize", cfg_path, "--out", tmp / "bin").returncode == 0
    (tmp / "bin" / "meta.json").write_text('{"pairs": 5, "dtype": "uint16"}')
    with pytest.raises(SeqattnError, match="corrupt binarized corpus"):
        BinarizedBatches(tmp / "bin", 100)
    (tmp / "s.txt").write_text("a\nb\nc\n")
    (tmp / "t.txt").write_text("a\nb\n")
    text = cfg_path.read_text().replace(f"train_tsv: {tmp / 'train.tsv'}",
                                        f"train_src: {tmp / 's.txt'}\n  train_tgt: {tmp / 't.txt'}")
    (tmp / "bad.yaml").write_text(text)
    assert_one_line_error(run("data", "binarize", tmp / "bad.yaml", "--out", tmp / "bin2"), "line counts differ")
    assert not (tmp / "bin2").exists() and not (tmp / ".bin2.tmp").exists()
    only_bin = cfg_path.read_text().replace(f"train_tsv: {tmp / 'train.tsv'}", f"binarized: {tmp / 'bin'}")
    (tmp / "only.yaml").write_text(only_bin)
    assert_one_line_error(run("data", "binarize", tmp / "only.yaml", "--out", tmp / "bin3"), "has neither")
