"""Export a trained model to ONNX: its own `encode` and `step`, traced, for `seqattn_runtime` (no PyTorch).

The graphs are the model's code as it runs (`Seq2Seq.encode`, and `Seq2Seq.step` as `fast.Decoding`
arranges it with plain products: the first layer's input table, the cells as products, the W_c split),
not a copy of it: an edited model exports its edit (its step is then the model's own, as `Decoding`
steps aside). The export directory holds:
- encoder.onnx: src (batch x src_len int64, <eos> last, padded with 0) and src_len (batch) -> memory
  (batch x src_len x enc_out), the attention keys when the score has its own (general, concat), the mask
  (batch x src_len bool, True at real tokens), with the W_c split context (W_ca h_i, batch x src_len x
  dec_hidden), and the decoder's initial state h0 (and c0 for an LSTM), each layers x batch x dec_hidden.
- step.onnx: y (rows, the previous ids), h (and c), feed (rows x dec_hidden, input feeding only), memory,
  keys, mask (batch x src_len bool, True at real tokens), context -> logp (rows x tgt_vocab log-probabilities),
  the new h (and c), s~ (rows x dec_hidden, fed back with input feeding), alpha (rows x src_len); the
  rows of a sentence's beams share its batch row of memory (rows = batch x beams, consecutive). Last, top_k
  (1 id count; 0: none) -> top_logp, top_ids (rows x top_k): each row's best log-probabilities and their
  ids, ranked by ONNX TopK (`_add_ranking`), from which beam search takes its candidates.
- with a shortlist (`seqattn export --shortlist`): step_shortlist.onnx, the same step with one more input,
  vocab (V' ascending target ids, the specials first: `Shortlist.vocab`), whose logp (rows x V') covers
  those ids only, and the model's shortlist.npz beside it.
- the SentencePiece model(s), tgt_pieces.txt with a joint vocabulary, and seqattn.json (sizes, names).
Both graphs have dynamic batch, rows and source-length axes. The export checks itself before it
reports success: onnx.checker, then ONNX Runtime's outputs against the plain model's on sentences,
batch and beams other than the traced ones. A model whose code the tracer cannot export, or whose graphs
do not compute what the model computes (e.g. control flow that depends on the values), is refused with a
one-line error, never exported wrong.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from seqattn_runtime.rules import EXACT, Stopping
from seqattn_runtime.shortlist import SPECIALS, Shortlist
from seqattn_runtime.translator import FORMAT, VERSION

from .checkpoint import atomic_write
from .data.batching import pad_sources
from .data.tokenizer import SOS
from .errors import SeqattnError
from .fast.decoding import Decoding, Prepared
from .model.seq2seq import Encoded, Seq2Seq

OPSET = 17
RANK_INPUTS, RANK_OUTPUTS = ["top_k"], ["top_logp", "top_ids"]   # the step's TopK (`_add_ranking`)
TOLERANCE = 1e-4   # largest difference between ONNX Runtime's and PyTorch's outputs the export accepts


@dataclass
class _Interface:
    """The export's inputs and outputs, read off the model's own encode and step on a sample, and the
    arrangement of the step that the graphs trace (`fast.Decoding` with plain products), where it applies."""

    own_keys: bool     # the keys are not the memory itself (general, concat): an output of their own
    attends: bool      # the step returns attention weights: it reads memory, keys and mask
    lstm: bool         # the decoder state is (h, c), else h
    feeding: bool      # the step takes s~_{t-1} (input feeding)
    arranged: Decoding   # the step as `Decoding(model, packed=False)` runs it (the model's own where it steps aside)

    @property
    def split(self) -> bool:
        """Whether the W_c split applies: the encoder also gives context = W_ca h_i, which the step reads."""
        return self.arranged.context is not None

    @classmethod
    @torch.no_grad()
    def of(cls, model: Seq2Seq) -> _Interface:
        src, src_len = pad_sources([[4, 5, 6], [4]])
        enc = model.encode(src, src_len)
        feed = model.initial_feed(2, src.device)
        _, state, _, alpha = model.step(torch.full((2,), SOS), enc.state, enc, feed)
        return cls(enc.keys is not None and enc.keys is not enc.memory, alpha is not None, isinstance(state, tuple),
                   feed is not None, Decoding(model, packed=False))

    def encoder_outputs(self) -> list[str]:
        return ["memory"] + (["keys"] if self.own_keys else []) + ["mask"] + (["context"] if self.split else []) \
            + (["h0", "c0"] if self.lstm else ["h0"])

    def step_inputs(self) -> list[str]:
        names = ["y", "h"] + (["c"] if self.lstm else []) + (["feed"] if self.feeding else [])
        source = ["memory"] + (["keys"] if self.own_keys else []) + ["mask"] + (["context"] if self.split else [])
        return names + (source if self.attends else [])

    def step_outputs(self) -> list[str]:
        return ["logp", "h_out"] + (["c_out"] if self.lstm else []) + ["s_tilde"] + (["alpha"] if self.attends else [])


class _Graph(nn.Module):
    """A module traced into one graph: the model, and as buffers the tensors the arranged step derives from
    its weights, so that they are initializers of the graph (which int8 quantizes), not constants."""

    def __init__(self, model: Seq2Seq, io: _Interface):
        super().__init__()
        self.model, self.io = model, io
        for i, t in enumerate(io.arranged.derived()):
            self.register_buffer(f"derived_{i}", t)


class _Encode(_Graph):
    """The model's own `encode`, its Encoded flattened into the export's outputs."""

    def forward(self, src: torch.Tensor, src_len: torch.Tensor):
        enc = self.model.encode(src, src_len)
        state = enc.state if isinstance(enc.state, tuple) else (enc.state,)
        context = [self.io.arranged.prepare(enc).context] if self.io.split else []
        return (enc.memory, *([enc.keys] if self.io.own_keys else []), enc.mask, *context, *state)


class _Step(_Graph):
    """The model's `step` (as arranged) with named tensor inputs, log-probabilities out; shortlisted: with a
    last input vocab, the target ids the step scores (its logp covers those only)."""

    def __init__(self, model: Seq2Seq, io: _Interface, shortlisted: bool = False):
        super().__init__(model, io)
        self.shortlisted = shortlisted

    def forward(self, *inputs: torch.Tensor):
        x = dict(zip(self.io.step_inputs() + (["vocab"] if self.shortlisted else []), inputs))
        state = (x["h"], x["c"]) if "c" in x else x["h"]
        if self.io.attends:
            memory, mask = x["memory"], x["mask"]
            keys = x.get("keys", memory)
        else:   # the step reads no source (the check holds it to the model's step on real ones)
            memory, mask = x["h"].new_zeros(x["y"].size(0), 1, 1), torch.ones(x["y"].size(0), 1, dtype=torch.bool)
            keys = None
        group = x["y"].size(0) // memory.size(0)
        enc = Encoded(memory, keys, mask, None)
        if self.io.split:
            enc = Prepared(enc, x["context"])
        with torch.no_grad():   # Decoding runs its own step in inference only
            return _step_outputs(*self.io.arranged.step(x["y"], state, enc, x.get("feed"), group, x.get("vocab")))


def _step_outputs(logits: torch.Tensor, state, s_tilde: torch.Tensor, alpha: torch.Tensor | None) -> tuple:
    """Return `Seq2Seq.step`'s results as step.onnx's outputs: log-probabilities (rows x V), h (and c),
    s~ (rows x dec_hidden), and alpha (rows x src_len) when the model attends."""
    states = state if isinstance(state, tuple) else (state,)
    return (torch.log_softmax(logits.float(), -1), *states, s_tilde, *(() if alpha is None else (alpha,)))


@contextlib.contextmanager
def _quiet_native_output():
    """Send what native code writes to file descriptors 1 and 2 to /dev/null for the block (the TorchScript
    exporter's C++ logs warnings about its own shape inference of packed sequences, and dumps its graph
    when it fails)."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved, null = [os.dup(1), os.dup(2)], os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    os.dup2(null, 2)
    try:
        yield
    finally:
        for fd, copy in zip((1, 2), saved):
            os.dup2(copy, fd)
            os.close(copy)
        os.close(null)


