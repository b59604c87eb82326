"""A corpus larger than is comfortable in RAM (opt-in, not in CI): binarize once, train with bounded memory.

usage: python benchmarks/bigdata.py [--pairs 5000000] [--steps 40] [--data ../shared/data/multi30k]
                                    [--out runs/bigdata]

Writes a synthetic corpus of --pairs pairs (Multi30k training pairs with shuffled words, so that it
is not just 29k sentences repeated), binarizes it (and Multi30k itself), then trains the same model
for --steps steps three ways: Multi30k from text, Multi30k binarized, the big corpus binarized. Prints
the peak RSS of each run, the ratio big/Multi30k, and the time to have training batches ready from
text (read + tokenize + batch) against from binarized files.
"""

from __future__ import annotations

import argparse
import gzip
import random
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def synthetic(data: Path, out: Path, pairs: int, seed: int = 0) -> tuple[Path, Path]:
    """Write pairs lines of word-shuffled Multi30k pairs to out/big.de and out/big.en."""
    read = lambda p: gzip.open(p, "rt", encoding="utf-8").read().splitlines()
    de, en = read(data / "train.de.gz"), read(data / "train.en.gz")
    rng = random.Random(seed)
    src, tgt = out / "big.de", out / "big.en"
    if src.exists() and sum(1 for _ in open(src, "rb")) == pairs:
        return src, tgt
    with open(src, "w", encoding="utf-8") as fs, open(tgt, "w", encoding="utf-8") as ft:
        for i in range(pairs):
            j = rng.randrange(len(de))
            if i >= len(de):   # past one copy of the corpus: shuffle the words of both sides
                a, b = de[j].split(), en[j].split()
                rng.shuffle(a)
                rng.shuffle(b)
                fs.write(" ".join(a) + "\n")
                ft.write(" ".join(b) + "\n")
            else:
                fs.write(de[j] + "\n")
                ft.write(en[j] + "\n")
    return src, tgt


def config(out: Path, name: str, data: dict, steps: int) -> Path:
    cfg = yaml.safe_load((ROOT / "examples" / "multi30k.yaml").read_text())
    cfg["model_dir"] = str(out / name)
    cfg["data"] = {**{k: v for k, v in cfg["data"].items() if not k.startswith(("train_", "valid_"))}, **data}
    cfg["train"].update(max_steps=steps, valid_every=10**6, max_minutes=0, tensorboard=False, keep_last=0)
    path = out / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def peak_rss_mb(cmd: list[str]) -> tuple[float, float]:
    """Run cmd; return (peak RSS in MiB, wall seconds)."""
    rss = Path("/tmp/seqattn-bigdata.rss")
    start = time.perf_counter()
    subprocess.run(["/usr/bin/time", "-f", "%M", "-o", str(rss), *cmd], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    return int(rss.read_text().split()[-1]) / 1024, time.perf_counter() - start


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=5_000_000)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "multi30k")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "bigdata")
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    seqattn = [sys.executable, "-m", "seqattn"]
    d = a.data
    spm = a.out / "spm.model"
    small_text = {"train_src": str(d / "train.de.gz"), "train_tgt": str(d / "train.en.gz")}
    if not spm.exists():   # one tokenizer for every run, so that only the data path differs
        from seqattn.data.binarized import iter_pairs
        from seqattn.data.tokenizer import Tokenizer

        lines = [x for pair in iter_pairs(small_text["train_src"], small_text["train_tgt"], None) for x in pair]
        Tokenizer.train(lines, 8000).save(spm)
    t = time.perf_counter()
    src, tgt = synthetic(d, a.out, a.pairs)
    print(f"synthetic corpus: {a.pairs:,} pairs written in {time.perf_counter() - t:.0f} s", flush=True)

    small = config(a.out, "small_text", {**small_text, "spm_model": str(spm)}, a.steps)
    small_bin_cfg = config(a.out, "small_bin", {**small_text, "spm_model": str(spm)}, a.steps)
    big_cfg = config(a.out, "big_bin", {"train_src": str(src), "train_tgt": str(tgt), "spm_model": str(spm)},
                     a.steps)
    _, t_small_bin = peak_rss_mb([*seqattn, "data", "binarize", str(small_bin_cfg), "--out", str(a.out / "bin_small")])
    rss_bin_big, t_big_bin = peak_rss_mb([*seqattn, "data", "binarize", str(big_cfg), "--out", str(a.out / "bin_big")])
    print(f"binarize: Multi30k {t_small_bin:.0f} s, {a.pairs:,} pairs {t_big_bin:.0f} s "
          f"(peak RSS {rss_bin_big:.0f} MiB)", flush=True)
    for name, path in (("small_bin", small_bin_cfg), ("big_bin", big_cfg)):
        cfg = yaml.safe_load(path.read_text())
        cfg["data"] = {"binarized": str(a.out / ("bin_small" if name == "small_bin" else "bin_big")),
                       **{k: v for k, v in cfg["data"].items() if not k.startswith("train_") and k != "spm_model"}}
        path.write_text(yaml.safe_dump(cfg))

    # batches ready: from text (read + tokenize + batch) against from binarized files
    from seqattn.config import load_config
    from seqattn.data.tokenizer import Tokenizers
    from seqattn.train import prepare_data

    toks = Tokenizers.load(a.out / "bin_small")
    t = time.perf_counter()
    prepare_data(load_config(small), toks)
    text_s = time.perf_counter() - t
    t = time.perf_counter()
    prepare_data(load_config(small_bin_cfg), toks)
    bin_s = time.perf_counter() - t
    t = time.perf_counter()
    prepare_data(load_config(big_cfg), toks)
    big_s = time.perf_counter() - t
    print(f"batches ready, Multi30k: from text {text_s:.2f} s, binarized {bin_s:.3f} s ({text_s / bin_s:.0f}x); "
          f"{a.pairs:,} pairs binarized {big_s:.2f} s (tokenizing them took {t_big_bin:.0f} s in binarize)", flush=True)

    rows = []
    for name, path in (("Multi30k, text", small), ("Multi30k, binarized", small_bin_cfg),
                       (f"{a.pairs:,} pairs, binarized", big_cfg)):
        rss, wall = peak_rss_mb([*seqattn, "train", str(path), "--overwrite"])
        rows.append((name, rss, wall))
        print(f"train {a.steps} steps, {name}: peak RSS {rss:.0f} MiB, {wall:.0f} s", flush=True)
    print(f"peak RSS ratio {rows[2][0]} / {rows[0][0]}: {rows[2][1] / rows[0][1]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
