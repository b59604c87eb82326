"""Fine-tuning (train.init_from / --init-from): a run that starts from a trained model's weights and
tokenizers, with a fresh optimizer, schedule and step count."""

import json

import pytest
import torch
from conftest import assert_one_line_error, final_state, reverse_pairs, run, write_tiny_config

from seqattn.config import load_config
from seqattn.errors import SeqattnError
from seqattn.train import Trainer
from seqattn.translator import Translator

COMMON = dict(model__dropout=0.2, train__valid_every=10, train__schedule="constant")


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A model trained on reversals of 2-5 words: the starting point."""
    tmp = tmp_path_factory.mktemp("base")
    Trainer(load_config(write_tiny_config(tmp, reverse_pairs(60, seed=1), train__max_steps=60, **COMMON))).run()
    return tmp / "model"


def history(model_dir):
    return [json.loads(line) for line in (model_dir / "train_log.jsonl").read_text().splitlines()
            if json.loads(line)["kind"] == "valid"]


def test_fine_tuning_starts_where_the_loaded_model_is_with_its_tokenizers(base, tmp_path):
    shifted = reverse_pairs(60, seed=2)                         # new data, the same kind of task
    Trainer(load_config(write_tiny_config(tmp_path, shifted, train__max_steps=20, train__init_from=str(base),
                                          **COMMON))).run()
    tuned = tmp_path / "model"
    first = history(tuned)[0]
    assert first["step"] == 0
    for name in ("spm.model", "tgt_pieces.txt"):                # the loaded vocabulary, not a new one
        if (base / name).exists():
            assert (tuned / name).read_bytes() == (base / name).read_bytes(), name
    # step 0 is the loaded model on the new validation data, token for token; a fresh model starts far higher
    src, tgt = zip(*shifted)
    scores = Translator.load(base, device="cpu").forced_scores(list(src), list(tgt))
    loaded_loss = -sum(s["logprob"] for s in scores) / sum(s["tokens"] for s in scores)
    assert first["loss"] == pytest.approx(loaded_loss, rel=1e-4)
    (tmp_path / "fresh").mkdir()
    fresh = Trainer(load_config(write_tiny_config(tmp_path / "fresh", shifted, train__max_steps=10, **COMMON)))
    assert first["loss"] < fresh.validate(record=False)["loss"] - 0.5
    weights, _, progress = final_state(tuned)
    assert progress["step"] == 20 and progress["history"][0]["step"] == 0


def test_fine_tuning_resumes_bit_for_bit(base, tmp_path):
    pairs = reverse_pairs(60, seed=3)
    common = dict(train__init_from=str(base), **COMMON)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    Trainer(load_config(write_tiny_config(tmp_path / "a", pairs, train__max_steps=30, **common))).run()
    Trainer(load_config(write_tiny_config(tmp_path / "b", pairs, train__max_steps=20, **common))).run()
    Trainer(load_config(write_tiny_config(tmp_path / "b", pairs, train__max_steps=30, **common)), resume=True).run()
    (w_a, _, prog_a), (w_b, _, prog_b) = final_state(tmp_path / "a" / "model"), final_state(tmp_path / "b" / "model")
    assert prog_a["step"] == prog_b["step"] == 30
    assert all(torch.equal(w_a[key], w_b[key]) for key in w_a)
    strip = lambda h: [{k: v for k, v in r.items() if k != "minutes"} for r in h]
    assert strip(prog_a["history"]) == strip(prog_b["history"])


def test_the_optimizer_state_comes_along_only_when_asked_and_only_from_last_pt(base, tmp_path):
    pairs = reverse_pairs(60, seed=4)
    with pytest.raises(SeqattnError, match="best.pt holds no optimizer state"):
        Trainer(load_config(write_tiny_config(tmp_path, pairs, train__max_steps=5, train__init_optimizer=True,
                                              train__init_from=str(base / "best.pt"), **COMMON)))
    trainer = Trainer(load_config(write_tiny_config(tmp_path, pairs, train__max_steps=5, train__init_optimizer=True,
                                                    train__init_from=str(base / "last.pt"), **COMMON)),
                      overwrite=True)
    saved = torch.load(base / "last.pt", weights_only=True)["optimizer"]
    moments = trainer.optimizer.state_dict()["state"]
    assert moments and all(torch.equal(moments[k]["exp_avg"], saved["state"][k]["exp_avg"]) for k in moments)
    assert trainer.optimizer.param_groups[0]["lr"] == trainer.cfg.train.lr


@pytest.mark.parametrize("override,message", [
    (dict(model__emb_size=48), "model.emb_size is 48 in the config but 32 in the saved model"),
    (dict(model__attention="general"), "model.attention is 'general' in the config but 'dot'"),
    (dict(data__vocab_size=50), "data.vocab_size is 50 in the config but 40"),
])
def test_a_config_that_asks_for_another_model_is_a_one_line_error(base, tmp_path, override, message):
    path = write_tiny_config(tmp_path, reverse_pairs(20), train__max_steps=5, **{**COMMON, **override})
    proc = run("train", path, "--init-from", base)
    assert_one_line_error(proc, f"train.init_from {base}: {message}")
    assert not (tmp_path / "model" / "last.pt").exists()


def test_init_from_what_is_not_a_model_is_a_one_line_error(base, tmp_path):
    path = write_tiny_config(tmp_path, reverse_pairs(20), train__max_steps=5, **COMMON)
    assert_one_line_error(run("train", path, "--init-from", tmp_path / "nowhere"),
                          "nowhere: no such model directory or checkpoint")
    (tmp_path / "loose").mkdir()
    (tmp_path / "loose" / "w.pt").write_bytes((base / "best.pt").read_bytes())
    assert_one_line_error(run("train", path, "--init-from", tmp_path / "loose" / "w.pt"),
                          "is not a model directory or a checkpoint in one")
    assert_one_line_error(run("train", path, "--init-from", tmp_path / "loose"), "is not a model directory")
    proc = run("train", path, "--init-from", base)                # and the command line works
    assert proc.returncode == 0, proc.stderr
    assert history(tmp_path / "model")[0]["step"] == 0


def test_fine_tuning_with_two_processes(base, tmp_path):
    """--nproc 2 --init-from: every rank starts from the loaded weights, and step 0 reports the loaded model."""
    pairs = reverse_pairs(60, seed=5)
    path = write_tiny_config(tmp_path, pairs, train__max_steps=10, **COMMON)
    proc = run("train", path, "--init-from", base, "--nproc", "2", timeout=600)
    assert proc.returncode == 0, proc.stderr
    src, tgt = zip(*pairs)
    scores = Translator.load(base, device="cpu").forced_scores(list(src), list(tgt))
    first = history(tmp_path / "model")[0]
    assert first["step"] == 0 and first["loss"] == pytest.approx(
        -sum(s["logprob"] for s in scores) / sum(s["tokens"] for s in scores), rel=1e-4)
    assert final_state(tmp_path / "model")[2]["step"] == 10