@torch.no_grad()
def _sample_inputs(model: Seq2Seq, io: _Interface, lengths: list[int], beams: int, seed: int = 0):
    """Return (encoder inputs, step inputs from the model's encoding) for random sources of these lengths."""
    g = torch.Generator().manual_seed(seed)
    vocab = model.encoder.embed.num_embeddings
    src, src_len = pad_sources([torch.randint(4, vocab, (n,), generator=g).tolist() for n in lengths])
    enc = model.encode(src, src_len)
    state = enc.state if isinstance(enc.state, tuple) else (enc.state,)
    rows = len(lengths) * beams
    x = {"y": torch.randint(4, model.decoder.out.out_features, (rows,), generator=g)}
    x["y"][:beams] = SOS
    x["h"] = state[0].repeat_interleave(beams, 1)
    if io.lstm:
        x["c"] = state[1].repeat_interleave(beams, 1)
    if io.feeding:
        x["feed"] = torch.randn(rows, model.decoder.hidden_size, generator=g)
    x.update(memory=enc.memory, keys=enc.keys, mask=enc.mask)
    if io.split:
        x["context"] = io.arranged.prepare(enc).context
    tgt_vocab = model.decoder.out.out_features   # a shortlist: the specials, then every few ids from a seeded offset
    x["vocab"] = torch.cat([torch.arange(SPECIALS), torch.arange(SPECIALS + seed % 3, tgt_vocab, 2 + seed % 3)])
    return (src, src_len), x


