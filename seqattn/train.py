"""Training loop: teacher forcing, validation (loss, BLEU, chrF), checkpoints, exact resume."""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .checkpoint import atomic_write, average_checkpoints, load_checkpoint, save_checkpoint
from .config import Config, TrainConfig, config_to_dict, load_config, save_config
from .data.batching import Batch, collate, token_batches
from .data.binarized import BinarizedBatches
from .data.corpus import read_split
from .data.sampling import Segmentations
from .data.tokenizer import PAD, Tokenizers
from .device import autocast, pick_device
from .distributed import Dist
from .errors import SeqattnError
from .evaluate import score
from .fast import accelerate, cross_entropy
from .translator import Translator, build_model, checkpoint_path

Callback = Callable[[str, dict], None]
HIGHER_IS_BETTER = {"bleu": True, "chrf": True, "exact": True, "loss": False, "ppl": False}
RUN_FILES = ("last.pt", "best.pt", "averaged.pt", "train_log.jsonl", "tensorboard", "step_*.pt")
STOP_REASONS = [None, "max_steps", "max_epochs", "max_minutes", "early_stopping"]


@dataclass
class Progress:
    """Where training stands; saved in last.pt so --resume continues exactly."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    elapsed: float = 0.0              # seconds of training (validation included) over all runs
    best: float | None = None         # best validation metric so far
    best_step: int = 0
    bad: int = 0                      # validations since the best one
    history: list = field(default_factory=list)


@dataclass
class Prepared:
    """Tokenized training and validation data."""

    tok: Tokenizers
    train: list[Batch] | BinarizedBatches
    valid: list[Batch]
    valid_src: list[str]
    valid_ref: list[str]
    n_train: int
    dropped: int
    segmentations: tuple[Segmentations, Segmentations] | None = None   # source, target (data.sample_alpha)


def _batches(src: list[list[int]], tgt: list[list[int]], batch_tokens: int) -> list[Batch]:
    """Return the padded token batches of parallel id sequences."""
    index = token_batches([len(x) for x in src], [len(y) for y in tgt], batch_tokens)
    return [collate([src[i] for i in b], [tgt[i] for i in b]) for b in index]


def _within(s_ids: list[list[int]], t_ids: list[list[int]], max_len: int) -> list[int]:
    """Return the indices of the pairs shorter than max_len pieces on both sides, with a non-empty target."""
    return [i for i in range(len(s_ids)) if 0 < len(t_ids[i]) < max_len and len(s_ids[i]) < max_len]


def sampled_batches(data: Prepared, cfg: Config, epoch: int) -> list[Batch]:
    """Return the training batches of an epoch from a fresh subword segmentation of the training text
    (data.sample_alpha, data.sample_nbest), the same for the same train.seed and epoch (so --resume
    continues with the epoch's own batches)."""
    d, t = cfg.data, cfg.train
    src, tgt = data.segmentations
    s_ids = src.draw(d.sample_alpha, np.random.default_rng([t.seed, epoch, 0]))
    t_ids = tgt.draw(d.sample_alpha, np.random.default_rng([t.seed, epoch, 1]))
    keep = _within(s_ids, t_ids, d.max_len)
    return _batches([s_ids[i] for i in keep], [t_ids[i] for i in keep], t.batch_tokens)


def prepare_data(cfg: Config, tok: Tokenizers | None) -> Prepared:
    """Return the data of cfg tokenized (training the tokenizers when tok is None), pre-batched."""
    d, t = cfg.data, cfg.train
    if d.binarized:   # ids already on disk, batches built on demand
        tok = tok or Tokenizers.load(Path(d.binarized))
        train = BinarizedBatches(d.binarized, t.batch_tokens)
        n_train, dropped = train.pairs, 0
    else:
        src, tgt = read_split(d.train_src, d.train_tgt, d.train_tsv)
        if tok is None:
            tok = Tokenizers.train(src, tgt, d.vocab_size, d.joint_vocab, d.spm_model and Path(d.spm_model))
        s_ids, t_ids = tok.src.encode(src), tok.tgt.encode(tgt)
        keep = _within(s_ids, t_ids, d.max_len)
        s_ids, t_ids = [s_ids[i] for i in keep], [t_ids[i] for i in keep]
        if not keep:
            raise SeqattnError(f"no training pair is within data.max_len={d.max_len} pieces (and non-empty)")
        train = _batches(s_ids, t_ids, t.batch_tokens)
        n_train, dropped = len(keep), len(src) - len(keep)
    valid, v_src, v_ref = [], [], []
    if d.valid_tsv or d.valid_src:
        v_src, v_ref = read_split(d.valid_src, d.valid_tgt, d.valid_tsv)
        valid = _batches(tok.src.encode(v_src), tok.tgt.encode(v_ref), t.batch_tokens)
    segmentations = None
    if d.sample_alpha > 0 and not d.binarized:
        segmentations = tok.src.segmentations(src, d.sample_nbest), tok.tgt.segmentations(tgt, d.sample_nbest)
    return Prepared(tok, train, valid, v_src, v_ref, n_train, dropped, segmentations)


def batch_loss(model: torch.nn.Module, batch: Batch, label_smoothing: float, device: torch.device) -> torch.Tensor:
    """Return the summed cross-entropy of a batch (on device) under teacher forcing (a scalar)."""
    with autocast(device):
        logits, _ = model(batch.src, batch.src_len, batch.tgt_in)
    return cross_entropy(logits.flatten(0, 1), batch.tgt_out.flatten(), label_smoothing, PAD)


def optimisation_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, batch: Batch, t: TrainConfig,
                      device: torch.device, norm_tokens: int | None = None, grad_scale: float = 1.0) -> torch.Tensor:
    """Forward, backward, clip, update on one batch; return its summed loss / norm_tokens (default: its own
    target tokens) as a 0-dim tensor on the device. grad_scale multiplies the gradient (the number of ranks,
    whose gradients DDP averages).

    Nothing here waits for the device: on CUDA the host can queue the next step while the GPU still runs
    this one; the trainer reads the loss back only when it logs."""
    norm = norm_tokens or batch.n_tokens
    batch = batch.to(device)
    if batch.src.size(0):
        loss = batch_loss(model, batch, t.label_smoothing, device)
    else:   # a rank with no rows of a tiny batch still joins the gradient exchange, with zeros
        loss = sum((p * 0).sum() for p in model.parameters())
    optimizer.zero_grad(set_to_none=True)
    (loss * (grad_scale / norm)).backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), t.clip_norm)
    optimizer.step()
    return loss.detach() / norm


