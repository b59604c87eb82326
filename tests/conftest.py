"""Shared fixtures: tiny parallel data and configs written into temporary directories."""

from __future__ import annotations

import os
import random
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