@torch.no_grad()
def export(model: Seq2Seq, tokenizer_files: list[Path], out: Path, max_len: int, max_output_ratio: float,
           langs: tuple[str | None, str | None] = (None, None), quantize: str | None = None,
           stopping: Stopping = EXACT, shortlist: Path | None = None) -> dict:
    """Write the ONNX export of model (plain, on the CPU) into out with the tokenizer files; check it;
    return seqattn.json's content plus the largest difference found against PyTorch ("max_diff").
    max_len, max_output_ratio: the model's data.max_len and decode.max_output_ratio; langs: its languages;
    stopping: the beam search's stopping rule the runtime uses by default (the model's decode section);
    shortlist: the model's shortlist.npz, for step_shortlist.onnx (decoding with a shortlist).
    quantize="int8": after the float32 export has passed its check, ONNX Runtime's dynamic quantization
    stores the weights of the matrix products (and the input table, the encoder's LSTMs) as int8: about a
    quarter of the size; outputs no longer equal PyTorch's float32 ones (max_diff says by how much)."""
    if quantize not in (None, "int8"):
        raise SeqattnError(f"unknown quantization {quantize!r} (int8 is the one there is)")
    model = model.float().cpu().eval()
    if shortlist is not None:
        try:
            Shortlist.load(shortlist).check_fits(model.encoder.embed.num_embeddings, model.decoder.out.out_features,
                                                 shortlist)
        except ValueError as e:
            raise SeqattnError(str(e)) from None
    out.mkdir(parents=True, exist_ok=True)
    for stale in ("step_shortlist.onnx", "shortlist.npz"):   # an earlier export's, into the same directory
        (out / stale).unlink(missing_ok=True)
    io = _Interface.of(model)
    graphs = _graphs(model, io, shortlist is not None)
    _trace(graphs, out)
    for name, *_ in graphs[1:]:
        _add_ranking(out / name)
    for f in tokenizer_files + ([shortlist] if shortlist is not None else []):
        shutil.copyfile(f, out / ("shortlist.npz" if f is shortlist else f.name))
    meta = {"format": FORMAT, "version": VERSION, "rnn": model.cfg.rnn, "layers": model.cfg.layers,
            "attention": model.cfg.attention, "input_feeding": model.cfg.input_feeding,
            "dec_hidden_size": model.decoder.hidden_size, "src_vocab": model.encoder.embed.num_embeddings,
            "tgt_vocab": model.decoder.out.out_features, "max_len": max_len, "max_output_ratio": max_output_ratio,
            "stopping": stopping.mode, "patience": stopping.patience, "src_lang": langs[0], "tgt_lang": langs[1],
            "tokenizers": [f.name for f in tokenizer_files], "encoder_outputs": io.encoder_outputs(),
            "step_inputs": io.step_inputs() + RANK_INPUTS, "step_outputs": io.step_outputs() + RANK_OUTPUTS,
            "shortlist": None if shortlist is None else "shortlist.npz", "quantize": quantize}
    diff = check(model, out, io)
    if quantize == "int8":
        _quantize_int8(out, [name for name, *_ in graphs])
        diff = check(model, out, io, tolerance=float("inf"))
    atomic_write(out / "seqattn.json", lambda f: f.write(json.dumps(meta, indent=1).encode("utf-8")))
    return {**meta, "max_diff": diff}


