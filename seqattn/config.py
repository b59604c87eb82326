"""Typed configuration: dataclasses, YAML loading, validation with one-line errors."""

from __future__ import annotations

import dataclasses
import difflib
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from seqattn_runtime.rules import STOPPING

from .errors import SeqattnError


@dataclass
class DataConfig:
    """Where the parallel text is and how it becomes token ids."""

    train_src: str | None = None   # two files (.txt or .gz, one sentence a line) ...
    train_tgt: str | None = None
    train_tsv: str | None = None   # ... or one TSV file: source<TAB>target
    valid_src: str | None = None
    valid_tgt: str | None = None
    valid_tsv: str | None = None
    src_lang: str = "src"
    tgt_lang: str = "tgt"
    vocab_size: int = 8000            # SentencePiece pieces (a soft limit on small data)
    joint_vocab: bool = True          # one SentencePiece model for both sides
    spm_model: str | None = None      # use this existing SentencePiece model (joint) instead of training one
    binarized: str | None = None      # a `seqattn data binarize` directory: train from its memory-mapped ids
    max_len: int = 100                # training pairs longer than this (pieces) are dropped
    sample_alpha: float = 0.0         # > 0: subword regularisation, a fresh SentencePiece segmentation of the
                                      # training text every epoch, drawn with this smoothing (0: off)
    sample_nbest: int = 64            # draw among the nbest most likely segmentations of each line


@dataclass
class ModelConfig:
    """The RNN encoder-decoder; the defaults are an LSTM with Luong dot attention (README's equations)."""

    rnn: Literal["lstm", "gru"] = "lstm"
    emb_size: int = 256
    enc_hidden_size: int = 256        # per direction
    bidirectional: bool = True
    dec_hidden_size: int = 512
    layers: int = 1
    attention: Literal["dot", "general", "concat", "none"] = "dot"
    dropout: float = 0.3
    input_feeding: bool = False
    tie_embeddings: bool = False
    init_range: float = 0.1           # > 0: every parameter uniform in [-init_range, init_range]; 0: PyTorch's init


@dataclass
class TrainConfig:
    """Optimisation, validation, stopping."""

    seed: int = 1234
    batch_tokens: int = 3000          # target tokens per batch (padding included)
    lr: float = 0.001
    schedule: Literal["constant", "plateau", "warmup_decay"] = "plateau"
    warmup_steps: int = 0             # warmup_decay: linear warm-up, then cosine decay to lr_min
    decay_over: Literal["steps", "minutes"] = "steps"   # warmup_decay ends at max_steps or at max_minutes
    lr_min: float = 1.0e-5
    plateau_factor: float = 0.5       # plateau: lr *= factor after plateau_patience bad validations
    plateau_patience: int = 1
    clip_norm: float = 1.0
    label_smoothing: float = 0.1
    max_steps: int = 0                # 0: no limit
    max_epochs: int = 0               # 0: no limit
    max_minutes: float = 0.0          # 0: no limit; wall-clock budget including validation
    valid_every: int = 500
    valid_metric: Literal["bleu", "chrf", "exact", "loss", "ppl"] = "bleu"
    early_stopping: int = 0           # stop after this many validations without improvement; 0: off
    keep_last: int = 0                # also keep the weights of the last K validations (step_N.pt) for averaging
    log_every: int = 50
    tensorboard: bool = True
    device: Literal["auto", "cpu", "cuda"] = "auto"
    init_from: str = ""               # fine-tuning: start from this model directory's (or checkpoint's) weights
    init_optimizer: bool = False      # with init_from: also its optimizer state (a run's last.pt holds one)


@dataclass
class DecodeConfig:
    """How `translate`, `serve` and an export decode by default (the command line and requests may say
    otherwise)."""

    stopping: Literal[STOPPING] = "exact"   # when beam search ends a sentence (`seqattn_runtime.rules.Stopping`)
    patience: float = 1.0             # stopping 'patience': end at patience x beam finished hypotheses
    max_output_ratio: float = 1.5     # an output ends at ratio x source length + 10 pieces (validation too)


