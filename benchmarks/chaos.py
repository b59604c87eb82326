"""Kill training with SIGKILL at random moments, resume each time, and compare with an uninterrupted run.

usage: python benchmarks/chaos.py [--kills 20] [--pairs 4000] [--steps 240] [--seed 0]
                                  [--data ../shared/data/multi30k] [--out runs/chaos]

A small real configuration (the first --pairs Multi30k de-en pairs, a small LSTM) trains once without
interruption, then again while being killed --kills times: at random moments, and every third time
right while a checkpoint is being written (a temporary checkpoint file exists). After each kill the
run continues with `seqattn train --resume` (or starts over with --overwrite when no last.pt exists
yet). At the end the weights, optimizer state and validation history of both runs must be equal, bit
for bit. Prints kills survived, steps lost per kill and every difference.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
TIME_KEYS = {"minutes", "elapsed"}   # wall-clock figures, expected to differ


def write_config(out: Path, train_tsv: Path, valid_tsv: Path, spm_model: Path, steps: int, model: dict) -> Path:
    """Write a deterministic config (fixed steps, no wall-clock limit) into out; return its path."""
    cfg = {"model_dir": str(out / "model"),
           "data": {"train_tsv": str(train_tsv), "valid_tsv": str(valid_tsv), "spm_model": str(spm_model)},
           "model": model,
           "train": {"batch_tokens": 600, "lr": 0.003, "schedule": "constant", "max_steps": steps,
                     "valid_every": max(1, steps // 8), "log_every": 1, "keep_last": 2, "tensorboard": False,
                     "device": "cpu", "valid_metric": "loss"}}
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(yaml.safe_dump(cfg))
    return out / "config.yaml"


def _train(cfg: Path, model_dir: Path) -> subprocess.Popen:
    flag = "--resume" if (model_dir / "last.pt").exists() else "--overwrite"
    return subprocess.Popen([sys.executable, "-m", "seqattn", "train", str(cfg), flag], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "TQDM_DISABLE": "1"})


def _logged_step(model_dir: Path) -> int:
    log = model_dir / "train_log.jsonl"
    steps = [0]
    if log.exists():
        for line in log.read_text(encoding="utf-8").splitlines():
            try:
                steps.append(json.loads(line).get("step", 0))
            except json.JSONDecodeError:
                pass
    return max(steps)


def _saved_step(model_dir: Path) -> int:
    from seqattn.checkpoint import load_checkpoint

    last = model_dir / "last.pt"
    return load_checkpoint(last)["progress"]["step"] if last.exists() else 0


def run_with_kills(cfg: Path, kills: int, duration: float, seed: int) -> dict:
    """Train cfg to the end while killing it `kills` times; return the kill report."""
    config = yaml.safe_load(cfg.read_text())
    model_dir, steps = Path(config["model_dir"]), config["train"]["max_steps"]
    rng, step_rng = random.Random(seed), random.Random(seed + 1)   # the moments, the latest steps
    lost, during_save, survived = [], 0, 0
    for k in range(kills):
        proc = _train(cfg, model_dir)
        at_save = k % 3 == 2
        # a random moment within a few seconds (start-up included), so that 20 kills spread over the run;
        # at the latest when the log reaches a random step short of the end, so that a machine slower
        # than during the reference run (which set `duration`) does not let the run finish unkilled
        deadline = time.monotonic() + (duration * 2 if at_save else rng.uniform(0.5, min(8.0, 0.8 * duration)))
        last_step = _logged_step(model_dir)
        by_step = step_rng.randint(min(last_step + 1, int(0.9 * steps)), int(0.9 * steps))
        killed_in_save = False
        while time.monotonic() < deadline and proc.poll() is None:
            if at_save and any(model_dir.glob(".*.pt.*.tmp")):
                killed_in_save = True
                break
            if not at_save and _logged_step(model_dir) >= by_step:
                break
            time.sleep(0.002 if at_save else 0.05)
        if proc.poll() is not None:          # it finished (or failed) before the kill
            err = proc.stderr.read()
            if proc.returncode != 0:
                raise RuntimeError(f"training failed after {k} kills: {err.strip()[-500:]}")
            break
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        survived += 1
        during_save += killed_in_save
        lost.append(_logged_step(model_dir) - _saved_step(model_dir))
    proc = _train(cfg, model_dir)
    _, err = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"the final resume failed: {err.strip()[-500:]}")
    return {"kills": survived, "kills_during_checkpoint_write": during_save, "steps_lost": lost}


def _strip(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIME_KEYS} for r in history]


def differences(a: Path, b: Path) -> list[str]:
    """Return what differs between the final states of two model directories (empty: bit-identical)."""
    import torch

    from seqattn.checkpoint import load_checkpoint

    out = []
    for name in ("last.pt", "best.pt"):
        x, y = load_checkpoint(a / name), load_checkpoint(b / name)
        for key, t in x["model"].items():
            if not torch.equal(t, y["model"][key]):
                out.append(f"{name}: weights {key} differ (max {float((t - y['model'][key]).abs().max()):.3g})")
        if name == "last.pt":
            ox, oy = x["optimizer"]["state"], y["optimizer"]["state"]
            for i in ox:
                for k in ox[i]:
                    if not torch.equal(ox[i][k], oy[i][k]):
                        out.append(f"optimizer state {i}.{k} differs")
            px, py = x["progress"], y["progress"]
            for k in px:
                if k not in TIME_KEYS and k != "history" and px[k] != py[k]:
                    out.append(f"progress.{k}: {px[k]} != {py[k]}")
            if _strip(px["history"]) != _strip(py["history"]):
                out.append("validation history differs")
    return out


def prepare(out: Path, data: Path, pairs: int) -> tuple[Path, Path, Path]:
    """Write the Multi30k subset as TSVs and train one tokenizer both runs share; return their paths."""
    from seqattn.data.tokenizer import Tokenizer

    out.mkdir(parents=True, exist_ok=True)
    read = lambda p: gzip.open(p, "rt", encoding="utf-8").read().splitlines()
    de, en = read(data / "train.de.gz")[:pairs], read(data / "train.en.gz")[:pairs]
    vde, ven = read(data / "val.de.gz")[:200], read(data / "val.en.gz")[:200]
    (out / "train.tsv").write_text("".join(f"{s}\t{t}\n" for s, t in zip(de, en)), encoding="utf-8")
    (out / "valid.tsv").write_text("".join(f"{s}\t{t}\n" for s, t in zip(vde, ven)), encoding="utf-8")
    Tokenizer.train(de + en, 1000).save(out / "spm.model")
    return out / "train.tsv", out / "valid.tsv", out / "spm.model"


def chaos(out: Path, train_tsv: Path, valid_tsv: Path, spm_model: Path, steps: int, kills: int, seed: int,
          model: dict) -> dict:
    """Run the reference and the killed run into out/reference and out/killed (both cleared first: a
    killed run would otherwise resume a previous invocation's state); return the report."""
    for name in ("reference", "killed"):
        shutil.rmtree(out / name, ignore_errors=True)
    ref_cfg = write_config(out / "reference", train_tsv, valid_tsv, spm_model, steps, model)
    start = time.monotonic()
    subprocess.run([sys.executable, "-m", "seqattn", "train", str(ref_cfg), "--overwrite"], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    duration = time.monotonic() - start
    killed_cfg = write_config(out / "killed", train_tsv, valid_tsv, spm_model, steps, model)
    report = run_with_kills(killed_cfg, kills, duration, seed)
    report["differences"] = differences(out / "reference" / "model", out / "killed" / "model")
    report["reference_seconds"] = duration
    return report


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--pairs", type=int, default=4000)
    ap.add_argument("--steps", type=int, default=900)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "multi30k")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "chaos")
    a = ap.parse_args()
    files = prepare(a.out, a.data, a.pairs)
    model = {"emb_size": 128, "enc_hidden_size": 128, "dec_hidden_size": 256, "dropout": 0.2}
    r = chaos(a.out, *files, a.steps, a.kills, a.seed, model)
    lost = r["steps_lost"]
    print(f"kills survived: {r['kills']} ({r['kills_during_checkpoint_write']} while a checkpoint was being "
          f"written); steps lost per kill: median {statistics.median(lost) if lost else 0:g}, max "
          f"{max(lost, default=0)}; reference run {r['reference_seconds']:.0f} s")
    print("final state: bit-identical to the uninterrupted run" if not r["differences"]
          else "DIFFERENCES:\n  " + "\n  ".join(r["differences"]))
    return 1 if r["differences"] else 0


if __name__ == "__main__":
    sys.exit(main())
