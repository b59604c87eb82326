"""Training: a small model learns, resume is exact, checkpoints are atomic and safe to load."""

import json
import math

import pytest
import torch
from conftest import final_state, reverse_pairs, write_tiny_config

from seqattn.checkpoint import load_checkpoint
from seqattn.config import load_config
from seqattn.errors import SeqattnError
from seqattn.train import Trainer
from seqattn.translator import Translator


@pytest.mark.parametrize("rnn,attention", [("lstm", "dot"), ("gru", "dot"), ("lstm", "none"), ("gru", "none")])
def test_overfits_twenty_pairs(tmp_path, rnn, attention):
    pairs = reverse_pairs(20, seed=3)
    path = write_tiny_config(tmp_path, pairs, model__rnn=rnn, model__attention=attention, train__max_steps=300,
                             train__valid_every=50, train__valid_metric="exact", train__early_stopping=2)
    result = Trainer(load_config(path)).run()
    assert result["best"] == 100.0
    out = Translator.load(tmp_path / "model").translate([s for s, _ in pairs])
    assert [o.text for o in out] == [t for _, t in pairs]

def test_resume_is_bit_exact(tmp_path):
    pairs = reverse_pairs(60, seed=1)
    common = dict(model__dropout=0.3, train__schedule="plateau", train__valid_every=10, train__label_smoothing=0.1)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    full = write_tiny_config(tmp_path / "a", pairs, train__max_steps=40, **common)
    Trainer(load_config(full)).run()
    half = write_tiny_config(tmp_path / "b", pairs, train__max_steps=20, **common)
    Trainer(load_config(half)).run()
    resumed = write_tiny_config(tmp_path / "b", pairs, train__max_steps=40, **common)
    Trainer(load_config(resumed), resume=True).run()

    w_a, opt_a, prog_a = final_state(tmp_path / "a" / "model")
    w_b, opt_b, prog_b = final_state(tmp_path / "b" / "model")
    assert prog_a["step"] == prog_b["step"] == 40
    for key in w_a:
        assert torch.equal(w_a[key], w_b[key]), key
    for pid, st in opt_a["state"].items():
        for name, value in st.items():
            assert torch.equal(value, opt_b["state"][pid][name])
    strip = lambda h: [{k: v for k, v in r.items() if k != "minutes"} for r in h]
    assert strip(prog_a["history"]) == strip(prog_b["history"])
    assert prog_a["epoch"] == prog_b["epoch"] and prog_a["batch_in_epoch"] == prog_b["batch_in_epoch"]

def test_refuses_to_overwrite_a_trained_model(tmp_path):
    path = write_tiny_config(tmp_path, reverse_pairs(10), train__max_steps=5, train__valid_every=5)
    Trainer(load_config(path)).run()
    before = (tmp_path / "model" / "last.pt").read_bytes()
    with pytest.raises(SeqattnError, match="already holds a trained model"):
        Trainer(load_config(path))
    assert (tmp_path / "model" / "last.pt").read_bytes() == before
    cfg = load_config(path)
    cfg.model.emb_size = 16
    with pytest.raises(SeqattnError, match="cannot resume: model.emb_size"):
        Trainer(cfg, resume=True)

@pytest.mark.parametrize("better", [True, False])
def test_the_last_checkpoints_are_averaged_when_that_beats_best(tmp_path, monkeypatch, better):
    """With keep_last >= 2 training ends by scoring the average of the kept step_*.pt on validation: kept as
    averaged.pt (which translate then loads) only when it beats best.pt, and the log says which one is used.
    The averaged score is forced above or below best to take each branch; resuming drops a stale average."""
    real = Trainer.validate
    forced = []

    def validate(self, record=True):
        result = real(self, record)
        if not record:   # the averaged weights: say they score above or below the best
            result["bleu"] = self.progress.best + (1.0 if better else -1.0)
            forced.append(result["bleu"])
        return result

    monkeypatch.setattr(Trainer, "validate", validate)
    pairs = reverse_pairs(40, seed=4)
    path = write_tiny_config(tmp_path, pairs, train__max_steps=60, train__valid_every=20, train__keep_last=3)
    Trainer(load_config(path)).run()
    model = tmp_path / "model"
    steps = sorted(model.glob("step_*.pt"))
    assert len(steps) == 3 and len(forced) == 1
    log = [r for r in map(json.loads, (model / "train_log.jsonl").read_text().splitlines()) if r["kind"] == "averaged"]
    assert len(log) == 1 and log[0]["better"] is better and log[0]["checkpoints"] == 3
    assert log[0]["message"].endswith("translate uses " + ("averaged.pt" if better else "best.pt"))
    assert (model / "averaged.pt").exists() is better
    loaded = Translator.load(model, device="cpu").model.state_dict()
    mean = sum(load_checkpoint(p)["model"]["decoder.out.weight"] for p in steps) / 3
    best = load_checkpoint(model / "best.pt")["model"]["decoder.out.weight"]
    assert torch.allclose(loaded["decoder.out.weight"], mean if better else best, atol=1e-6)
    if better:   # a resumed run that goes on first removes the average of the weights it moves away from
        monkeypatch.setattr(Trainer, "validate", real)
        more = write_tiny_config(tmp_path, pairs, train__max_steps=70, train__valid_every=20, train__keep_last=0)
        Trainer(load_config(more), resume=True).run()
        assert not (model / "averaged.pt").exists()


