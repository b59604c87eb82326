"""Export a trained model to ONNX: the encoder and one decoder step, for `seqattn_runtime` (no PyTorch).

The export directory holds:
- encoder.onnx: src (batch x src_len int64, <eos> last, padded with 0) and src_len (batch) -> memory
  (batch x src_len x enc_out), the attention keys when the score has its own (general, concat), and the
  decoder's initial state h0 (and c0 for an LSTM), each layers x batch x dec_hidden.
- step.onnx: y (rows, the previous ids), h (and c), feed (rows x dec_hidden, input feeding only), memory,
  keys, mask (batch x src_len bool, True at real tokens) -> logp (rows x tgt_vocab log-probabilities),
  the new h (and c), s~ (rows x dec_hidden, fed back with input feeding), alpha (rows x src_len); the
  rows of a sentence's beams share its batch row of memory (rows = batch x beams, consecutive).
- the SentencePiece model(s), tgt_pieces.txt with a joint vocabulary, and seqattn.json (sizes, names).
Both graphs have dynamic batch, rows and source-length axes. The export checks itself before it
reports success: onnx.checker, then ONNX Runtime's outputs against PyTorch's on sentences of its own.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from .checkpoint import atomic_write
from .data.batching import pad_sources
from .data.tokenizer import SOS
from .errors import SeqattnError
from .model.seq2seq import Seq2Seq

FORMAT = "seqattn-onnx"
VERSION = 1
OPSET = 17
TOLERANCE = 1e-4   # largest difference between ONNX Runtime's and PyTorch's outputs the export accepts


class _Encoder(nn.Module):
    """The model's encode() in the form the ONNX exporter takes: the packed RNN reads the embeddings.
    (Use it in eval mode: the exporter gives the wrapper back the mode it had, and the model with it.)"""

    def __init__(self, model: Seq2Seq):
        super().__init__()
        self.model = model

    def forward(self, src: torch.Tensor, src_len: torch.Tensor):
        enc, m = self.model.encoder, self.model
        packed = pack_padded_sequence(enc.embed(src), src_len, batch_first=True, enforce_sorted=False)
        out, final = enc.rnn(packed)
        memory, _ = pad_packed_sequence(out, batch_first=True, total_length=src.size(1))
        final = tuple(map(enc.merge_directions, final)) if isinstance(final, tuple) else enc.merge_directions(final)
        state = m.initial_state(final)
        outputs = [memory]
        if _own_keys(m):
            outputs.append(m.decoder.keys(memory))
        return (*outputs, *(state if isinstance(state, tuple) else (state,)))


class _Step(nn.Module):
    """The model's step() with named tensor inputs, log-probabilities out."""

    def __init__(self, model: Seq2Seq):
        super().__init__()
        self.model = model

    def forward(self, *inputs: torch.Tensor):
        m = self.model
        names = step_inputs(m)
        x = dict(zip(names, inputs))
        state = (x["h"], x["c"]) if "c" in x else x["h"]
        memory = x.get("memory")
        mask = x.get("mask")
        keys = x.get("keys", memory) if m.cfg.attention != "none" else None
        group = x["y"].size(0) // memory.size(0) if memory is not None else 1
        if memory is None:   # no attention: the step never reads the source
            memory = x["h"].new_zeros(x["y"].size(0), 1, 1)
            mask = torch.ones(x["y"].size(0), 1, dtype=torch.bool)
        logits, state, s_tilde, alpha = m.decoder.step(x["y"], state, memory, keys, mask, x.get("feed"), group)
        outputs = [torch.log_softmax(logits.float(), -1)]
        outputs += list(state) if isinstance(state, tuple) else [state]
        outputs.append(s_tilde)
        if alpha is not None:
            outputs.append(alpha)
        return tuple(outputs)


@contextlib.contextmanager
def _quiet_native_stderr():
    """Send what native code writes to file descriptor 2 to /dev/null for the block (the TorchScript
    exporter's C++ logs warnings about its own shape inference of packed sequences there)."""
    sys.stderr.flush()
    saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


def _own_keys(model: Seq2Seq) -> bool:
    return model.cfg.attention in ("general", "concat")


def encoder_outputs(model: Seq2Seq) -> list[str]:
    return ["memory"] + (["keys"] if _own_keys(model) else []) + (["h0", "c0"] if model.cfg.rnn == "lstm" else ["h0"])


