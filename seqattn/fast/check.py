"""Whether a fast path applies: the model code it re-expresses is the code it was written for.

A fast path that computes part of the model its own way (the encoder from tables, the decoding step
from packed weights and the split of W_c, the encoder's unpadding in training) is right only for the
code it was written against. So a path decides in two steps, each of which must pass:

1. Module types and options, checked where the path is built: exactly seqattn's modules and torch's
   nn.LSTM / nn.GRU / nn.Linear (a subclass, even one that computes the same, is not assumed to), and
   options the path handles (e.g. no LSTM projections).
2. Model code: every function of `seqattn/model/` the path re-expresses, constructors included, is
   listed in REEXPRESSES; their syntax trees, docstrings, comments and layout aside, must hash to the
   value recorded in WRITTEN_FOR. A replaced method counts (they are looked up when checked).

Where either fails the path steps aside whole and the model's own code runs, so an edited model (an
attention variant, another bridge, a changed constructor) still trains and decodes correctly, only
slower; a docstring or comment edit changes nothing. `python -m seqattn.fast.check` prints the current
hashes: record them after changing the model and the fast paths together (tests/test_fast.py fails
until then).
"""

from __future__ import annotations

import ast
import functools
import hashlib
import inspect
import textwrap

from ..model.attention import Attention
from ..model.decoder import Decoder
from ..model.encoder import Encoder
from ..model.seq2seq import Seq2Seq

# path -> the model functions it re-expresses (looked up when checked: a replaced method counts)
REEXPRESSES = {
    # FastEncoder (training: packed ids, one-gather unpadding) and EncoderTables (decoding)
    "encoder": ((Encoder, "__init__"), (Encoder, "forward"), (Encoder, "merge_directions")),
    "encode": ((Seq2Seq, "__init__"), (Seq2Seq, "encode")),
    "decoder_step": ((Seq2Seq, "__init__"), (Seq2Seq, "step"), (Decoder, "__init__"), (Decoder, "step"),
                     (Decoder, "attend"), (Decoder, "out_rows"), (Attention, "__init__"), (Attention, "scores"),
                     (Attention, "forward")),
}

WRITTEN_FOR = {
    "encoder": "b204c99833ae0da1",
    "encode": "758bccf919c4c1b7",
    "decoder_step": "81104710abd29f6e",
}


def _without_docstrings(tree: ast.AST) -> ast.AST:
    """Return tree with the docstring of every function and class removed (in place)."""
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) \
                    and isinstance(first.value.value, str):
                node.body = node.body[1:] or [ast.Pass()]
    return tree


@functools.cache   # per function object: an edited file is new objects in a new process
def code_hash(*functions) -> str | None:
    """Return a hash of the functions' syntax trees without docstrings (comments and layout are not in
    the tree), or None where a function has no source."""
    try:
        trees = [_without_docstrings(ast.parse(textwrap.dedent(inspect.getsource(f)))) for f in functions]
    except (OSError, TypeError, SyntaxError):
        return None
    text = " ".join(ast.dump(t, annotate_fields=False, include_attributes=False) for t in trees)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def written_for(path: str) -> bool:
    """Return whether the model code that `path` re-expresses is the code it was written for."""
    return code_hash(*(getattr(cls, name) for cls, name in REEXPRESSES[path])) == WRITTEN_FOR[path]


if __name__ == "__main__":
    for name, functions in REEXPRESSES.items():
        print(f'    "{name}": "{code_hash(*(getattr(cls, attr) for cls, attr in functions))}",')
