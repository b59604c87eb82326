"""Faults while saving (disk full, read-only disk), broken checkpoints, and model directories as data."""

import os
import subprocess
import sys

import pytest
import yaml
from conftest import assert_one_line_error, reverse_pairs, run, write_tiny_config

from seqattn.checkpoint import load_checkpoint

# Runs the CLI with torch.save failing with ENOSPC after N successful saves, or with every temporary
# file failing to open as on a read-only file system.
WRAPPER = """
import errno, sys, tempfile, torch
mode, n = sys.argv[1], int(sys.argv[2])
if mode == "enospc":
    real, calls = torch.save, []
    def save(obj, f, *a, **k):
        calls.append(1)
        if len(calls) > n:
            f.write(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(obj, f, *a, **k)
    torch.save = save
else:
    def mkstemp(*a, **k):
        raise OSError(errno.EROFS, "Read-only file system")
    tempfile.mkstemp = mkstemp
from seqattn.cli import main
sys.exit(main(sys.argv[3:]))
"""


def run_faulty(mode, n, *args):
    return subprocess.run([sys.executable, "-c", WRAPPER, mode, str(n), *map(str, args)], capture_output=True,
                          text=True, timeout=600)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("faults")
    cfg = write_tiny_config(tmp, reverse_pairs(30, seed=3), train__max_steps=40, train__valid_every=20,
                            train__valid_metric="loss")
    proc = run("train", cfg)
    assert proc.returncode == 0, proc.stderr
    return tmp, cfg


def _snapshot(model):
    return {p.name: p.read_bytes() for p in model.iterdir() if p.is_file()}


def _copy_model(src, dst):
    dst.mkdir()
    for name, data in _snapshot(src).items():
        (dst / name).write_bytes(data)
    return dst


def test_disk_full_while_saving_keeps_the_previous_checkpoint(tmp_path):
    cfg = write_tiny_config(tmp_path, reverse_pairs(30, seed=3), train__max_steps=60, train__valid_every=20,
                            train__valid_metric="loss", train__early_stopping=0)
    proc = run_faulty("enospc", 2, "train", cfg)             # the saves at step 20 succeed, step 40 fails
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("seqattn: error")]
    assert errors == [proc.stderr.strip().splitlines()[-1]]   # progress lines, then one error line
    assert "best.pt: cannot write checkpoint (No space left on device)" in errors[0]
    model = tmp_path / "model"
    assert load_checkpoint(model / "last.pt")["progress"]["step"] == 20
    assert not list(model.glob(".*.tmp"))                     # the torn temporary file is gone
    resumed = run("train", cfg, "--resume")                  # and the run goes on from there
    assert resumed.returncode == 0, resumed.stderr
    assert load_checkpoint(model / "last.pt")["progress"]["step"] == 60


def test_read_only_model_directory_is_one_line_and_changes_nothing(trained):
    tmp, cfg = trained
    before = _snapshot(tmp / "model")
    text = cfg.read_text().replace("max_steps: 40", "max_steps: 60")
    (tmp / "more.yaml").write_text(text)
    proc = run_faulty("erofs", 0, "train", tmp / "more.yaml", "--resume")
    assert_one_line_error(proc, "Read-only file system")
    assert _snapshot(tmp / "model") == before


def test_broken_checkpoints_name_the_file(trained, tmp_path):
    tmp, cfg = trained
    copy = _copy_model(tmp / "model", tmp_path / "model")
    text = yaml.safe_load(cfg.read_text())
    text["model_dir"] = str(copy)
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(text))
    last = (copy / "last.pt").read_bytes()
    (copy / "last.pt").write_bytes(last[: len(last) // 3])                        # truncated
    assert_one_line_error(run("train", tmp_path / "c.yaml", "--resume"), "last.pt: not a valid seqattn checkpoint")
    (copy / "best.pt").write_bytes(os.urandom(4096))                             # garbage
    assert_one_line_error(run("translate", copy, stdin="x\n"), "best.pt: not a valid seqattn checkpoint")
    assert_one_line_error(run("serve", copy, "--port", "0"), "best.pt: not a valid seqattn checkpoint")
    flipped = bytearray(last)
    flipped[len(flipped) // 2] ^= 0xFF                                           # one corrupted byte
    (copy / "last.pt").write_bytes(bytes(flipped))
    proc = run("translate", copy, "--checkpoint", "last.pt", stdin="x\n")
    if proc.returncode != 0:                            # zip checksums catch it, or the weights still load
        assert_one_line_error(proc, "last.pt")


def test_a_model_directory_reads_nothing_its_config_points_at(trained, tmp_path):
    """config.yaml inside a model directory is data: its paths are never opened when the model is used."""
    tmp, _ = trained
    model = _copy_model(tmp / "model", tmp_path / "model")
    trap = tmp_path / "outside" / "fifo"
    trap.parent.mkdir()
    os.mkfifo(trap)                                     # opening it for reading would block: the test times out
    cfg = yaml.safe_load((model / "config.yaml").read_text())
    cfg["model_dir"] = str(tmp_path / "elsewhere")
    cfg["data"].update(train_tsv=str(trap), valid_tsv=str(trap), spm_model=str(trap))
    (model / "config.yaml").write_text(yaml.safe_dump(cfg))
    proc = run("translate", model, stdin="apple bear\n", timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert not (tmp_path / "elsewhere").exists()