def make_optimizer(model: torch.nn.Module, lr: float) -> torch.optim.Optimizer:
    """Return Adam over model's parameters, fused (one kernel for all of them, CPU and CUDA)."""
    return torch.optim.Adam(model.parameters(), lr=lr, fused=True)


def lr_factor(cfg: Config, step: int, minutes: float = 0.0) -> float:
    """Return the learning-rate multiplier at step, after minutes of training, for the constant /
    warmup_decay schedules.

    warmup_decay warms up linearly over warmup_steps, then follows a cosine to lr_min: at max_steps, or
    with decay_over 'minutes' at max_minutes (so a run cut by its time budget still ends annealed).
    """
    t = cfg.train
    if t.schedule != "warmup_decay":
        return 1.0
    if step < t.warmup_steps:
        return (step + 1) / t.warmup_steps
    if t.decay_over == "minutes":
        frac = min(1.0, minutes / t.max_minutes)
    else:
        frac = min(1.0, (step - t.warmup_steps) / max(1, t.max_steps - t.warmup_steps))
    floor = t.lr_min / t.lr
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * frac))


def _check_same_model(cfg: Config, saved: Config, what: str) -> None:
    """Raise SeqattnError, beginning with `what`, if cfg changes what a saved model's weights depend on."""
    new, old = config_to_dict(cfg), config_to_dict(saved)
    # The weights depend on the model and the tokenizers; data may move and training options may change.
    keys = [("model", k) for k in new["model"]] + [("data", "vocab_size"), ("data", "joint_vocab")]
    for section, key in keys:
        value = new[section][key]
        if old[section][key] != value:
            raise SeqattnError(f"{what}: {section}.{key} is {value!r} in the config but "
                               f"{old[section][key]!r} in the saved model")


