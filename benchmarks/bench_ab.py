"""`seqattn bench` of two seqattn versions in one run (opt-in, not in CI): each version in its own process,
alternating, so that both see the same machine.

usage: python benchmarks/bench_ab.py --old DIR [--rounds 3] [--seconds 15]
--old: a checkout of the other version (e.g. `git worktree add /tmp/old COMMIT`); the new one is this
repository. Prints one JSON line per round and version: training tokens/s and its share of the GEMM
ceiling (`seqattn bench --quick` is --seconds 15). Run it under tcmalloc as `seqattn bench` runs
(LD_PRELOAD=libtcmalloc_minimal.so.4) to compare what users get.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from decode_ab import alternate

CHILD = r'''
import json, sys
sys.path.insert(0, sys.argv[1])
import seqattn
from seqattn.bench import run_bench
r = run_bench(float(sys.argv[2]))
print(json.dumps({"code": seqattn.__file__, "tokens_per_s": r.tokens_per_s, "mfu": r.mfu}))
'''


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--old", type=Path, required=True)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=15.0)
    a = ap.parse_args()
    alternate(a.old, a.rounds, CHILD, [str(a.seconds)])
    return 0


if __name__ == "__main__":
    sys.exit(main())