def step_inputs(model: Seq2Seq) -> list[str]:
    names = ["y", "h"] + (["c"] if model.cfg.rnn == "lstm" else [])
    if model.cfg.input_feeding:
        names.append("feed")
    if model.cfg.attention != "none":
        names += ["memory"] + (["keys"] if _own_keys(model) else []) + ["mask"]
    return names


def step_outputs(model: Seq2Seq) -> list[str]:
    names = ["logp", "h_out"] + (["c_out"] if model.cfg.rnn == "lstm" else []) + ["s_tilde"]
    return names + (["alpha"] if model.cfg.attention != "none" else [])


def _sample_inputs(model: Seq2Seq, lengths: list[int], beams: int, seed: int = 0):
    """Return (encoder inputs, step inputs from the encoder's outputs) for random sources of these lengths."""
    g = torch.Generator().manual_seed(seed)
    vocab = model.encoder.embed.num_embeddings
    src, src_len = pad_sources([torch.randint(4, vocab, (n,), generator=g).tolist() for n in lengths])
    enc = model.encode(src, src_len)
    state = enc.state if isinstance(enc.state, tuple) else (enc.state,)
    rows = len(lengths) * beams
    x = {"y": torch.randint(4, model.decoder.out.out_features, (rows,), generator=g)}
    x["y"][:beams] = SOS
    x["h"] = state[0].repeat_interleave(beams, 1)
    if len(state) == 2:
        x["c"] = state[1].repeat_interleave(beams, 1)
    if model.cfg.input_feeding:
        x["feed"] = torch.randn(rows, model.decoder.hidden_size, generator=g)
    if model.cfg.attention != "none":
        x["memory"] = enc.memory
        if _own_keys(model):
            x["keys"] = enc.keys
        x["mask"] = enc.mask
    return (src, src_len), [x[name] for name in step_inputs(model)]


@torch.no_grad()
def export(model: Seq2Seq, tokenizer_files: list[Path], out: Path, max_len: int, max_output_ratio: float,
           langs: tuple[str | None, str | None] = (None, None), quantize: str | None = None) -> dict:
    """Write the ONNX export of model (plain, on the CPU) into out with the tokenizer files; check it;
    return seqattn.json's content plus the largest difference found against PyTorch ("max_diff").
    max_len, max_output_ratio: the model's data.max_len and train.max_output_ratio; langs: its languages.
    quantize="int8": after the float32 export has passed its check, ONNX Runtime's dynamic quantization
    stores the weights of the matrix products and LSTMs (not GRUs) as int8: about a quarter of the size and
    4x faster one sentence at a time on Multi30k; outputs no longer equal PyTorch's float32 ones (max_diff
    says by how much)."""
    import onnx

    model = model.float().cpu().eval()
    out.mkdir(parents=True, exist_ok=True)
    (enc_args, step_args) = _sample_inputs(model, [5, 3], beams=2)
    steps_in = step_inputs(model)
    dynamic_enc = {"src": {0: "batch", 1: "src_len"}, "src_len": {0: "batch"}, "memory": {0: "batch", 1: "src_len"},
                   "keys": {0: "batch", 1: "src_len"}, "h0": {1: "batch"}, "c0": {1: "batch"}}
    dynamic_step = {"y": {0: "rows"}, "h": {1: "rows"}, "c": {1: "rows"}, "feed": {0: "rows"},
                    "memory": {0: "batch", 1: "src_len"}, "keys": {0: "batch", 1: "src_len"},
                    "mask": {0: "batch", 1: "src_len"}, "logp": {0: "rows"}, "h_out": {1: "rows"},
                    "c_out": {1: "rows"}, "s_tilde": {0: "rows"}, "alpha": {0: "rows", 1: "src_len"}}
    with warnings.catch_warnings(), _quiet_native_stderr():   # the TorchScript exporter warns it is not the default
        warnings.simplefilter("ignore")
        for name, module, args, ins, outs, dyn in (
                ("encoder.onnx", _Encoder(model).eval(), enc_args, ["src", "src_len"], encoder_outputs(model),
                 dynamic_enc),
                ("step.onnx", _Step(model).eval(), tuple(step_args), steps_in, step_outputs(model), dynamic_step)):
            tmp = out / f".{name}.tmp"
            torch.onnx.export(module, args, str(tmp), dynamo=False, input_names=ins, output_names=outs,
                              dynamic_axes={k: v for k, v in dyn.items() if k in ins + outs}, opset_version=OPSET)
            onnx.checker.check_model(str(tmp), full_check=True)
            tmp.replace(out / name)
    for f in tokenizer_files:
        shutil.copyfile(f, out / f.name)
    meta = {"format": FORMAT, "version": VERSION, "rnn": model.cfg.rnn, "layers": model.cfg.layers,
            "attention": model.cfg.attention, "input_feeding": model.cfg.input_feeding,
            "dec_hidden_size": model.decoder.hidden_size, "src_vocab": model.encoder.embed.num_embeddings,
            "tgt_vocab": model.decoder.out.out_features, "max_len": max_len, "max_output_ratio": max_output_ratio,
            "src_lang": langs[0], "tgt_lang": langs[1],
            "tokenizers": [f.name for f in tokenizer_files], "encoder_outputs": encoder_outputs(model),
            "step_inputs": steps_in, "step_outputs": step_outputs(model)}
    diff = check(model, out)
    if quantize == "int8":
        import logging

        from onnxruntime.quantization import QuantType, quantize_dynamic

        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)   # the quantizer logs advice on image models' pre-processing
        try:
            for name in ("encoder.onnx", "step.onnx"):
                tmp = out / f".{name}.int8.tmp"
                quantize_dynamic(str(out / name), str(tmp), weight_type=QuantType.QInt8)
                tmp.replace(out / name)
        finally:
            root.setLevel(level)
        diff = check(model, out, tolerance=float("inf"))
    elif quantize is not None:
        raise SeqattnError(f"unknown quantization {quantize!r} (int8 is the one there is)")
    meta["quantize"] = quantize
    atomic_write(out / "seqattn.json", lambda f: f.write(json.dumps(meta, indent=1).encode("utf-8")))
    return {**meta, "max_diff": diff}