@dataclass
class InitFrom:
    """Fine-tuning's starting point: a trained model's directory (its tokenizers, config) and checkpoint."""

    model_dir: Path
    checkpoint: Path

    @classmethod
    def of(cls, cfg: Config) -> InitFrom:
        """Return train.init_from resolved (a model directory, or a checkpoint file in one), checked against
        cfg: the same model and vocabulary settings, or a one-line error naming the key and both values."""
        given = Path(cfg.train.init_from)
        if not given.exists():
            raise SeqattnError(f"train.init_from: {given}: no such model directory or checkpoint")
        model_dir, checkpoint = (given, None) if given.is_dir() else (given.parent, given.name)
        if not (model_dir / "config.yaml").exists():
            raise SeqattnError(f"train.init_from: {given} is not a model directory or a checkpoint in one "
                               f"(no {model_dir / 'config.yaml'})")
        if cfg.data.spm_model:
            raise SeqattnError(f"train.init_from reuses {model_dir}'s tokenizers: leave data.spm_model empty")
        _check_same_model(cfg, load_config(model_dir / "config.yaml"), f"train.init_from {model_dir}")
        path = checkpoint_path(model_dir, checkpoint)
        if not path.exists():
            raise SeqattnError(f"train.init_from: {model_dir} has no checkpoint (averaged.pt, best.pt or last.pt)")
        return cls(model_dir, path)


class _Clock:
    """Training time in one place: `progress.elapsed` grows by each step's and each validation's seconds
    (what train.max_minutes and the minutes schedule read); the log window's seconds leave validation out."""

    def __init__(self, progress: Progress):
        self.progress, self.window_start = progress, time.perf_counter()

    @contextlib.contextmanager
    def training(self):
        """Count the block as training time."""
        tick = time.perf_counter()
        yield
        self.progress.elapsed += time.perf_counter() - tick

    @contextlib.contextmanager
    def validation(self):
        """Count the block as training time, but not as the log window's."""
        tick = time.perf_counter()
        yield
        spent = time.perf_counter() - tick
        self.progress.elapsed += spent
        self.window_start += spent

    def window(self) -> float:
        """Return the seconds since the last log window began (validation left out); begin a new one."""
        now = time.perf_counter()
        seconds, self.window_start = now - self.window_start, now
        return seconds


