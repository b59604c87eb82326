"""Whether a fast path applies: the model's code it re-expresses is the code it was written for.

A fast path that computes part of the model its own way (the encoder's padding, the decoding step from
tables and packed weights) is right only for the code it was written against. Each one names the
functions of `seqattn/model/` it re-expresses; their source, comments and blank lines aside, must hash
to the value recorded in WRITTEN_FOR, or the path steps aside and the model's own code runs. So an edited
model (an attention variant, another bridge) still trains and decodes correctly, only slower.
`python -m seqattn.fast.check` prints the current hashes: record them after changing the model and the
fast paths together (tests/test_fast.py fails until then).
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import io
import textwrap
import tokenize

from ..model.attention import Attention
from ..model.decoder import Decoder
from ..model.encoder import Encoder
from ..model.seq2seq import Seq2Seq

# path -> the model functions it re-expresses (looked up when checked: a replaced method counts)
REEXPRESSES = {
    "encoder_padding": ((Encoder, "forward"),),
    "encoder_tables": ((Encoder, "forward"), (Encoder, "merge_directions")),
    "encode": ((Seq2Seq, "encode"), (Seq2Seq, "initial_state"), (Decoder, "keys")),
    "decoder_step": ((Seq2Seq, "step"), (Decoder, "step")),
    "split_combine": ((Decoder, "attend"), (Attention, "forward")),
}

WRITTEN_FOR = {
    "encoder_padding": "3685c72c893e2bcb",
    "encoder_tables": "210d443e104e66da",
    "encode": "3ed9959395514cb3",
    "decoder_step": "1fa626ac79f8f3b9",
    "split_combine": "6f232b2513e35d04",
}


@functools.cache   # per function object: an edited file is new objects in a new process
def code_hash(*functions) -> str | None:
    """Return a hash of the functions' source without comments and blank lines, or None without source."""
    try:
        text = "".join(textwrap.dedent(inspect.getsource(f)) for f in functions)
        tokens = [t.string for t in tokenize.generate_tokens(io.StringIO(text).readline)
                  if t.type not in (tokenize.COMMENT, tokenize.NL)]
    except (OSError, TypeError, tokenize.TokenError, IndentationError):
        return None
    return hashlib.sha256(" ".join(tokens).encode()).hexdigest()[:16]


def written_for(path: str) -> bool:
    """Return whether the model code that `path` re-expresses is the code it was written for."""
    return code_hash(*(getattr(cls, name) for cls, name in REEXPRESSES[path])) == WRITTEN_FOR[path]


if __name__ == "__main__":
    for name, functions in REEXPRESSES.items():
        print(f'    "{name}": "{code_hash(*(getattr(cls, attr) for cls, attr in functions))}",')
