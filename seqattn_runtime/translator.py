"""Load an export (`seqattn export`) and translate with ONNX Runtime: numpy, onnxruntime and sentencepiece only."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from .errors import SeqattnError
from .rules import EOS, PAD, UNK, Stopping, max_lengths
from .search import Sampling, beam_search, choices, greedy
from .shortlist import Shortlist, target_ids

FORMAT, VERSION = "seqattn-onnx", 3   # 2: the step may read the W_c split's context; 3: the step ranks each row's
#                                       top_k best ids (TopK); exports of versions 1 and 2 still load
REQUIRED = ("rnn", "input_feeding", "dec_hidden_size", "src_vocab", "tgt_vocab", "max_len", "max_output_ratio",
            "tokenizers", "encoder_outputs", "step_inputs", "step_outputs")


class ExportError(SeqattnError):
    """A missing, corrupt or mismatched export: the message names the file."""


@dataclass
class Translation:
    """One translated sentence, with what it attended to (from an export, or from seqattn's Translator)."""

    text: str
    src_tokens: list[str]                   # source pieces, <eos> last
    tgt_tokens: list[str]                   # output pieces, <eos> last when reached
    attention: list[list[float]] | None     # len(tgt_tokens) x len(src_tokens)
    score: float                            # log-probability of the output (/ length penalty in beam search)
    truncated: bool = False                 # the source was cut to the model's data.max_len pieces
    alternatives: list[list[tuple[str, float]]] | None = None   # per output position (<eos> one too): the
    #                                         model's k most likely pieces there and their probabilities

    def to_dict(self) -> dict:
        """Return a JSON-ready dict."""
        return {"translation": self.text, "score": self.score, "source_tokens": self.src_tokens,
                "target_tokens": self.tgt_tokens, "attention": self.attention}


BATCH_ENCODE = 1000   # lines: below this SentencePiece's batch Encode (a thread pool) costs more than it saves


def encode_lines(sp, lines: list[str]) -> list[list[int]]:
    """Return sp's piece ids of each line: line by line for a short list (one sentence, a batch: the batch
    call's fixed cost, starting its threads, outweighs their work), by SentencePiece's threaded call for a long one."""
    return sp.Encode(lines) if len(lines) >= BATCH_ENCODE else [sp.Encode(line) for line in lines]


class _Pieces:
    """A SentencePiece model, or the target view of a joint one (view ids 0..n-1 -> its piece ids)."""

    def __init__(self, path: Path, keep: list[int] | None = None):
        import sentencepiece as spm

        self.sp = spm.SentencePieceProcessor()
        try:
            self.sp.LoadFromSerializedProto(path.read_bytes())
        except FileNotFoundError:
            raise ExportError(f"{path}: tokenizer file not found") from None
        except Exception:
            raise ExportError(f"{path}: not a valid SentencePiece model") from None
        self.keep = keep
        self.to_view = None if keep is None else {b: i for i, b in enumerate(keep)}   # base id -> view id

    def __len__(self) -> int:
        return len(self.keep) if self.keep is not None else self.sp.GetPieceSize()

    def encode(self, lines: list[str]) -> list[list[int]]:
        """Return each line's ids (in the view's ids, a piece outside it as <unk>)."""
        if self.keep is None:
            return encode_lines(self.sp, lines)
        return [[self.to_view.get(b, UNK) for b in ids] for ids in encode_lines(self.sp, lines)]

    def pieces(self, ids: list[int]) -> list[str]:
        return [self.sp.IdToPiece(self._base(i)) for i in ids]

    def decode(self, ids: list[int]) -> str:
        return self.sp.Decode([self._base(i) for i in ids])

    def _base(self, i: int) -> int:
        return self.keep[i] if self.keep is not None else i


def _read_view(path: Path, size: int) -> list[int]:
    keep = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        field = line.split("\t", 1)[0]
        if not field.isdigit() or int(field) >= size:
            raise ExportError(f"{path}:{n}: expected a piece id below {size}, got {field!r}")
        keep.append(int(field))
    return keep


class Runtime:
    """An exported model ready to translate lists of sentences, as `seqattn.translator.Translator` does."""

    def __init__(self, export_dir: str | Path, threads: int = 0):
        import onnxruntime as ort

        self.dir = d = Path(export_dir)
        meta_path = d / "seqattn.json"
        try:
            self.meta = meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ExportError(f"{meta_path}: not found: {d} is not a seqattn export") from None
        except ValueError as e:
            raise ExportError(f"{meta_path}: not valid JSON ({e})") from None
        if meta.get("format") != FORMAT or meta.get("version") not in range(1, VERSION + 1):
            raise ExportError(f"{meta_path}: not a {FORMAT} export of a version this seqattn_runtime reads "
                              f"(1 to {VERSION}; it says {meta.get('format')!r} version {meta.get('version')!r})")
        missing = [k for k in REQUIRED if k not in meta]
        if missing:
            raise ExportError(f"{meta_path}: missing key {missing[0]!r}")
        try:   # beam search's stopping rule by default (exports before it: exact)
            self.stopping = Stopping(meta.get("stopping", "exact"), float(meta.get("patience", 1.0)))
        except (TypeError, ValueError) as e:
            raise ExportError(f"{meta_path}: {e}") from None
        names = meta["tokenizers"]
        if "spm.model" in names:
            self.src = _Pieces(d / "spm.model")
            keep = _read_view(d / "tgt_pieces.txt", len(self.src)) if "tgt_pieces.txt" in names else None
            self.tgt = _Pieces(d / "spm.model", keep)
        else:
            self.src, self.tgt = _Pieces(d / "src.model"), _Pieces(d / "tgt.model")
        for side, tok, key in (("source", self.src, "src_vocab"), ("target", self.tgt, "tgt_vocab")):
            if len(tok) != meta[key]:
                raise ExportError(f"{d}: the {side} tokenizer has {len(tok)} pieces, the model {meta[key]}")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        # the search's numpy work runs between two steps on the same cores: workers that spin while they
        # wait for the next step would take them from it
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.sessions = {}
        self.shortlist: Shortlist | None = None   # the target pieces each source piece may bring (an export's)
        if meta.get("shortlist"):
            try:
                self.shortlist = Shortlist.load(d / meta["shortlist"]).check_fits(len(self.src), len(self.tgt),
                                                                                  d / meta["shortlist"])
            except ValueError as e:
                raise ExportError(str(e)) from None
        for name in ("encoder.onnx", "step.onnx") + (("step_shortlist.onnx",) if self.shortlist else ()):
            try:
                self.sessions[name] = ort.InferenceSession(str(d / name), options, providers=["CPUExecutionProvider"])
            except Exception as e:
                first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                raise ExportError(f"{d / name}: cannot load ({first[:200]})") from None
        for name, kind, key in (("step.onnx", "inputs", "step_inputs"), ("encoder.onnx", "outputs", "encoder_outputs"),
                                ("step.onnx", "outputs", "step_outputs")):
            session = self.sessions[name]
            got = [x.name for x in (session.get_inputs() if kind == "inputs" else session.get_outputs())]
            if got != meta[key]:
                raise ExportError(f"{d / name}: {kind} {got} do not match seqattn.json's {meta[key]}")
        unmade = [k for k in ("memory", "keys", "context")
                  if k in meta["step_inputs"] and k not in meta["encoder_outputs"]]
        if unmade:
            raise ExportError(f"{d / 'step.onnx'}: reads {unmade[0]!r}, which encoder.onnx does not give")
        self.lstm, self.feeding = "c" in meta["step_inputs"], "feed" in meta["step_inputs"]
        self.ranks = "top_k" in meta["step_inputs"]   # the step ranks each row's best ids (version 3 on)

    def translate(self, lines: list[str], beam: int = 1, alpha: float = 1.0, batch_size: int = 64,
                  attention: bool = False, sampling: Sampling | None = None,
                  shortlist: bool = False) -> list[Translation]:
        """Return the best translation of each line, in order."""
        return [n[0] for n in self.translate_n(lines, beam, 1, alpha, batch_size, attention, sampling,
                                               shortlist=shortlist)]

    def translate_n(self, lines: list[str], beam: int = 1, nbest: int = 1, alpha: float = 1.0, batch_size: int = 64,
                    attention: bool = False, sampling: Sampling | None = None, num_samples: int = 1,
                    prefixes: list[str] | None = None, coverage: float = 0.0,
                    alternatives: int = 0, stopping: Stopping | None = None,
                    shortlist: bool = False) -> list[list[Translation]]:
        """Return each line's n-best list (greedy: beam 1, or beam search) or its num_samples samples
        (sampling, greedy only: sample j of line i draws with key i * num_samples + j), sentences sorted by
        length and decoded batch_size at a time; prefixes (one per line, "" for none): each output starts
        with its line's prefix, forced (`rules.force`); coverage: beam search's coverage penalty beta;
        alternatives: with each best output, the k likeliest pieces at each of its positions
        (`search.choices`); stopping: beam search's stopping rule (None: the export's, `self.stopping`);
        shortlist: score only each batch's shortlist of target pieces (the export's shortlist.npz). An
        empty or blank line gives the empty output, not decoded."""
        if beam < 1 or not 1 <= nbest <= beam:
            raise ValueError(f"need beam >= 1 and 1 <= nbest <= beam, got beam {beam}, nbest {nbest}")
        if sampling is not None and beam > 1:
            raise ValueError("sampling and beam > 1 exclude each other")
        if prefixes is not None and len(prefixes) != len(lines):
            raise ValueError(f"{len(prefixes)} prefixes for {len(lines)} lines: give one per line ('' for none)")
        if shortlist and self.shortlist is None:
            raise ValueError(f"shortlist: {self.dir} has no shortlist (export it with `seqattn export --shortlist`)")
        forced = None if prefixes is None or not any(p.strip() for p in prefixes) else self.tgt.encode(prefixes)
        copies = num_samples if sampling is not None else 1
        ids = self.src.encode(lines)
        cap = self.meta["max_len"]
        truncated = [len(s) > cap for s in ids]
        ids = [s[:cap] for s in ids]
        results: list[list[Translation]] = [[] for _ in lines]
        for i in (i for i, s in enumerate(ids) if not s):
            results[i] = [Translation("", [], [], [] if attention else None, 0.0) for _ in range(copies)]
        rows = sorted(((i, j) for i in range(len(ids)) if ids[i] for j in range(copies)), key=lambda r: len(ids[r[0]]))
        for start in range(0, len(rows), batch_size):
            part = rows[start : start + batch_size]
            keys = np.array([i * copies + j for i, j in part], np.int64)
            batch = [ids[i] for i, _ in part]
            part_prefixes = None if forced is None else [forced[i] for i, _ in part]
            vocab = None
            if shortlist:              # the batch's target pieces: the search's ids are positions in vocab
                vocab, part_prefixes = self.shortlist.batch(batch, part_prefixes)
            hyps = self._decode(batch, beam, nbest, alpha, attention, sampling, keys, part_prefixes, coverage,
                                stopping or self.stopping, vocab)
            if vocab is not None:
                hyps = [[replace(h, ids=target_ids(vocab, h.ids)) for h in nb] for nb in hyps]
            alts = choices(_ExportSteps(self, *_pad(batch)), [nb[0].ids for nb in hyps], alternatives) \
                if alternatives else [None] * len(hyps)
            for (i, _), nb, alt in zip(part, hyps, alts):
                results[i].extend(self._result(ids[i], h, attention, truncated[i], alt if n == 0 else None)
                                  for n, h in enumerate(nb))
        return results

    def _decode(self, batch: list[list[int]], beam: int, nbest: int, alpha: float, attention: bool,
                sampling: Sampling | None, keys: np.ndarray, prefixes: list[list[int]] | None = None,
                coverage: float = 0.0, stopping: Stopping | None = None, vocab: np.ndarray | None = None):
        src, src_len = _pad(batch)
        steps = _ExportSteps(self, src, src_len, vocab)
        limits = max_lengths(src_len, self.meta["max_output_ratio"])
        if beam == 1:
            return [[h] for h in greedy(steps, limits, src_len, attention, sampling, keys, prefixes)]
        return beam_search(steps, limits, src_len, beam, alpha, nbest, attention, prefixes, coverage,
                           stopping or self.stopping)

    def _result(self, src_ids: list[int], hyp, attention: bool, truncated: bool, alternatives=None) -> Translation:
        text = self.tgt.decode(hyp.ids)
        alts = None if alternatives is None else [
            [("<eos>" if i == EOS else self.tgt.pieces([i])[0], round(p, 5)) for i, p in zip(*pos)]
            for pos in alternatives]
        if not attention:
            return Translation(text, [], [], None, hyp.score, truncated, alts)
        src_tokens = self.src.pieces(src_ids) + ["<eos>"]
        tgt_tokens = self.tgt.pieces(hyp.ids) + (["<eos>"] if hyp.finished else [])
        att = None if hyp.attention is None else [[round(float(w), 5) for w in row] for row in hyp.attention]
        return Translation(text, src_tokens, tgt_tokens, att, hyp.score, truncated, alts)


def _pad(batch: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """Return (src batch x longest+1 ids with <eos> appended, PAD after; lengths)."""
    src_len = np.array([len(s) + 1 for s in batch], np.int64)
    src = np.zeros((len(batch), int(src_len.max())), np.int64)
    for r, s in enumerate(batch):
        src[r, : len(s) + 1] = s + [EOS]
    return src, src_len


class _ExportSteps:
    """`search.Steps` of a batch encoded by encoder.onnx, stepping with step.onnx; given vocab (a shortlist's
    ascending target ids), with step_shortlist.onnx: the ids steps read and write are positions in vocab."""

    def __init__(self, runtime: Runtime, src: np.ndarray, src_len: np.ndarray, vocab: np.ndarray | None = None):
        meta = runtime.meta
        outs = dict(zip(meta["encoder_outputs"], runtime.sessions["encoder.onnx"].run(
            None, {"src": src, "src_len": src_len})))
        self.session = runtime.sessions["step.onnx" if vocab is None else "step_shortlist.onnx"]
        self.outputs, self.vocab = meta["step_outputs"], vocab
        self.lstm, self.feeding, self.hidden = runtime.lstm, runtime.feeding, meta["dec_hidden_size"]
        self.ranks, self.size = runtime.ranks, meta["tgt_vocab"]
        self.state = [outs["h0"]] + ([outs["c0"]] if self.lstm else [])
        if "mask" not in outs:                        # exports of seqattn before the mask was an output
            outs["mask"] = src != PAD
        wanted = meta["step_inputs"]
        sources = ("memory", "keys", "mask", "context")   # each batch x src_len (x *)
        self.source = {k: outs[k] for k in sources if k in wanted}
        self.rows, self.sents = self.source, np.arange(len(src))

    def start(self):
        feed = np.zeros((len(self.sents), self.hidden), np.float32) if self.feeding else None
        return self.state, feed

    def take(self, state, feed, rows: np.ndarray):
        return [s[:, rows] for s in state], None if feed is None else feed[rows]

    def step(self, y: np.ndarray, state, feed, sents: np.ndarray):
        return self.step_ranked(y, state, feed, sents, 0)[:4]

    def step_ranked(self, y: np.ndarray, state, feed, sents: np.ndarray, m: int):
        """`search.Steps.step`, and each row's m best log-probabilities and their ids from the step graph's
        TopK (exports of version 3 on), or None (m 0, an earlier export, m above the vocabulary)."""
        if not np.array_equal(sents, self.sents):     # sentences have finished: their rows leave
            self.rows, self.sents = {k: v[sents] for k, v in self.source.items()}, sents
        x = {"y": y, "h": state[0], **self.rows}
        if self.vocab is not None:
            x.update(y=self.vocab[y], vocab=self.vocab)
        if self.lstm:
            x["c"] = state[1]
        if feed is not None:
            x["feed"] = feed
        ranks = self.ranks and 0 < m <= (self.size if self.vocab is None else len(self.vocab))
        if self.ranks:
            x["top_k"] = np.array([m if ranks else 0], np.int64)   # 0: ONNX Runtime skips the ranking
        got = dict(zip(self.outputs, self.session.run(None, x)))
        new_state = [got["h_out"]] + ([got["c_out"]] if self.lstm else [])
        return (got["logp"], new_state, got["s_tilde"] if self.feeding else None, got.get("alpha"),
                (got["top_logp"], got["top_ids"]) if ranks else None)
