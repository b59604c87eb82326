"""Text in, text out: tokenize, batch, search, detokenize; the API behind translate/evaluate/demo."""

from __future__ import annotations

import contextlib
import math
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from seqattn_runtime.options import SearchOptions
from seqattn_runtime.shortlist import Shortlist, target_ids
from seqattn_runtime.translator import Translation

from .checkpoint import load_checkpoint
from .config import Config, load_config
from .data.batching import collate, pad_sources
from .data.tokenizer import EOS, PAD, Tokenizers
from .device import autocast, pick_device
from .ensemble import Ensemble
from .errors import SeqattnError
from .fast import Decoding, accelerate
from .fast import search as engine
from .model.seq2seq import Seq2Seq
from .search import Sampling, Shortlisted, Stopping, choices, max_lengths
from .search import beam_search as plain_beam_search
from .search import greedy as plain_greedy


def build_model(cfg: Config, tokenizers: Tokenizers, initialise: bool = True) -> Seq2Seq:
    """Return a freshly initialised model for cfg and the tokenizers' vocabularies; initialise=False skips
    model.init_range's pass over the weights (for a model whose weights are loaded right after)."""
    model_cfg = cfg.model if initialise else replace(cfg.model, init_range=0.0)
    return Seq2Seq(model_cfg, len(tokenizers.src), len(tokenizers.tgt))


def quantize_int8(model: Seq2Seq, device: torch.device) -> Seq2Seq:
    """Return model with int8 dynamic quantization of its Linear and LSTM/GRU layers (CPU inference).

    Weights are stored as int8 with a scale; activations are quantized on the fly per batch.
    """
    if device.type != "cpu":
        raise SeqattnError(f"--quantize int8 runs on the CPU only (the device is {device.type})")
    import warnings

    with warnings.catch_warnings():   # torch marks its quantized tensor constructors deprecated
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(model, {nn.Linear, nn.LSTM, nn.GRU}, dtype=torch.qint8)


def load_shortlist(model_dir: Path, tokenizers: Tokenizers) -> Shortlist | None:
    """Return the shortlist of a model directory (shortlist.npz), checked against its tokenizers' sizes, or
    None where it has none."""
    path = model_dir / "shortlist.npz"
    if not path.exists():
        return None
    try:
        return Shortlist.load(path).check_fits(len(tokenizers.src), len(tokenizers.tgt), path)
    except ValueError as e:
        raise SeqattnError(str(e)) from None


def checkpoint_path(model_dir: Path, checkpoint: str | None = None) -> Path:
    """Return the checkpoint to use of a model directory: `checkpoint` (a file name in model_dir or any
    path) when given, else averaged.pt, best.pt or last.pt, the first that exists."""
    if checkpoint is None:
        checkpoint = next(name for name in ("averaged.pt", "best.pt", "last.pt")
                          if (model_dir / name).exists() or name == "last.pt")
    return model_dir / checkpoint if (model_dir / checkpoint).exists() else Path(checkpoint)


def _load_model(model_dir: Path, checkpoint: str | None, device: torch.device,
                quantize: str | None, fast: bool = True) -> tuple[Seq2Seq, Config, Tokenizers]:
    """Return (the model in eval mode on device, its config, its tokenizers) of a model directory: the
    checkpoint given (a file name in model_dir or any path), else averaged.pt, best.pt or last.pt.
    fast=False leaves the plain model (no `fast.accelerate`)."""
    if not model_dir.is_dir():
        raise SeqattnError(f"{model_dir}: model directory not found")
    cfg = load_config(model_dir / "config.yaml")
    tokenizers = Tokenizers.load(model_dir)
    path = checkpoint_path(model_dir, checkpoint)
    model = build_model(cfg, tokenizers, initialise=False)
    state = load_checkpoint(path)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as e:
        raise SeqattnError(f"{path}: weights do not match {model_dir / 'config.yaml'} "
                           f"({str(e).splitlines()[0]})") from None
    model = model.to(device).eval()
    if quantize:
        model = quantize_int8(model, device)
    if fast:
        accelerate(model)   # after quantizing: the quantized modules stay as they are
    return model, cfg, tokenizers