def export_model_dir(model_dir: str | Path, out: str | Path, checkpoint: str | None = None,
                     quantize: str | None = None) -> dict:
    """Export the model of a model directory (its checkpoint as `translate` picks it, or the given one)
    with its tokenizers into out; return `export`'s result."""
    from .translator import _load_model

    model_dir, out = Path(model_dir), Path(out)
    model, cfg, _ = _load_model(model_dir, checkpoint, torch.device("cpu"), None, fast=False)
    names = ["spm.model", "tgt_pieces.txt"] if (model_dir / "spm.model").exists() else ["src.model", "tgt.model"]
    files = [model_dir / n for n in names if (model_dir / n).exists()]
    langs = (cfg.data.src_lang, cfg.data.tgt_lang)
    return export(model, files, out, cfg.data.max_len, cfg.train.max_output_ratio, langs, quantize)


def check(model: Seq2Seq, out: Path, tolerance: float = TOLERANCE) -> float:
    """Return the largest difference between ONNX Runtime's and PyTorch's outputs of the exported graphs
    on sources other than the export's (other batch, lengths and beams); raise SeqattnError above tolerance
    or when an output is not finite."""
    import onnxruntime as ort

    enc_args, step_args = _sample_inputs(model, [7, 2, 4], beams=3, seed=1)
    worst = 0.0
    for name, module, ins, args in (("encoder.onnx", _Encoder(model).eval(), ["src", "src_len"], enc_args),
                                    ("step.onnx", _Step(model).eval(), step_inputs(model), step_args)):
        sess = ort.InferenceSession(str(out / name), providers=["CPUExecutionProvider"])
        feeds = {n: a.numpy() for n, a in zip(ins, args)}
        got = sess.run(None, feeds)
        want = module(*args)
        for g, w in zip(got, want):
            if g.shape != tuple(w.shape) or not np.isfinite(g[g > -np.inf]).all():
                raise SeqattnError(f"{out / name}: an output has shape {g.shape} or values PyTorch's has not")
            worst = max(worst, float(np.abs(g - w.numpy()).max()) if g.size else 0.0)
    if worst > tolerance:
        raise SeqattnError(f"{out}: the export's outputs differ from PyTorch's by {worst:.2e} (> {tolerance:g})")
    return worst
