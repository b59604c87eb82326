"""Config loading: unknown keys with suggestions, types, cross-field checks."""

from pathlib import Path

import pytest
from conftest import MULTI30K

from seqattn.config import config_from_dict, load_config
from seqattn.errors import SeqattnError

BASE = {"data": {"train_tsv": "x.tsv"}}


def cfg(**sections):
    raw = {"data": dict(BASE["data"])}
    for key, value in sections.items():
        raw.setdefault(key, {}).update(value) if isinstance(value, dict) else raw.__setitem__(key, value)
    return config_from_dict(raw, "c.yaml")


def test_defaults_are_an_lstm_with_dot_attention():
    c = cfg()
    assert c.model.attention == "dot" and c.model.rnn == "lstm" and not c.model.input_feeding


def test_unknown_key_suggests_the_closest():
    with pytest.raises(SeqattnError, match=r"c.yaml: unknown key 'model.hiden_size' .*did you mean"):
        cfg(model={"hiden_size": 3})
    with pytest.raises(SeqattnError, match=r"'model.dec_hiden_size' \(did you mean 'model.dec_hidden_size'"):
        cfg(model={"dec_hiden_size": 3})
    with pytest.raises(SeqattnError, match=r"unknown key 'trian'"):
        cfg(trian={})


def test_wrong_types_and_choices():
    with pytest.raises(SeqattnError, match=r"train.lr must be float, got str 'fast'"):
        cfg(train={"lr": "fast"})
    with pytest.raises(SeqattnError, match=r"model.layers must be int, got bool"):
        cfg(model={"layers": True})
    with pytest.raises(SeqattnError, match=r"model.attention must be one of dot, general, concat, none"):
        cfg(model={"attention": "luong"})
    assert cfg(train={"lr": 1}).train.lr == 1.0  # ints are fine where floats are expected
    with pytest.raises(SeqattnError, match=r"model must be a mapping"):
        cfg(model=[1, 2])
    with pytest.raises(SeqattnError, match=r"decode.stopping must be one of exact, heuristic, patience; got 'early'"):
        cfg(decode={"stopping": "early"})
    with pytest.raises(SeqattnError, match=r"decode.patience must be > 0, got 0"):
        cfg(decode={"stopping": "patience", "patience": 0})
    assert cfg(decode={"stopping": "patience", "patience": 2}).decode.patience == 2.0


def test_cross_field_checks():
    with pytest.raises(SeqattnError, match="'dot' needs encoder output size"):
        cfg(model={"enc_hidden_size": 100, "dec_hidden_size": 512})
    cfg(model={"enc_hidden_size": 100, "dec_hidden_size": 512, "attention": "general"})
    with pytest.raises(SeqattnError, match="train_src and data.train_tgt"):
        config_from_dict({"data": {"train_src": "a"}})
    with pytest.raises(SeqattnError, match="dropout must be in"):
        cfg(model={"dropout": 1.5})
    with pytest.raises(SeqattnError, match=r"c.yaml: model.init_range must be in \[0, 1\], got -0.1"):
        cfg(model={"init_range": -0.1})
    with pytest.raises(SeqattnError, match="warmup_decay' needs train.max_steps"):
        cfg(train={"schedule": "warmup_decay"})
    with pytest.raises(SeqattnError, match="c.yaml: train.decay_over 'minutes' needs train.max_minutes > 0"):
        cfg(train={"schedule": "warmup_decay", "decay_over": "minutes", "max_steps": 100})
    cfg(train={"schedule": "warmup_decay", "decay_over": "minutes", "max_minutes": 2.5})
    with pytest.raises(SeqattnError, match="sample_nbest in 2..1000 .the segmentations drawn among., got 0.1 and -1"):
        cfg(data={"sample_alpha": 0.1, "sample_nbest": -1})
    with pytest.raises(SeqattnError, match="data.sample_alpha draws segmentations of the training text"):
        config_from_dict({"data": {"binarized": "bin", "sample_alpha": 0.1}})
    assert cfg(data={"sample_alpha": 0.1, "sample_nbest": 8}).data.sample_nbest == 8


def test_yaml_errors(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("data:\n  train_tsv: [unclosed\n")
    with pytest.raises(SeqattnError, match=r"c.yaml:\d+: invalid YAML"):
        load_config(p)
    with pytest.raises(SeqattnError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


@pytest.mark.parametrize("name", ["multi30k.yaml", "multi30k-en-de.yaml", "multi30k-en-fr.yaml", "multi30k-en-cs.yaml"])
def test_the_example_recipes_load_and_name_their_languages_files(name, monkeypatch):
    """Each recipe validates and reads the Multi30k files of its own two languages from data/multi30k/ (where
    `seqattn data multi30k --dir data/multi30k` puts them: inside the repository), files the local copy has."""
    root = Path(__file__).resolve().parents[1]
    monkeypatch.chdir(root)
    cfg = load_config(root / "examples" / name)
    d = cfg.data
    for split, path_src, path_tgt in (("train", d.train_src, d.train_tgt), ("val", d.valid_src, d.valid_tgt)):
        assert path_src == f"data/multi30k/{split}.{d.src_lang}.gz"
        assert path_tgt == f"data/multi30k/{split}.{d.tgt_lang}.gz"
        if MULTI30K.exists():
            assert all((MULTI30K / Path(p).name).exists() for p in (path_src, path_tgt))
    assert cfg.model_dir == "runs/" + name.removesuffix(".yaml")


def test_the_distilled_recipe_is_the_recipe_on_the_teachers_targets(monkeypatch):
    root = Path(__file__).resolve().parents[1]
    monkeypatch.chdir(root)
    recipe, student = (load_config(root / "examples" / n) for n in ("multi30k.yaml", "multi30k-distilled.yaml"))
    assert student.data.train_tgt == "data/multi30k/train.distilled.en"
    assert student.model_dir == "runs/multi30k-distilled"
    assert (student.train.max_steps, recipe.train.max_steps) == (2500, 4000)   # the student starts from a teacher
    student.data.train_tgt, student.model_dir = recipe.data.train_tgt, recipe.model_dir
    student.train.max_steps = recipe.train.max_steps
    assert student == recipe
    text = (root / "examples" / "multi30k-distilled.yaml").read_text()
    assert "seqattn distill runs/multi30k" in text and "--init-from runs/multi30k" in text


def test_a_renamed_key_is_read_under_its_new_name_with_one_notice(tmp_path, capsys):
    old = tmp_path / "old.yaml"
    old.write_text("data:\n  train_tsv: x.tsv\ntrain:\n  max_output_ratio: 2.5\n")
    assert load_config(old).decode.max_output_ratio == 2.5
    assert load_config(old).decode.max_output_ratio == 2.5            # the notice once per file and key
    notice = capsys.readouterr().err.strip().splitlines()
    assert notice == [f"seqattn: notice: {old}: train.max_output_ratio is now decode.max_output_ratio "
                      "(read as such; rename it)"]
    both = {**BASE, "train": {"max_output_ratio": 2.5}, "decode": {"max_output_ratio": 2.0}}
    with pytest.raises(SeqattnError, match=r"train.max_output_ratio \(2.5\) is the old name of "
                                           r"decode.max_output_ratio \(2.0\)"):
        config_from_dict(both, "both.yaml")
    assert cfg(decode={"max_output_ratio": 3}).decode.max_output_ratio == 3.0
    assert not hasattr(cfg().train, "max_output_ratio")
    with pytest.raises(SeqattnError, match="decode.max_output_ratio must be > 0"):
        cfg(train={"max_output_ratio": 0})
