"""Decoding speed of two seqattn versions in one run (opt-in, not in CI): test2016, batch 64, greedy and
beam 5, each version in its own process, alternating, so that both see the same machine.

usage: python benchmarks/decode_ab.py --old DIR --model MODEL_DIR --data DIR [--device cpu] [--rounds 2]
                                      [--int8] [--beams 1,5] [--repeats 3]
--old: a checkout of the other version (e.g. `git worktree add /tmp/old COMMIT`); the new one is this
repository. --data holds test_2016_flickr.{de,en}(.gz). Prints one JSON line per round and version:
sentences/s (median of --repeats decodes, loading excluded), sacreBLEU and a hash of the outputs (equal hashes:
identical outputs); --int8 measures `--quantize int8` decoding too.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r'''
import gzip, hashlib, json, sys, time, torch
sys.path.insert(0, sys.argv[1])
import sacrebleu, seqattn, seqattn.device
from seqattn.translator import SearchOptions, Translator
read = lambda p: (gzip.open(p, "rt", encoding="utf-8") if p.endswith(".gz") else open(p, encoding="utf-8")).read()
src, ref = read(sys.argv[4]).splitlines(), read(sys.argv[5]).splitlines()
device = sys.argv[3]
sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
res = {"code": seqattn.__file__}
for quantize in [None] + (["int8"] if sys.argv[6] == "1" else []):
    tr = Translator.load(sys.argv[2], device=device, quantize=quantize)
    if hasattr(seqattn.device, "freeze_loaded_objects"):   # as `seqattn translate` does once the model is loaded
        seqattn.device.freeze_loaded_objects()
    for beam in map(int, sys.argv[7].split(",")):
        tr.translate(src[:128], batch_size=64, options=SearchOptions(beam=beam))
        rates = []
        for _ in range(int(sys.argv[8])):
            sync()
            t = time.perf_counter()
            out = tr.translate(src, batch_size=64, options=SearchOptions(beam=beam))
            sync()
            rates.append(len(src) / (time.perf_counter() - t))
        texts = [o.text for o in out]
        res[f"{quantize or 'float32'}/beam{beam}"] = {
            "sents_per_s": sorted(rates)[len(rates) // 2], "rounds": rates,
            "bleu": sacrebleu.corpus_bleu(texts, [ref]).score,
            "outputs_sha": hashlib.sha256("\n".join(texts).encode()).hexdigest()[:12]}
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


def alternate(old: Path, rounds: int, child: str, args: list[str], **fields) -> None:
    """Run the child script (argv: a checkout's root, then args) for the old checkout and this one in turn,
    `rounds` times; print each run's JSON result as one line with its round, version and fields."""
    if not (old / "seqattn" / "__init__.py").exists():
        sys.exit(f"{old}: no seqattn package there")
    for rnd in range(rounds):
        for name, root in (("old", old), ("new", ROOT)):
            r = subprocess.run([sys.executable, "-c", child, str(root.resolve()), *args], capture_output=True,
                               text=True)
            if r.returncode:
                sys.exit(f"{name}: {r.stderr.strip().splitlines()[-1] if r.stderr.strip() else r.returncode}")
            result = json.loads(r.stdout.strip().splitlines()[-1])
            print(json.dumps({"round": rnd, "version": name, **fields, **result}), flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--old", type=Path, required=True)
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--int8", action="store_true", help="also measure --quantize int8 decoding")
    ap.add_argument("--beams", default="1,5", help="beam sizes to decode with (1: greedy)")
    ap.add_argument("--repeats", type=int, default=3, help="decodes of test2016 per beam size and round")
    a = ap.parse_args()
    de, en = test_files(a.data)
    alternate(a.old, a.rounds, CHILD, [str(a.model), a.device, str(de), str(en), "1" if a.int8 else "0", a.beams,
                                       str(a.repeats)], device=a.device)
    return 0


if __name__ == "__main__":
    sys.exit(main())
