"""seqattn_runtime: translate with a `seqattn export` directory using ONNX Runtime, without PyTorch.

It imports numpy, onnxruntime and sentencepiece only:

    from seqattn_runtime import Runtime
    Runtime("export_dir").translate(["ein Hund läuft ."], beam=5)
"""

from .translator import ExportError, Runtime, Translation

__all__ = ["ExportError", "Runtime", "Translation"]
