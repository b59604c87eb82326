"""Kill training with SIGKILL (also mid-checkpoint), resume, and get the uninterrupted run's state bit for bit."""

import importlib.util
import json
from pathlib import Path

from conftest import reverse_pairs

from seqattn.data.tokenizer import Tokenizer

spec = importlib.util.spec_from_file_location("chaos", Path(__file__).resolve().parents[1] / "benchmarks" / "chaos.py")
chaos_mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(chaos_mod)


def test_three_kills_leave_the_same_final_state_as_no_kill(tmp_path):
    pairs = reverse_pairs(300, seed=9)
    (tmp_path / "train.tsv").write_text("".join(f"{s}\t{t}\n" for s, t in pairs), encoding="utf-8")
    (tmp_path / "valid.tsv").write_text("".join(f"{s}\t{t}\n" for s, t in pairs[:40]), encoding="utf-8")
    Tokenizer.train([s for s, _ in pairs] + [t for _, t in pairs], 40).save(tmp_path / "spm.model")
    model = {"emb_size": 32, "enc_hidden_size": 32, "dec_hidden_size": 64, "dropout": 0.2}
    report = chaos_mod.chaos(tmp_path, tmp_path / "train.tsv", tmp_path / "valid.tsv", tmp_path / "spm.model",
                             steps=300, kills=3, seed=1, model=model)
    assert report["kills"] >= 2, report
    assert report["differences"] == [], report["differences"]
    killed = tmp_path / "killed" / "model"
    assert not list(killed.glob(".*.tmp"))                       # no torn temporary file left behind
    log = [json.loads(line) for line in (killed / "train_log.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in log if r["kind"] == "train"]
    assert steps == sorted(set(steps))                             # replayed steps logged once
    # a sabotaged run is caught: different weights make differences non-empty
    from seqattn.checkpoint import load_checkpoint, save_checkpoint

    state = load_checkpoint(killed / "best.pt")
    first = next(iter(state["model"]))
    state["model"][first] = state["model"][first] + 1e-6
    save_checkpoint(state, killed / "best.pt")
    assert any("best.pt: weights" in d for d in chaos_mod.differences(tmp_path / "reference" / "model", killed))
