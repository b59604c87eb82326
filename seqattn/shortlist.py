"""A model's vocabulary shortlist, built from its training data (`seqattn shortlist`): the rule is
`seqattn_runtime.shortlist`'s, the file MODEL_DIR/shortlist.npz, which `Translator.load` reads."""

from __future__ import annotations

from pathlib import Path

from seqattn_runtime.shortlist import Shortlist, build

from .config import load_config
from .data.corpus import read_parallel, read_split
from .data.tokenizer import Tokenizers
from .errors import SeqattnError


def build_shortlist(model_dir: str | Path, src: str | None = None, tgt: str | None = None, k: int = 50,
                    frequent: int = 100) -> tuple[Path, Shortlist]:
    """Build the shortlist of a model directory from the pairs of src and tgt (default: its config's training
    data), segmented by its tokenizers; write it to MODEL_DIR/shortlist.npz; return (that path, it)."""
    model_dir = Path(model_dir)
    cfg = load_config(model_dir / "config.yaml")
    if (src is None) != (tgt is None):
        raise SeqattnError("give both --src and --tgt, or neither (the model's training data)")
    if src is not None:
        src_lines, tgt_lines = read_parallel(src, tgt)
    elif cfg.data.train_tsv or cfg.data.train_src:
        src_lines, tgt_lines = read_split(cfg.data.train_src, cfg.data.train_tgt, cfg.data.train_tsv)
    else:
        raise SeqattnError(f"{model_dir / 'config.yaml'}: the training data is binarized (data.binarized); give "
                           f"its text with --src and --tgt")
    if k < 1 or frequent < 0:
        raise SeqattnError(f"--k must be >= 1 and --frequent >= 0, got {k} and {frequent}")
    tok = Tokenizers.load(model_dir)
    shortlist = build(tok.src.encode(src_lines), tok.tgt.encode(tgt_lines), len(tok.src), len(tok.tgt), k, frequent)
    path = model_dir / "shortlist.npz"
    shortlist.save(path)
    return path, shortlist