def _graphs(model: Seq2Seq, io: _Interface, shortlisted: bool) -> list[tuple]:
    """Return each graph to trace: (file name, module, sample arguments, input names, output names, dynamic
    axes)."""
    enc_args, x = _sample_inputs(model, io, [5, 3], beams=2)
    steps_in = io.step_inputs()
    dynamic_enc = {"src": {0: "batch", 1: "src_len"}, "src_len": {0: "batch"}, "memory": {0: "batch", 1: "src_len"},
                   "keys": {0: "batch", 1: "src_len"}, "mask": {0: "batch", 1: "src_len"},
                   "context": {0: "batch", 1: "src_len"}, "h0": {1: "batch"}, "c0": {1: "batch"}}
    dynamic_step = {"y": {0: "rows"}, "h": {1: "rows"}, "c": {1: "rows"}, "feed": {0: "rows"},
                    "memory": {0: "batch", 1: "src_len"}, "keys": {0: "batch", 1: "src_len"},
                    "mask": {0: "batch", 1: "src_len"}, "context": {0: "batch", 1: "src_len"},
                    "logp": {0: "rows"}, "h_out": {1: "rows"},
                    "c_out": {1: "rows"}, "s_tilde": {0: "rows"}, "alpha": {0: "rows", 1: "src_len"}}
    graphs = [("encoder.onnx", _Encode(model, io).eval(), enc_args, ["src", "src_len"], io.encoder_outputs(),
               dynamic_enc),
              ("step.onnx", _Step(model, io).eval(), tuple(x[n] for n in steps_in), steps_in, io.step_outputs(),
               dynamic_step)]
    if shortlisted:
        short_in = steps_in + ["vocab"]
        graphs.append(("step_shortlist.onnx", _Step(model, io, shortlisted=True).eval(), tuple(x[n] for n in short_in),
                       short_in, io.step_outputs(),
                       {**dynamic_step, "vocab": {0: "shortlist"}, "logp": {0: "rows", 1: "shortlist"}}))
    return graphs