@dataclass
class Config:
    """The whole configuration of a run."""

    model_dir: str = "model"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)

    def validate(self, where: str = "config") -> Config:
        """Return self after cross-field checks; raise SeqattnError naming the key."""
        d, m, t = self.data, self.model, self.train
        for side in ("train", "valid"):
            pair = getattr(d, f"{side}_src"), getattr(d, f"{side}_tgt")
            tsv = getattr(d, f"{side}_tsv")
            if tsv and any(pair):
                raise SeqattnError(f"{where}: give either data.{side}_tsv or data.{side}_src/{side}_tgt, not both")
            if side == "train" and d.binarized:
                continue
            if not tsv and not all(pair) and (side == "train" or any(pair)):
                raise SeqattnError(f"{where}: data.{side}_src and data.{side}_tgt (or data.{side}_tsv) are required")
        positive = {"data.vocab_size": d.vocab_size, "data.max_len": d.max_len, "model.emb_size": m.emb_size,
                    "model.enc_hidden_size": m.enc_hidden_size, "model.dec_hidden_size": m.dec_hidden_size,
                    "model.layers": m.layers, "train.batch_tokens": t.batch_tokens, "train.lr": t.lr,
                    "train.valid_every": t.valid_every, "train.log_every": t.log_every,
                    "decode.max_output_ratio": self.decode.max_output_ratio, "decode.patience": self.decode.patience}
        for key, value in positive.items():
            if value <= 0:
                raise SeqattnError(f"{where}: {key} must be > 0, got {value}")
        if t.keep_last < 0:
            raise SeqattnError(f"{where}: train.keep_last must be >= 0, got {t.keep_last}")
        if d.sample_alpha < 0 or not 1 < d.sample_nbest <= 1000:
            raise SeqattnError(f"{where}: data.sample_alpha must be >= 0 and data.sample_nbest in 2..1000 (the "
                               f"segmentations drawn among), got {d.sample_alpha} and {d.sample_nbest}")
        if d.sample_alpha > 0 and d.binarized:
            raise SeqattnError(f"{where}: data.sample_alpha draws segmentations of the training text, which "
                               f"data.binarized does not keep: use data.train_* with it")
        if not 0 <= m.init_range <= 1:
            raise SeqattnError(f"{where}: model.init_range must be in [0, 1], got {m.init_range}")
        for key, value in {"model.dropout": m.dropout, "train.label_smoothing": t.label_smoothing}.items():
            if not 0 <= value < 1:
                raise SeqattnError(f"{where}: {key} must be in [0, 1), got {value}")
        enc_out = m.enc_hidden_size * (2 if m.bidirectional else 1)
        if m.attention == "dot" and enc_out != m.dec_hidden_size:
            raise SeqattnError(
                f"{where}: model.attention 'dot' needs encoder output size ({enc_out}) == model.dec_hidden_size "
                f"({m.dec_hidden_size}); change the sizes or use 'general'")
        if m.tie_embeddings and m.emb_size != m.dec_hidden_size:
            raise SeqattnError(f"{where}: model.tie_embeddings needs model.emb_size == model.dec_hidden_size")
        if m.input_feeding and m.attention == "none":
            raise SeqattnError(f"{where}: model.input_feeding needs an attention (model.attention is 'none')")
        if t.schedule == "warmup_decay" and t.decay_over == "steps" and t.max_steps <= 0:
            raise SeqattnError(f"{where}: train.schedule 'warmup_decay' needs train.max_steps > 0 (or "
                               f"train.decay_over: minutes with train.max_minutes)")
        if t.schedule == "warmup_decay" and t.decay_over == "minutes" and t.max_minutes <= 0:
            raise SeqattnError(f"{where}: train.decay_over 'minutes' needs train.max_minutes > 0")
        return self