def test_warmup_decay_over_minutes_follows_the_clock_to_lr_min(tmp_path, monkeypatch):
    """decay_over 'minutes' anneals by training time, so a run that its time budget ends finishes at lr_min.
    A clock that ticks one second per reading makes every step last exactly one second: 30 steps in the
    half-minute budget, and step k trains at lr_min + (lr - lr_min) * (1 + cos(pi * k / 30)) / 2 (k from 0)."""
    clock = iter(range(10**6))
    monkeypatch.setattr("seqattn.train.time", type("Clock", (), {"perf_counter": lambda: float(next(clock))}))
    path = write_tiny_config(tmp_path, reverse_pairs(20, seed=2), train__schedule="warmup_decay",
                             train__decay_over="minutes", train__max_minutes=0.5, train__max_steps=0,
                             train__lr_min=0.0001, train__log_every=1, train__valid_every=1000)
    result = Trainer(load_config(path)).run()
    assert result["step"] == 30 and result["reason"] == "max_minutes"
    log = [r for r in map(json.loads, (tmp_path / "model" / "train_log.jsonl").read_text().splitlines())
           if r["kind"] == "train"]
    lr = {r["step"]: r["lr"] for r in log}    # the rate the next step (number r["step"], from 0) trains at
    assert lr[15] == pytest.approx((0.01 + 0.0001) / 2)
    assert lr[29] == pytest.approx(0.0001 + 0.0099 * (1 + math.cos(math.pi * 29 / 30)) / 2)
    assert all(lr[k + 1] < lr[k] for k in range(1, 29))


def test_subword_sampling_draws_a_new_segmentation_every_epoch_and_the_same_one_again(tmp_path):
    """data.sample_alpha: each epoch's batches come from a fresh SentencePiece draw of the training text
    (pieces that decode to the same text, targets within the decoder's vocabulary); the same seed and epoch
    draw the same batches, other epochs other ones."""
    from seqattn.data.tokenizer import UNK
    from seqattn.train import prepare_data, sampled_batches

    pairs = reverse_pairs(60, seed=1)
    cfg = load_config(write_tiny_config(tmp_path, pairs, data__sample_alpha=0.1))
    data = prepare_data(cfg, None)
    epoch = lambda e: [(b.src.tolist(), b.tgt_out.tolist()) for b in sampled_batches(data, cfg, e)]
    first, again, second = epoch(0), epoch(0), epoch(1)
    assert first == again and first != second
    standard = sorted(tuple(x) for b in data.train for x in b.src.tolist())
    assert sorted(tuple(x) for b, _ in first for x in b) != standard           # not the standard segmentation
    texts = sorted(data.tok.src.decode([i for i in row if i > 3]) for b, _ in first for row in b)
    assert texts == sorted(s for s, _ in pairs)                                   # the same sentences
    targets = sorted(data.tok.tgt.decode([i for i in row if i > 3]) for _, b in first for row in b)
    assert targets == sorted(t for _, t in pairs) and all(UNK not in row for _, b in first for row in b)


def test_resume_with_subword_sampling_is_bit_exact(tmp_path):
    pairs = reverse_pairs(60, seed=1)
    common = dict(model__dropout=0.3, train__valid_every=10, data__sample_alpha=0.3)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    Trainer(load_config(write_tiny_config(tmp_path / "a", pairs, train__max_steps=40, **common))).run()
    Trainer(load_config(write_tiny_config(tmp_path / "b", pairs, train__max_steps=20, **common))).run()
    Trainer(load_config(write_tiny_config(tmp_path / "b", pairs, train__max_steps=40, **common)), resume=True).run()
    (w_a, _, prog_a), (w_b, _, prog_b) = final_state(tmp_path / "a" / "model"), final_state(tmp_path / "b" / "model")
    assert prog_a["epoch"] >= 3 and prog_a["step"] == prog_b["step"] == 40
    assert all(torch.equal(w_a[key], w_b[key]) for key in w_a)
