"""seqattn: recurrent sequence-to-sequence models with Luong attention."""

import os

# Defensive: MKL's conditional numerical reproducibility makes its results independent of how buffers
# happen to be aligned, which differs between an uninterrupted process and a resumed one (exact
# --resume). No measurable cost for this model; a value the user set wins. MKL reads it at first use.
os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")

__version__ = "0.1.0"
