"""The app's backend over an export (`seqattn-runtime serve`, `seqattn serve --runtime onnx`): ONNX Runtime,
no PyTorch."""

from __future__ import annotations

from pathlib import Path

from ..options import SearchOptions
from ..search import Sampling
from ..translator import Runtime


class RuntimeTranslator:
    """A `seqattn_runtime.Runtime` with what the app asks of a translator (as `seqattn.translator.Translator`
    has them): translate_n(texts, attention, options, prefixes), info(), stopping and shortlist. A missing or
    broken export raises `ExportError` (a SeqattnError) naming the file."""

    def __init__(self, export_dir: str | Path, threads: int = 0):
        self.runtime = Runtime(export_dir, threads=threads)

    def translate_n(self, texts: list[str], attention: bool, options: SearchOptions,
                    prefixes: list[str] | None = None) -> list:
        sampling = Sampling(options.temperature, options.top_k, options.top_p, options.seed) if options.sample else None
        return self.runtime.translate_n(texts, options.beam, options.nbest, options.alpha, attention=attention,
                                        sampling=sampling, num_samples=options.num_samples, prefixes=prefixes,
                                        coverage=options.coverage_penalty, alternatives=options.alternatives,
                                        stopping=options.stopping_rule(self.stopping), shortlist=options.shortlist)

    @property
    def shortlist(self):
        """The export's shortlist (`seqattn export --shortlist`), or None."""
        return self.runtime.shortlist

    @property
    def stopping(self):
        """The beam search's stopping rule when the options do not say: the export's."""
        return self.runtime.stopping

    def info(self) -> dict:
        meta = self.runtime.meta
        keys = ("rnn", "layers", "attention", "input_feeding", "dec_hidden_size")
        return {"model": {k: meta[k] for k in keys}, "src_lang": meta.get("src_lang"), "tgt_lang": meta.get("tgt_lang"),
                "src_vocab": meta["src_vocab"], "tgt_vocab": meta["tgt_vocab"], "device": "cpu",
                "runtime": "onnxruntime", "ensemble": 1}