class Trainer:
    """Trains cfg's model into cfg.model_dir; `run()` returns the final metrics.

    Setup, in order (the order fixes the random draws, so it is part of the behaviour): the model directory,
    the device (and the process group), the tokenizers and data (`_data`), the model (`_model`), the
    optimizer and schedule (`_optimizer`, `_schedule`), then a resumed run's state (`_resume`)."""

    def __init__(self, cfg: Config, resume: bool = False, overwrite: bool = False, callback: Callback | None = None,
                 dist: Dist | None = None):
        self.cfg, self.callback = cfg, callback or (lambda kind, info: None)
        self.dist = dist or Dist()
        self.dir = Path(cfg.model_dir)
        self._check_directory(resume, overwrite)
        self.device = self.dist.setup(pick_device(cfg.train.device))
        if self.dist.main:
            self._prepare_directory(overwrite and not resume)
        torch.manual_seed(cfg.train.seed)
        init = InitFrom.of(cfg) if cfg.train.init_from and not resume else None
        start = None if init is None else load_checkpoint(init.checkpoint)   # fine-tuning: its weights
        self.data = self._data(resume, init)
        self.model, self.fast, self.net = self._model(start, init)
        self.optimizer = self._optimizer(start, init)
        self.progress = Progress()
        self.scheduler = self._schedule()
        if resume:
            self._resume()
        self.translator = Translator(self.model, self.data.tok, cfg, self.device)
        self._tb = None

    # -- setup ---------------------------------------------------------------------------------
    def _check_directory(self, resume: bool, overwrite: bool) -> None:
        """Refuse to resume nothing, or to train over a trained model unless told to."""
        has_run = (self.dir / "last.pt").exists()
        if resume and not has_run:
            raise SeqattnError(f"{self.dir}: nothing to resume (no last.pt)")
        if has_run and not resume and not overwrite:
            raise SeqattnError(f"{self.dir}: already holds a trained model; use --resume to continue it "
                               f"or --overwrite to replace it")

    def _data(self, resume: bool, init: InitFrom | None) -> Prepared:
        """Return the training and validation data, tokenized: with the run's own tokenizers (resume), the
        loaded model's (fine-tuning) or new ones trained on rank 0, which also writes them and config.yaml
        into the model directory; the other ranks then read rank 0's."""
        cfg, main = self.cfg, self.dist.main
        data = None
        if resume:
            _check_same_model(cfg, load_config(self.dir / "config.yaml"), f"{self.dir}: cannot resume")
            data = prepare_data(cfg, Tokenizers.load(self.dir))
        elif main:
            data = prepare_data(cfg, None if init is None else Tokenizers.load(init.model_dir))
            try:
                data.tok.save(self.dir)
            except OSError as e:
                raise SeqattnError(f"{self.dir}: cannot write the tokenizer ({e.strerror})") from None
        self.dist.barrier()
        if data is None:
            data = prepare_data(cfg, Tokenizers.load(self.dir))
        if main:
            try:
                save_config(cfg, self.dir / "config.yaml")
            except OSError as e:
                raise SeqattnError(f"{self.dir}: cannot write config.yaml ({e.strerror})") from None
        return data

    def _model(self, start: dict | None, init: InitFrom | None):
        """Return (the model, initialised or with start's weights; the names of its fast modules; what training
        steps call: the model or its DistributedDataParallel wrapper)."""
        model = build_model(self.cfg, self.data.tok).to(self.device)
        if start is not None:
            try:
                model.load_state_dict(start["model"])
            except (KeyError, RuntimeError) as e:
                raise SeqattnError(f"train.init_from: {init.checkpoint}: weights do not match the config "
                                   f"({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
        fast = accelerate(model)                 # the faster modules that compute the same function
        return model, fast, self.dist.wrap(model, self.device)

    def _optimizer(self, start: dict | None, init: InitFrom | None) -> torch.optim.Optimizer:
        """Return Adam over the model, with start's moments where train.init_optimizer asks for them."""
        t = self.cfg.train
        optimizer = make_optimizer(self.model, t.lr)
        if start is not None and t.init_optimizer:
            if "optimizer" not in start:
                raise SeqattnError(f"train.init_optimizer: {init.checkpoint} holds no optimizer state (a run's "
                                   f"last.pt does)")
            optimizer.load_state_dict(start["optimizer"])
            for group in optimizer.param_groups:   # its moments, this run's rate and schedule
                group["lr"] = group["initial_lr"] = t.lr
        return optimizer

    def _schedule(self):
        """Return the learning-rate schedule of train.schedule."""
        t = self.cfg.train
        if t.schedule == "plateau":
            mode = "max" if HIGHER_IS_BETTER[t.valid_metric] else "min"
            return torch.optim.lr_scheduler.ReduceLROnPlateau(self.optimizer, mode=mode, factor=t.plateau_factor,
                                                              patience=t.plateau_patience, min_lr=t.lr_min)
        return torch.optim.lr_scheduler.LambdaLR(self.optimizer,
                                                 lambda s: lr_factor(self.cfg, s, self.progress.elapsed / 60))

    def _resume(self) -> None:
        """Take up last.pt's weights, optimizer, schedule, random state and progress; drop later log lines."""
        self._load_state(load_checkpoint(self.dir / "last.pt"))
        if self.dist.main:
            self._truncate_log()

    def _prepare_directory(self, clear: bool) -> None:
        """Create the model directory, drop torn temporary files, and with clear the files of a previous run."""
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            for torn in self.dir.glob(".*.tmp"):   # left by a write that a crash interrupted
                torn.unlink(missing_ok=True)
            if clear:
                for pattern in RUN_FILES:
                    for p in self.dir.glob(pattern):
                        shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
        except OSError as e:
            raise SeqattnError(f"{self.dir}: cannot create the model directory ({e.strerror})") from None

    # -- state ---------------------------------------------------------------------------------
    def _state(self) -> dict:
        p = self.progress
        state = {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "scheduler": self.scheduler.state_dict(), "rng": torch.get_rng_state(),
                 "progress": {k: getattr(p, k) for k in p.__dataclass_fields__}}
        if self.device.type == "cuda":
            state["cuda_rng"] = torch.cuda.get_rng_state()
        return state

    def _load_state(self, state: dict) -> None:
        path = self.dir / "last.pt"
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            torch.set_rng_state(state["rng"])
            if "cuda_rng" in state and self.device.type == "cuda":
                torch.cuda.set_rng_state(state["cuda_rng"])
            self.progress = Progress(**state["progress"])
        except (KeyError, RuntimeError, TypeError, ValueError) as e:
            raise SeqattnError(f"{path}: cannot resume from this checkpoint ({type(e).__name__}: "
                               f"{str(e).splitlines()[0] if str(e) else ''})") from None

    def _kept_steps(self) -> list[Path]:
        """Return the step_*.pt files of train.keep_last in the model directory, oldest step first."""
        return sorted(self.dir.glob("step_*.pt"), key=lambda f: int(f.stem[5:]) if f.stem[5:].isdigit() else -1)

    def _save(self, best: bool) -> None:
        p = self.progress
        weights = {"model": self.model.state_dict(), "step": p.step, "metrics": p.history[-1] if p.history else {}}
        if self.cfg.train.keep_last:
            save_checkpoint(weights, self.dir / f"step_{p.step}.pt")
            kept = self._kept_steps()
            for old in kept[: -self.cfg.train.keep_last]:
                old.unlink(missing_ok=True)
        if best:
            save_checkpoint(weights, self.dir / "best.pt")
        # last.pt is the commit point: a crash before it replays from the previous one and rewrites the rest
        save_checkpoint(self._state(), self.dir / "last.pt")

    def _truncate_log(self) -> None:
        """Drop log records past the resumed step: the steps after last.pt run again and log again."""
        log = self.dir / "train_log.jsonl"
        if not log.exists():
            return
        kept = []
        for line in log.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:     # a line torn by a crash
                continue
            if record.get("step", 0) <= self.progress.step and record.get("kind") != "end":
                kept.append(line + "\n")
        try:
            atomic_write(log, lambda f: f.write("".join(kept).encode("utf-8")))
        except OSError as e:
            raise SeqattnError(f"{log}: cannot write ({e.strerror})") from None

    # -- logging -------------------------------------------------------------------------------
    def _log(self, kind: str, info: dict) -> None:
        if not self.dist.main:
            return
        record = {"kind": kind, **info}
        try:
            with open(self.dir / "train_log.jsonl", "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
        except OSError as e:
            raise SeqattnError(f"{self.dir / 'train_log.jsonl'}: cannot write ({e.strerror})") from None
        if self._tb is not None:
            for key, value in info.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool) and key not in ("step", "epoch"):
                    self._tb.add_scalar(f"{kind}/{key}", value, info["step"])
        self.callback(kind, info)

    def _open_tensorboard(self) -> None:
        if not self.cfg.train.tensorboard or not self.dist.main:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            self.callback("info", {"message": "tensorboard is not installed; no TensorBoard logs"})
            return
        self._tb = SummaryWriter(str(self.dir / "tensorboard"))

    # -- the loop ------------------------------------------------------------------------------
    def loss(self, batch: Batch, label_smoothing: float) -> torch.Tensor:
        """Return the summed cross-entropy of a batch (on the device) under teacher forcing (a scalar)."""
        return batch_loss(self.model, batch, label_smoothing, self.device)

    def step(self, batch: Batch) -> torch.Tensor:
        """One optimisation step on batch (teacher forcing); return this rank's share of its loss per target
        token (a 0-dim tensor on the device; summed over the ranks it is the batch's loss).

        With several ranks each takes its share of the rows; the loss is scaled so that the gradient
        DDP averages is the whole batch's.
        """
        return optimisation_step(self.net, self.optimizer, self.dist.share(batch), self.cfg.train, self.device,
                                 norm_tokens=batch.n_tokens, grad_scale=self.dist.world)

    def _next_rate(self) -> None:
        """Set the learning rate of the next step from the step count and the training time so far."""
        if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            return
        if self.cfg.train.decay_over == "minutes":   # one clock for every rank's rate
            self.progress.elapsed = self.dist.from_main(self.progress.elapsed, self.device)
        self.scheduler.step()

    @torch.no_grad()
    def validate(self, record: bool = True) -> dict:
        """Return validation loss, perplexity, greedy BLEU and chrF, and (record) append them to the history."""
        self.model.eval()
        total, tokens = 0.0, 0
        for batch in self.data.valid:
            total += float(self.loss(batch.to(self.device), 0.0))
            tokens += batch.n_tokens
        hyps = [t.text for t in self.translator.translate(self.data.valid_src)]
        self.model.train()
        metrics = score(hyps, self.data.valid_ref)
        loss = total / max(tokens, 1)
        result = {"step": self.progress.step, "loss": loss, "ppl": math.exp(min(loss, 50)),
                  "bleu": metrics["bleu"], "chrf": metrics["chrf"], "exact": metrics["exact"],
                  "lr": self.optimizer.param_groups[0]["lr"], "minutes": self.progress.elapsed / 60}
        if record:
            self.progress.history.append(result)
        return result

    def _average_last(self) -> None:
        """Average the kept step_*.pt (train.keep_last >= 2) into averaged.pt when its validation metric is
        better than best.pt's; log which checkpoint `translate` will use."""
        t, p = self.cfg.train, self.progress
        kept = self._kept_steps()
        if t.keep_last < 2 or len(kept) < 2 or not self.data.valid or p.best is None:
            return
        trained = {k: v.clone() for k, v in self.model.state_dict().items()}
        averaged = average_checkpoints(kept)
        self.model.load_state_dict(averaged["model"])
        result = self.validate(record=False)
        self.model.load_state_dict(trained)
        value, metric = result[t.valid_metric], t.valid_metric
        better = value > p.best if HIGHER_IS_BETTER[metric] else value < p.best
        steps = f"steps {kept[0].stem[5:]}-{kept[-1].stem[5:]}"
        if better:
            save_checkpoint({**averaged, "step": p.step, "metrics": result}, self.dir / "averaged.pt")
        self._log("averaged", {"step": p.step, "checkpoints": len(kept), metric: value, "better": better,
                               "message": f"the last {len(kept)} checkpoints averaged ({steps}): valid {metric} "
                                          f"{value:.2f} against best.pt's {p.best:.2f}; translate uses "
                                          f"{'averaged.pt' if better else 'best.pt'}"})

    def _after_validation(self, result: dict) -> bool:
        """Update best / early stopping / plateau from result; return whether it is the best so far."""
        t, p = self.cfg.train, self.progress
        value = result[t.valid_metric]
        higher = HIGHER_IS_BETTER[t.valid_metric]
        improved = p.best is None or (value > p.best if higher else value < p.best)
        if improved:
            p.best, p.best_step, p.bad = value, p.step, 0
        else:
            p.bad += 1
        if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            self.scheduler.step(value)
        return improved

    def _should_stop(self) -> str | None:
        t, p = self.cfg.train, self.progress
        if t.max_steps and p.step >= t.max_steps:
            return "max_steps"
        if t.max_epochs and p.epoch >= t.max_epochs:
            return "max_epochs"
        if t.max_minutes and p.elapsed >= 60 * t.max_minutes:
            return "max_minutes"
        if t.early_stopping and p.bad >= t.early_stopping:
            return "early_stopping"
        return None

    def _validate_and_save(self) -> None:
        if self.dist.main:
            if self.data.valid:
                result = self.validate()
                best = self._after_validation(result)
                self._log("valid", {**result, "best": best})
            else:
                best = True  # without validation data the newest weights are the best we know
            self._save(best)
        self.dist.barrier()
        self.dist.same_rate(self.optimizer, self.device)

    def _agreed_stop(self) -> str | None:
        """Return rank 0's stopping reason (or None) on every rank: time and early stopping are its own."""
        return self.dist.main_choice(self._should_stop(), STOP_REASONS, self.device)

    def _begin(self) -> None:
        """What a run does before its first step: TensorBoard, the start callback, the training mode; a
        fine-tuning run first validates the model it starts from."""
        t, p = self.cfg.train, self.progress
        self._open_tensorboard()
        self.callback("start", {"step": p.step, "max_steps": t.max_steps, "train_pairs": self.data.n_train,
                                "dropped": self.data.dropped, "batches": len(self.data.train),
                                "params": sum(x.numel() for x in self.model.parameters()), "device": str(self.device),
                                "fast": self.fast})
        if self.data.dropped:
            self._log("info", {"step": p.step, "message": f"dropped {self.data.dropped} training pairs longer "
                                                          f"than data.max_len={self.cfg.data.max_len} or empty"})
        self.model.train()
        if self.dist.main:   # an averaged.pt of weights before this run would no longer be what training ends with
            (self.dir / "averaged.pt").unlink(missing_ok=True)
        if t.init_from and p.step == 0 and not p.history:
            self._validate_and_save()              # fine-tuning: where the loaded model starts

    def _epoch(self) -> list[Batch]:
        """Return this epoch's batches still to train, in its seeded order (from where a resumed run stopped)."""
        p = self.progress
        if self.data.segmentations is not None:   # subword regularisation: this epoch's own segmentation
            self.data.train = sampled_batches(self.data, self.cfg, p.epoch)
        g = torch.Generator().manual_seed(self.cfg.train.seed * 1_000_003 + p.epoch)
        order = torch.randperm(len(self.data.train), generator=g).tolist()
        return [self.data.train[i] for i in order[p.batch_in_epoch :]]

    def _end(self, reason: str | None, validated_at: int) -> dict:
        """Validate and save the last steps, average the kept checkpoints, log the end; return the summary."""
        p = self.progress
        if validated_at != p.step:
            self._validate_and_save()
        if self.dist.main:
            self._average_last()
        self._log("end", {"step": p.step, "reason": reason, "best": p.best, "best_step": p.best_step,
                          "minutes": p.elapsed / 60})
        if self._tb is not None:
            self._tb.close()
        return {"step": p.step, "reason": reason, "best": p.best, "best_step": p.best_step,
                "metric": self.cfg.train.valid_metric, "history": p.history}

    def run(self) -> dict:
        """Train until a stopping condition; return the final progress summary."""
        t, p = self.cfg.train, self.progress
        self._begin()
        clock, validated_at = _Clock(p), p.step
        win_tokens, win_loss = 0, 0.0
        reason = self._agreed_stop()
        while reason is None:
            for batch in self._epoch():
                with clock.training():
                    win_loss = win_loss + self.step(batch) * batch.n_tokens   # stays on the device: no waiting
                    win_tokens += batch.n_tokens
                    p.step += 1
                    p.batch_in_epoch += 1
                self._next_rate()
                self.callback("step", {"step": p.step, "epoch": p.epoch})
                if p.step % t.log_every == 0:
                    loss = self.dist.sum(float(win_loss), self.device) / max(win_tokens, 1)
                    self._log("train", {"step": p.step, "epoch": p.epoch, "loss": loss,
                                        "tokens_per_s": win_tokens / max(clock.window(), 1e-9),
                                        "lr": self.optimizer.param_groups[0]["lr"], "minutes": p.elapsed / 60})
                    win_tokens, win_loss = 0, 0.0
                if p.step % t.valid_every == 0:
                    with clock.validation():
                        self._validate_and_save()
                    validated_at = p.step
                reason = self._agreed_stop()
                if reason:
                    break
            else:
                p.epoch += 1
                p.batch_in_epoch = 0
                reason = self._agreed_stop()
        return self._end(reason, validated_at)