def _trace(graphs: list[tuple], out: Path) -> None:
    """Trace each graph into out (through a temporary file, checked by onnx.checker before it takes the
    name); a model whose code the tracer cannot export is a one-line error."""
    import onnx

    with warnings.catch_warnings(), _quiet_native_output():   # the TorchScript exporter warns it is not the default
        warnings.simplefilter("ignore")
        for name, module, args, ins, outs, dyn in graphs:
            tmp = out / f".{name}.tmp"
            try:
                torch.onnx.export(module, args, str(tmp), dynamo=False, input_names=ins, output_names=outs,
                                  dynamic_axes={k: v for k, v in dyn.items() if k in ins + outs},
                                  opset_version=OPSET)
            except Exception as e:   # the tracer meets code it cannot export: refuse, naming the reason
                first = (str(e).strip().splitlines() or [type(e).__name__])[0]
                tmp.unlink(missing_ok=True)
                raise SeqattnError(f"cannot export this model's {name[:-5]} to ONNX: {first[:200]}") from None
            onnx.checker.check_model(str(tmp), full_check=True)
            tmp.replace(out / name)


def _add_ranking(path: Path) -> None:
    """Give the step graph at path a last input top_k (1 int64) and last outputs top_logp and top_ids (rows x
    top_k): each row's top_k largest log-probabilities, largest first, equal values the lower id first (ONNX
    TopK's order), and their ids, the candidates beam search needs, ranked by ONNX Runtime in the step."""
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(str(path))
    graph = model.graph
    graph.input.append(helper.make_tensor_value_info("top_k", TensorProto.INT64, [1]))
    graph.node.append(helper.make_node("TopK", ["logp", "top_k"], RANK_OUTPUTS, name="/rank/TopK", axis=-1,
                                       largest=1, sorted=1))
    graph.output.extend([helper.make_tensor_value_info("top_logp", TensorProto.FLOAT, ["rows", "top_k"]),
                         helper.make_tensor_value_info("top_ids", TensorProto.INT64, ["rows", "top_k"])])
    tmp = path.with_name(f".{path.name}.rank.tmp")
    onnx.save(model, str(tmp))
    onnx.checker.check_model(str(tmp), full_check=True)
    tmp.replace(path)


def _quantize_int8(out: Path, names: list[str]) -> None:
    """Replace the graphs `names` in out by ONNX Runtime's dynamic int8 quantization of their weights (the
    shortlist's gathered output rows excepted: `_shortlist_nodes`)."""
    import logging

    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)   # the quantizer logs advice on image models' pre-processing
    try:
        for name in names:
            tmp = out / f".{name}.int8.tmp"
            quantize_dynamic(str(out / name), str(tmp), weight_type=QuantType.QInt8,
                             nodes_to_exclude=_shortlist_nodes(onnx.load(str(out / name)).graph))
            tmp.replace(out / name)
    finally:
        root.setLevel(level)


def _shortlist_nodes(graph) -> list[str]:
    """Return the names of the nodes that take the shortlist's rows of the output layer (those reading the
    vocab input) and of the nodes reading theirs: int8 keeps them float32, since dequantizing a batch's
    rows at every step costs more than the int8 product saves."""
    rows = [n for n in graph.node if "vocab" in n.input]
    outs = {o for n in rows for o in n.output}
    return [n.name for n in rows] + [n.name for n in graph.node if outs & set(n.input)]


def export_model_dir(model_dir: str | Path, out: str | Path, checkpoint: str | None = None,
                     quantize: str | None = None, shortlist: bool = False) -> dict:
    """Export the model of a model directory (its checkpoint as `translate` picks it, or the given one)
    with its tokenizers (and with shortlist, its shortlist.npz) into out; return `export`'s result."""
    from .translator import _load_model

    model_dir, out = Path(model_dir), Path(out)
    lexical = model_dir / "shortlist.npz"
    if shortlist and not lexical.exists():
        raise SeqattnError(f"--shortlist: {model_dir} has no shortlist.npz (build one with `seqattn shortlist "
                           f"{model_dir}`)")
    model, cfg, _ = _load_model(model_dir, checkpoint, torch.device("cpu"), None, fast=False)
    langs = (cfg.data.src_lang, cfg.data.tgt_lang)
    return export(model, tokenizer_files(model_dir), out, cfg.data.max_len, cfg.decode.max_output_ratio, langs,
                  quantize, Stopping(cfg.decode.stopping, cfg.decode.patience), lexical if shortlist else None)


