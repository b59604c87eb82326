"""Beam search against greedy on test2016, for two seqattn versions in one run (opt-in, not in CI).

Counts the sentences whose beam-5 result scores below greedy's own output under the same length penalty
(an exact search of any width never returns such a result: greedy's output is one of the hypotheses a
wider beam would rather keep unless it finds a better one), with BLEU and the decoding seconds, for
alpha 0 and 1.0. Each version runs in its own process, alternating.

usage: python benchmarks/beam_exact.py --old DIR --model MODEL_DIR [--data DIR] [--rounds 2]
--old: a checkout of the other version (e.g. `git worktree add /tmp/old COMMIT`); the new one is this
repository. --data holds test_2016_flickr.{de,en}(.gz) (default ../shared/data/multi30k).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from decode_ab import alternate, test_files  # noqa: E402

CHILD = r'''
import gzip, json, sys, time
sys.path.insert(0, sys.argv[1])
import sacrebleu, seqattn
from seqattn.search import length_penalty
from seqattn.translator import SearchOptions, Translator
read = lambda p: (gzip.open(p, "rt", encoding="utf-8") if p.endswith(".gz") else open(p, encoding="utf-8")).read()
src, ref = read(sys.argv[3]).splitlines(), read(sys.argv[4]).splitlines()
tr = Translator.load(sys.argv[2], device="cpu")
greedy = tr.translate(src, batch_size=64)
res = {"code": seqattn.__file__, "greedy_bleu": sacrebleu.corpus_bleu([o.text for o in greedy], [ref]).score}
for alpha in (0.0, 1.0):
    t = time.perf_counter()
    beam = tr.translate(src, batch_size=64, options=SearchOptions(beam=5, alpha=alpha))
    seconds = time.perf_counter() - t
    below = sum(b.score < g.score / length_penalty(len(tr.tok.tgt.encode([g.text])[0]) + 1, alpha) - 1e-4
                for g, b in zip(greedy, beam) if g.text)
    res[f"alpha{alpha:g}"] = {"beam5_below_greedy": below, "seconds": round(seconds, 2),
                              "bleu": sacrebleu.corpus_bleu([o.text for o in beam], [ref]).score}
print(json.dumps(res))
'''


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--old", type=Path, required=True)
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "multi30k")
    ap.add_argument("--rounds", type=int, default=2)
    a = ap.parse_args()
    de, en = test_files(a.data)
    alternate(a.old, a.rounds, CHILD, [str(a.model), str(de), str(en)])
    return 0


if __name__ == "__main__":
    sys.exit(main())
