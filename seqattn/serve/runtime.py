"""`seqattn serve --runtime onnx EXPORT_DIR`: the app over seqattn_runtime instead of PyTorch."""

from __future__ import annotations

from pathlib import Path


class RuntimeTranslator:
    """A `seqattn_runtime.Runtime` with what the app asks of a translator: translate_n, info and stopping."""

    def __init__(self, export_dir: str | Path):
        from seqattn_runtime import ExportError, Runtime

        from ..errors import SeqattnError

        try:
            self.runtime = Runtime(export_dir)
        except ExportError as e:
            raise SeqattnError(str(e)) from None

    def translate_n(self, texts: list[str], attention: bool, options, prefixes: list[str] | None = None) -> list:
        from seqattn_runtime.search import Sampling

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