def tokenizer_files(model_dir: Path) -> list[Path]:
    """Return the tokenizer files of a model directory that an export carries: the joint SentencePiece
    model and its target view, or the source and target models."""
    names = ["spm.model", "tgt_pieces.txt"] if (model_dir / "spm.model").exists() else ["src.model", "tgt.model"]
    return [model_dir / n for n in names if (model_dir / n).exists()]


@torch.no_grad()
def check(model: Seq2Seq, out: Path, io: _Interface, tolerance: float = TOLERANCE) -> float:
    """Return the largest difference between ONNX Runtime's outputs of the exported graphs (io: what they read
    and give, `_Interface.of(model)`) and the model's own `encode` and `step` on sources other than the
    export's (other batch, lengths and beams; the step always given the real source, whether or not the
    export passes it); raise SeqattnError above tolerance, or when an output has another shape or is not
    finite: the graphs do not compute the model."""
    import onnxruntime as ort

    beams = 3
    enc_args, x = _sample_inputs(model, io, [7, 2, 4], beams=beams, seed=1)
    state = (x["h"], x["c"]) if io.lstm else x["h"]
    want_step = _step_outputs(*model.step(x["y"], state, Encoded(x["memory"], x["keys"], x["mask"], None),
                                          x.get("feed"), beams))
    graphs = [("encoder.onnx", ["src", "src_len"], enc_args, _Encode(model, io)(*enc_args)),
              ("step.onnx", io.step_inputs(), [x[n] for n in io.step_inputs()], want_step)]
    if (out / "step_shortlist.onnx").exists():
        short_in = io.step_inputs() + ["vocab"]
        graphs.append(("step_shortlist.onnx", short_in, [x[n] for n in short_in],
                       _step_outputs(*model.step(x["y"], state, Encoded(x["memory"], x["keys"], x["mask"], None),
                                                 x.get("feed"), beams, x["vocab"]))))
    worst = 0.0
    for name, ins, args, want in graphs:
        sess = ort.InferenceSession(str(out / name), providers=["CPUExecutionProvider"])
        feeds = {n: a.numpy() for n, a in zip(ins, args)}
        if name != "encoder.onnx":
            got = sess.run(None, {**feeds, "top_k": np.array([beams], np.int64)})
            _check_ranking(out / name, got[0], *got[-2:])
            got = got[:-2]
        else:
            got = sess.run(None, feeds)
        if len(got) != len(want):
            raise SeqattnError(f"{out / name}: {len(got)} outputs where the model gives {len(want)}")
        for g, w in zip(got, want):
            w = w.numpy()
            if g.shape != w.shape or not np.isfinite(g[g > -np.inf]).all():
                raise SeqattnError(f"{out / name}: an output has shape {g.shape} or values the model's has not")
            worst = max(worst, float(np.abs(g.astype(np.float32) - w.astype(np.float32)).max()) if g.size else 0.0)
    if worst > tolerance:
        raise SeqattnError(f"{out}: the export's outputs differ from the model's by {worst:.2e} (> {tolerance:g}): "
                           f"its code does not trace faithfully to ONNX")
    return worst


def _check_ranking(path: Path, logp: np.ndarray, values: np.ndarray, ids: np.ndarray) -> None:
    """Raise SeqattnError unless (values, ids) are each row of logp's largest values and their ids as a stable
    sort ranks them (equal values: the lower id first), the order beam search relies on."""
    want = np.argsort(-logp, axis=1, kind="stable")[:, : ids.shape[1]]
    if not (np.array_equal(ids, want) and np.array_equal(values, np.take_along_axis(logp, want, 1))):
        raise SeqattnError(f"{path}: the step's top_ids are not each row's best log-probabilities in order")
