"""Shared helpers: tiny parallel data and configs written into temporary directories, small random models and
sources, the CLI in a subprocess."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

SHARED = Path(__file__).resolve().parents[2] / "shared"
MULTI30K = Path(os.environ.get("SEQATTN_MULTI30K", SHARED / "data" / "multi30k"))


def reverse_pairs(n: int, seed: int = 0) -> list[tuple[str, str]]:
    """Return n (words, the same words reversed) pairs: a task a tiny model learns fast."""
    rng = random.Random(seed)
    vocab = ["apple", "bear", "cat", "dog", "egg", "fish", "goat", "hat", "ink", "jam", "kite", "lion"]
    pairs = []
    for _ in range(n):
        words = [rng.choice(vocab) for _ in range(rng.randint(2, 5))]
        pairs.append((" ".join(words), " ".join(reversed(words))))
    return pairs


def write_tiny_config(tmp: Path, pairs, valid=None, **overrides) -> Path:
    """Write train/valid TSVs and a small config into tmp; return the config path."""
    (tmp / "train.tsv").write_text("".join(f"{s}\t{t}\n" for s, t in pairs), encoding="utf-8")
    (tmp / "valid.tsv").write_text("".join(f"{s}\t{t}\n" for s, t in (valid or pairs)), encoding="utf-8")
    cfg = {
        "model_dir": str(tmp / "model"),
        "data": {"train_tsv": str(tmp / "train.tsv"), "valid_tsv": str(tmp / "valid.tsv"), "vocab_size": 40},
        "model": {"emb_size": 32, "enc_hidden_size": 32, "dec_hidden_size": 64, "dropout": 0.0},
        "train": {"batch_tokens": 200, "lr": 0.01, "schedule": "constant", "max_steps": 60, "valid_every": 30,
                  "label_smoothing": 0.0, "log_every": 10, "tensorboard": False, "device": "cpu"},
    }
    for key, value in overrides.items():
        section, name = key.split("__")
        cfg[section][name] = value
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


def assert_same(got, want, tie=1e-3):
    """got (Hypothesis list) equals want ((ids, score, finished) list), but for outputs whose scores tie
    within `tie` (a batch and a single row round differently): their order, and which of those tied with
    the last one make the list."""
    assert [h.score for h in got] == pytest.approx([h[1] for h in want], abs=1e-4)
    for h, (ids, score, ended) in zip(got, want):
        tied = [(w[0], w[2]) for w in want if abs(w[1] - score) < tie]
        assert ((h.ids, h.finished) == (ids, ended) or (len(tied) > 1 and (h.ids, h.finished) in tied)
                or abs(score - want[-1][1]) < tie)


@pytest.fixture(scope="session", autouse=True)
def _threads():
    import torch

    torch.set_num_threads(2)


def run(*args, stdin=None, cwd=None, timeout=600):
    """Return the finished `python -m seqattn ARGS...` (text output captured)."""
    return subprocess.run([sys.executable, "-m", "seqattn", *map(str, args)], input=stdin, capture_output=True,
                          text=True, cwd=cwd, timeout=timeout)


def assert_one_line_error(proc, *fragments):
    """proc failed with one line on stderr, no traceback, holding every fragment."""
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for f in fragments:
        assert f in lines[0], lines[0]


def random_model(att="dot", feed=False, rnn="lstm"):
    """A small untrained model in eval mode, seeded."""
    import torch

    from seqattn.config import ModelConfig
    from seqattn.model.seq2seq import Seq2Seq

    torch.manual_seed(7)
    cfg = ModelConfig(rnn=rnn, attention=att, input_feeding=feed, emb_size=16, enc_hidden_size=12,
                      dec_hidden_size=24, dropout=0.0)
    return Seq2Seq(cfg, 40, 12).eval()  # a small target vocabulary: <eos> comes up often enough


def model_of(rnn="lstm", att="dot", feed=False, layers=1, bi=True, seed=4, dropout=0.0, src_vocab=40, tgt_vocab=25):
    """A small random model; weights in [-0.4, 0.4], so that its outputs rarely tie."""
    import torch

    from seqattn.config import ModelConfig
    from seqattn.model.seq2seq import Seq2Seq

    torch.manual_seed(seed)
    cfg = ModelConfig(rnn=rnn, attention=att, input_feeding=feed, layers=layers, bidirectional=bi, emb_size=16,
                      enc_hidden_size=12, dec_hidden_size=24 if bi else 12, dropout=dropout, init_range=0.4)
    return Seq2Seq(cfg, src_vocab, tgt_vocab)


def sources(n=24, seed=0):
    """(src, src_len, limits) of n random source sentences of 1 to 8 ids in 4..39."""
    import torch

    from seqattn.data.batching import pad_sources
    from seqattn.search import max_lengths

    g = torch.Generator().manual_seed(seed)
    seqs = [torch.randint(4, 40, (int(torch.randint(1, 9, (1,), generator=g)),), generator=g).tolist()
            for _ in range(n)]
    src, src_len = pad_sources(seqs)
    return src, src_len, max_lengths(src_len, 1.5)


def final_state(model_dir):
    """(weights, optimizer state, progress) of a model directory's last.pt."""
    from seqattn.checkpoint import load_checkpoint

    state = load_checkpoint(model_dir / "last.pt")
    return state["model"], state["optimizer"], state["progress"]


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    """(model directory, pairs) of a tiny reversal model trained 120 steps, its last two validations kept
    (step_80.pt, step_120.pt); shared by the tests that only read it."""
    from seqattn.config import load_config
    from seqattn.train import Trainer

    tmp = tmp_path_factory.mktemp("trained")
    pairs = reverse_pairs(40, seed=9)
    path = write_tiny_config(tmp, pairs, train__max_steps=120, train__valid_every=40, train__keep_last=2)
    Trainer(load_config(path)).run()
    return tmp / "model", pairs