def _check_vocabularies(mine: Tokenizers, theirs: Tokenizers, model_dir: Path, other: Path) -> None:
    """Raise SeqattnError unless theirs segment the source and number the target pieces as mine do."""
    if mine.src.proto != theirs.src.proto:
        raise SeqattnError(f"{other}: its source tokenizer differs from {model_dir}'s: an ensemble's models must "
                           f"share their vocabularies")
    pieces = lambda tok: tok.pieces(list(range(len(tok))))
    if pieces(mine.tgt) != pieces(theirs.tgt):
        raise SeqattnError(f"{other}: its target vocabulary ({len(theirs.tgt)} pieces) differs from {model_dir}'s "
                           f"({len(mine.tgt)}): an ensemble's models must share their vocabularies")


REFILL_BATCHES = 16   # batches per decoding call: the outputs and attention it holds stay bounded


class Translator:
    """A model with its tokenizers, ready to translate lists of sentences.

    fixed_weights=True (what `load` gives) lets it keep what it derives from the weights between calls
    (`fast.Decoding`); a Translator around a model that is still training derives it anew in every call."""

    def __init__(self, model: Seq2Seq, tokenizers: Tokenizers, cfg: Config, device: torch.device,
                 fixed_weights: bool = False, members: list[Seq2Seq] | None = None,
                 shortlist: Shortlist | None = None):
        self.model, self.tok, self.cfg, self.device = model, tokenizers, cfg, device
        self.fixed_weights = fixed_weights
        self.shortlist = shortlist     # the target pieces each source piece may bring (`seqattn shortlist`)
        self.members = members or []   # more models decoding with this one, an ensemble (same vocabularies)
        self._steps: Decoding | Ensemble | None = None

    @classmethod
    def load(cls, model_dir: str | Path, device: str = "auto", checkpoint: str | None = None,
             quantize: str | None = None, ensemble: list[str] | None = None) -> Translator:
        """Return the Translator of a model directory (its averaged checkpoint when training found it better
        than the best one, else its best, else its last, or the given one: a file name inside model_dir or any
        path); quantize='int8' for int8 CPU decoding. ensemble: more model directories or checkpoint files
        (a file in a model directory: that model's; elsewhere: model_dir's) whose models decode with it,
        averaging log-probabilities; they must share its vocabularies."""
        model_dir = Path(model_dir)
        dev = pick_device(device)
        model, cfg, tokenizers = _load_model(model_dir, checkpoint, dev, quantize)
        members = []
        for other in ensemble or []:
            other = Path(other)
            where, ckpt = (other, None) if other.is_dir() else (
                (other.parent, other.name) if (other.parent / "config.yaml").exists() else (model_dir, str(other)))
            member, _, member_tok = _load_model(where, ckpt, dev, quantize)
            _check_vocabularies(tokenizers, member_tok, model_dir, other)
            members.append(member)
        translator = cls(model, tokenizers, cfg, dev, fixed_weights=True, members=members,
                         shortlist=load_shortlist(model_dir, tokenizers))
        translator._decoding()   # derived once here, so that a loaded Translator is ready to decode
        return translator

    @property
    def stopping(self) -> Stopping:
        """The beam search's stopping rule when the options do not say: the model's decode section's."""
        return Stopping(self.cfg.decode.stopping, self.cfg.decode.patience)

    def info(self) -> dict:
        """Return what `GET /info` tells of the model: config, languages, vocabularies, device, ensemble."""
        return {"model": dict(vars(self.cfg.model)), "src_lang": self.cfg.data.src_lang,
                "tgt_lang": self.cfg.data.tgt_lang, "src_vocab": len(self.tok.src), "tgt_vocab": len(self.tok.tgt),
                "device": str(self.device), "runtime": "pytorch", "ensemble": 1 + len(self.members)}

    def translate(self, lines: list[str], batch_size: int = 64, attention: bool = False,
                  options: SearchOptions | None = None, prefixes: list[str] | None = None) -> list[Translation]:
        """Return the best translation of each line, in order (greedy unless options say otherwise)."""
        return [n[0] for n in self.translate_n(lines, batch_size, attention, options, prefixes)]

    def translate_n(self, lines: list[str], batch_size: int = 64, attention: bool = False,
                    options: SearchOptions | None = None,
                    prefixes: list[str] | None = None) -> list[list[Translation]]:
        """Return, for each line in order, its n-best list (beam search) or its samples (sampling).

        prefixes (one per line, "" for none): each translation starts with its line's prefix, forced, and
        the search goes on from there; scores count the prefix. Prefixes and the coverage penalty are
        decoded by the plain search (the engine has neither) over the same fast steps.

        An empty or blank line (no source pieces) is not decoded: its one result (each sample, when
        sampling) is the empty output, with score 0 and no attention rows."""
        opt = (options or SearchOptions()).check()
        stopping = opt.stopping_rule(self.stopping)
        if opt.shortlist and self.shortlist is None:
            raise SeqattnError("--shortlist: this model has no shortlist.npz (build one with `seqattn shortlist "
                               "MODEL_DIR`)")
        if opt.coverage_penalty and self.model.decoder.attention is None:
            raise SeqattnError("--coverage-penalty needs a model with attention (this one has model.attention: none)")
        if prefixes is not None and len(prefixes) != len(lines):
            raise SeqattnError(f"{len(prefixes)} prefixes for {len(lines)} lines: give one per line ('' for none)")
        forced = None if prefixes is None or not any(p.strip() for p in prefixes) else self.tok.tgt.encode(prefixes)
        ids = self.tok.src.encode(lines)
        cap = self.cfg.data.max_len
        truncated = [len(s) > cap for s in ids]
        ids = [s[:cap] for s in ids]
        copies = opt.num_samples if opt.sample else 1
        results: list[list[Translation]] = [[] for _ in lines]
        for i in (i for i, s in enumerate(ids) if not s):    # empty or blank: the empty output, not decoded
            results[i] = [Translation("", [], [], [] if attention else None, 0.0) for _ in range(copies)]
        rows = [(i, j) for i in range(len(ids)) if ids[i] for j in range(copies)]   # sample j of line i
        order = sorted(range(len(rows)), key=lambda r: len(ids[rows[r][0]]))
        # sample j of line i draws with key i * copies + j, whatever else shares its batch
        sampling = Sampling(opt.temperature, opt.top_k, opt.top_p, opt.seed) if opt.sample else None
        # A call decodes up to REFILL_BATCHES batches' worth of sentences with batch_size of them at a time,
        # the next joining as others finish (the searches' width), so steps keep about batch_size rows.
        plain = forced is not None or opt.coverage_penalty > 0   # what the engine does not do: the plain search
        per_call = batch_size * (1 if plain or opt.shortlist else REFILL_BATCHES)   # a shortlist per batch
        with self._eval_mode():
            steps = self._decoding()
            for start in range(0, len(order), per_call):
                part = [rows[r] for r in order[start : start + per_call]]
                idx = [i for i, _ in part]
                src, src_len = pad_sources([ids[i] for i in idx])
                limit = max_lengths(src_len, self.cfg.decode.max_output_ratio)
                src = src.to(self.device)
                keys = [i * copies + j for i, j in part]
                part_prefixes = None if forced is None else [forced[i] for i in idx]
                searched, vocab = steps, None
                if opt.shortlist:                # the batch's target pieces: ids are positions in vocab
                    vocab, part_prefixes = self.shortlist.batch([ids[i] for i in idx], part_prefixes)
                    searched = Shortlisted(steps, torch.as_tensor(vocab, device=self.device))
                with autocast(self.device):
                    if plain:                    # over the same steps: prefixes, coverage penalty
                        if opt.beam > 1:
                            nbests = plain_beam_search(self.model, src, src_len, limit, opt.beam, opt.alpha,
                                                       opt.nbest, attention, searched, part_prefixes,
                                                       opt.coverage_penalty, stopping)
                        else:
                            nbests = [[h] for h in plain_greedy(self.model, src, src_len, limit, sampling=sampling,
                                                                keys=keys, attention=attention, steps=searched,
                                                                prefixes=part_prefixes)]
                    elif opt.beam > 1:
                        nbests = engine.beam_search(searched, src, src_len, limit, opt.beam, opt.alpha, opt.nbest,
                                                    attention=attention, width=batch_size, stopping=stopping)
                    else:
                        nbests = [[h] for h in engine.greedy(searched, src, src_len, limit, sampling=sampling,
                                                             keys=torch.tensor(keys), attention=attention,
                                                             width=batch_size)]
                    if vocab is not None:        # positions in the shortlist -> target ids
                        nbests = [[replace(h, ids=target_ids(vocab, h.ids)) for h in n] for n in nbests]
                    alts = [None] * len(nbests)
                    if opt.alternatives:       # the model's choices along each best output, forced
                        alts = choices(self.model, src, src_len, [n[0].ids for n in nbests], opt.alternatives,
                                       steps)
                for i, hyps, alt in zip(idx, nbests, alts):
                    results[i].extend(self._result(ids[i], h, attention, truncated[i], alt if n == 0 else None)
                                      for n, h in enumerate(hyps))
        return results

    @torch.no_grad()
    def forced_scores(self, src_lines: list[str], tgt_lines: list[str], batch_size: int = 64) -> list[dict]:
        """Return, per pair, the log-probability of the target under teacher forcing (forced decoding),
        its token count (<eos> included) and perplexity: {'logprob', 'tokens', 'ppl'}."""
        src_ids = [s[: self.cfg.data.max_len] for s in self.tok.src.encode(src_lines)]
        tgt_ids = self.tok.tgt.encode(tgt_lines)
        out: list[dict] = [{}] * len(src_ids)
        with self._eval_mode():
            for start in range(0, len(src_ids), batch_size):
                idx = list(range(start, min(start + batch_size, len(src_ids))))
                batch = collate([src_ids[i] for i in idx], [tgt_ids[i] for i in idx]).to(self.device)
                with autocast(self.device):
                    logits, _ = self.model(batch.src, batch.src_len, batch.tgt_in)
                logp = torch.log_softmax(logits.float(), -1).gather(-1, batch.tgt_out.unsqueeze(-1)).squeeze(-1)
                real = batch.tgt_out != PAD
                sums, counts = (logp * real).sum(1).tolist(), real.sum(1).tolist()
                for i, total, n in zip(idx, sums, counts):
                    out[i] = {"logprob": total, "tokens": n, "ppl": math.exp(-total / n)}
        return out

    def _decoding(self) -> Decoding | Ensemble:
        """Return `fast.Decoding` of the model (an `Ensemble` of those of the model and its members), kept
        while the weights are fixed."""
        if self._steps is not None:
            return self._steps
        steps = Decoding(self.model)
        if self.members:
            steps = Ensemble([steps] + [Decoding(m) for m in self.members])
        if self.fixed_weights:
            self._steps = steps
        return steps

    @contextlib.contextmanager
    def _eval_mode(self):
        """Run the block with the model in eval mode (no dropout), restoring its mode after."""
        was_training = self.model.training
        self.model.eval()
        try:
            yield
        finally:
            self.model.train(was_training)

    def _result(self, src_ids: list[int], hyp, attention: bool, truncated: bool, alternatives=None) -> Translation:
        """Return the Translation of one hypothesis (alternatives: `seqattn_runtime.search.choices`' of it)."""
        text = self.tok.tgt.decode(hyp.ids)
        alts = None if alternatives is None else [
            [("<eos>" if i == EOS else self.tok.tgt.pieces([i])[0], round(p, 5)) for i, p in zip(*pos)]
            for pos in alternatives]
        if not attention:
            return Translation(text, [], [], None, hyp.score, truncated, alts)
        src_tokens = self.tok.src.pieces(src_ids) + ["<eos>"]
        tgt_tokens = self.tok.tgt.pieces(hyp.ids) + (["<eos>"] if hyp.finished else [])
        att = None if hyp.attention is None else [[round(w, 5) for w in row] for row in hyp.attention.tolist()]
        return Translation(text, src_tokens, tgt_tokens, att, hyp.score, truncated, alts)