def _check_type(value: Any, hint: Any, key: str, where: str) -> Any:
    """Return value converted to hint (int -> float only); raise SeqattnError naming key."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):  # Optional[X], X | None
        if value is None:
            return None
        (hint,) = [a for a in typing.get_args(hint) if a is not type(None)]
        origin = typing.get_origin(hint)
    if origin is Literal:
        choices = typing.get_args(hint)
        if value not in choices:
            raise SeqattnError(f"{where}: {key} must be one of {', '.join(map(str, choices))}; got {value!r}")
        return value
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is int and isinstance(value, bool) or not isinstance(value, hint):
        raise SeqattnError(f"{where}: {key} must be {hint.__name__}, got {type(value).__name__} {value!r}")
    return value


def _build(cls: type, raw: Any, prefix: str, where: str) -> Any:
    """Return a cls instance from a dict, rejecting unknown keys with a suggestion."""
    if not isinstance(raw, dict):
        raise SeqattnError(f"{where}: {prefix.rstrip('.') or 'the top level'} must be a mapping, "
                           f"got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in raw.items():
        full = f"{prefix}{key}"
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f" (did you mean '{prefix}{close[0]}'?)" if close else f" (valid: {', '.join(names)})"
            raise SeqattnError(f"{where}: unknown key '{full}'{hint}")
        if dataclasses.is_dataclass(hints[key]):
            kwargs[key] = _build(hints[key], value, f"{full}.", where)
        else:
            kwargs[key] = _check_type(value, hints[key], full, where)
    return cls(**kwargs)


MOVED = {"train.max_output_ratio": "decode.max_output_ratio"}   # an old key: still read, with a notice
_noticed: set[tuple[str, str]] = set()


def _moved(raw: dict, where: str) -> dict:
    """Return raw with the MOVED keys under their new names (a copy); print a one-line notice per file and key
    (once a process); raise SeqattnError when a file sets both names to different values."""
    raw = {k: dict(v) if isinstance(v, dict) else v for k, v in raw.items()}
    for old, new in MOVED.items():
        (old_part, old_key), (new_part, new_key) = old.split("."), new.split(".")
        part = raw.get(old_part)
        if not isinstance(part, dict) or old_key not in part:
            continue
        value = part.pop(old_key)
        target = raw.setdefault(new_part, {})
        if not isinstance(target, dict):
            continue                                  # _build names the malformed section
        if new_key in target and target[new_key] != value:
            raise SeqattnError(f"{where}: {old} ({value!r}) is the old name of {new} ({target[new_key]!r}): "
                               f"keep {new} only")
        target.setdefault(new_key, value)
        if (where, old) not in _noticed:
            _noticed.add((where, old))
            print(f"seqattn: notice: {where}: {old} is now {new} (read as such; rename it)", file=sys.stderr)
    return raw


def config_from_dict(raw: dict, where: str = "config") -> Config:
    """Return a validated Config from a plain dict (as read from YAML; keys renamed since are read under
    their new names, `MOVED`)."""
    if raw is None:
        raw = {}
    return _build(Config, _moved(raw, where) if isinstance(raw, dict) else raw, "", where).validate(where)


def load_config(path: str | Path) -> Config:
    """Return the validated Config of a YAML file."""
    import yaml

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SeqattnError(f"{path}: config file not found") from None
    except UnicodeDecodeError as e:
        raise SeqattnError(f"{path}: invalid UTF-8 ({e.reason})") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        problem = str(getattr(e, "problem", None) or e).splitlines()[0].strip() or type(e).__name__
        raise SeqattnError(f"{path}{line}: invalid YAML ({problem})") from None
    return config_from_dict(raw, str(path))


def config_to_dict(cfg: Config) -> dict:
    """Return cfg as a plain dict (for YAML and checkpoints)."""
    return dataclasses.asdict(cfg)


def save_config(cfg: Config, path: Path) -> None:
    """Write cfg as YAML (atomically: a crash leaves the old file or the new one)."""
    import yaml

    from .checkpoint import atomic_write

    text = yaml.safe_dump(config_to_dict(cfg), sort_keys=False)
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))
