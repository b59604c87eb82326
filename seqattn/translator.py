"""Text in, text out: tokenize, batch, search, detokenize; the API behind translate/evaluate/demo."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from .checkpoint import load_checkpoint
from .config import Config, load_config
from .data.batching import pad_sources
from .data.tokenizer import Tokenizers
from .device import autocast, pick_device
from .errors import SeqattnError
from .model.seq2seq import Seq2Seq
from .search import greedy, max_lengths


@dataclass
class Translation:
    """One translated sentence, with what it attended to."""

    text: str
    src_tokens: list[str]                   # source pieces, <eos> last
    tgt_tokens: list[str]                   # output pieces, <eos> last when reached
    attention: list[list[float]] | None     # len(tgt_tokens) x len(src_tokens)
    score: float                            # log-probability of the output

    def to_dict(self) -> dict:
        """Return a JSON-ready dict."""
        return {"translation": self.text, "score": self.score, "source_tokens": self.src_tokens,
                "target_tokens": self.tgt_tokens, "attention": self.attention}


def build_model(cfg: Config, tokenizers: Tokenizers) -> Seq2Seq:
    """Return a freshly initialised model for cfg and the tokenizers' vocabularies."""
    return Seq2Seq(cfg.model, len(tokenizers.src), len(tokenizers.tgt))


class Translator:
    """A model with its tokenizers, ready to translate lists of sentences."""

    def __init__(self, model: Seq2Seq, tokenizers: Tokenizers, cfg: Config, device: torch.device):
        self.model, self.tok, self.cfg, self.device = model, tokenizers, cfg, device

    @classmethod
    def load(cls, model_dir: str | Path, device: str = "auto", checkpoint: str | None = None) -> Translator:
        """Return the Translator of a model directory (its best checkpoint, else its last)."""
        model_dir = Path(model_dir)
        if not model_dir.is_dir():
            raise SeqattnError(f"{model_dir}: model directory not found")
        cfg = load_config(model_dir / "config.yaml")
        tokenizers = Tokenizers.load(model_dir)
        if checkpoint is None:
            checkpoint = "best.pt" if (model_dir / "best.pt").exists() else "last.pt"
        path = Path(checkpoint) if Path(checkpoint).is_absolute() else model_dir / checkpoint
        dev = pick_device(device)
        model = build_model(cfg, tokenizers)
        state = load_checkpoint(path)
        try:
            model.load_state_dict(state["model"])
        except RuntimeError as e:
            raise SeqattnError(f"{path}: weights do not match {model_dir / 'config.yaml'} "
                               f"({str(e).splitlines()[0]})") from None
        return cls(model.to(dev).eval(), tokenizers, cfg, dev)

    def translate(self, lines: list[str], batch_size: int = 64, attention: bool = False,
                  max_src_len: int | None = None) -> list[Translation]:
        """Return the greedy translation of each line, in order (attention filled when asked)."""
        ids = self.tok.src.encode(lines)
        if max_src_len:
            ids = [s[:max_src_len] for s in ids]
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        results: list[Translation | None] = [None] * len(ids)
        was_training = self.model.training
        self.model.eval()
        try:
            for start in range(0, len(order), batch_size):
                idx = order[start : start + batch_size]
                src, src_len = pad_sources([ids[i] for i in idx])
                limit = max_lengths(src_len, self.cfg.train.max_output_ratio)
                with autocast(self.device):
                    hyps = greedy(self.model, src.to(self.device), src_len, limit)
                for i, h in zip(idx, hyps):
                    results[i] = self._result(ids[i], h, attention)
        finally:
            self.model.train(was_training)
        return results

    def _result(self, src_ids: list[int], hyp, attention: bool) -> Translation:
        """Return the Translation of one hypothesis."""
        text = self.tok.tgt.decode(hyp.ids)
        if not attention:
            return Translation(text, [], [], None, hyp.score)
        src_tokens = self.tok.src.pieces(src_ids) + ["<eos>"]
        tgt_tokens = self.tok.tgt.pieces(hyp.ids) + (["<eos>"] if hyp.finished else [])
        att = None if hyp.attention is None else [[round(w, 5) for w in row] for row in hyp.attention.tolist()]
        return Translation(text, src_tokens, tgt_tokens, att, hyp.score)
