"""Decoding speed of two seqattn versions in one run (opt-in, not in CI): test2016, batch 64, greedy and
beam 5, each version in its own process, alternating, so that both see the same machine.

usage: python benchmarks/decode_ab.py --old DIR --model MODEL_DIR --data DIR [--device cpu] [--rounds 2]
--old: a checkout of the other version (e.g. `git worktree add /tmp/old COMMIT`); the new one is this
repository. --data holds test_2016_flickr.{de,en}(.gz). Prints one JSON line per round and version:
sentences/s (median of 3 decodes, loading excluded) and sacreBLEU.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r'''
import gzip, json, sys, time, torch
sys.path.insert(0, sys.argv[1])
import sacrebleu, seqattn, seqattn.device
from seqattn.translator import SearchOptions, Translator
read = lambda p: (gzip.open(p, "rt", encoding="utf-8") if p.endswith(".gz") else open(p, encoding="utf-8")).read()
src, ref = read(sys.argv[4]).splitlines(), read(sys.argv[5]).splitlines()
device = sys.argv[3]
sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
tr = Translator.load(sys.argv[2], device=device)
if hasattr(seqattn.device, "freeze_loaded_objects"):   # as `seqattn translate` does once the model is loaded
    seqattn.device.freeze_loaded_objects()
res = {"code": seqattn.__file__}
for beam in (1, 5):
    tr.translate(src[:128], batch_size=64, options=SearchOptions(beam=beam))
    rates = []
    for _ in range(3):
        sync()
        t = time.perf_counter()
        out = tr.translate(src, batch_size=64, options=SearchOptions(beam=beam))
        sync()
        rates.append(len(src) / (time.perf_counter() - t))
    res[f"beam{beam}"] = {"sents_per_s": sorted(rates)[1], "rounds": rates,
                          "bleu": sacrebleu.corpus_bleu([o.text for o in out], [ref]).score}
print(json.dumps(res))
'''


def test_files(data: Path) -> tuple[Path, Path]:
    """Return test2016's German and English files in data, plain or gzipped."""
    found = []
    for lang in ("de", "en"):
        paths = [data / f"test_2016_flickr.{lang}{ext}" for ext in ("", ".gz")]
        path = next((p for p in paths if p.exists()), None)
        if path is None:
            sys.exit(f"{data}: no test_2016_flickr.{lang} or .{lang}.gz")
        found.append(path)
    return found[0], found[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--old", type=Path, required=True)
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--rounds", type=int, default=2)
    a = ap.parse_args()
    if not (a.old / "seqattn" / "__init__.py").exists():
        sys.exit(f"{a.old}: no seqattn package there")
    de, en = test_files(a.data)
    for rnd in range(a.rounds):
        for name, root in (("old", a.old), ("new", ROOT)):
            r = subprocess.run([sys.executable, "-c", CHILD, str(root.resolve()), str(a.model), a.device, str(de),
                                str(en)], capture_output=True, text=True)
            if r.returncode:
                sys.exit(f"{name}: {r.stderr.strip().splitlines()[-1] if r.stderr.strip() else r.returncode}")
            result = json.loads(r.stdout.strip().splitlines()[-1])
            print(json.dumps({"round": rnd, "version": name, "device": a.device, **result}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
