"""Checkpoints: atomic writes, loads that never unpickle objects, averaging."""

import pytest
import torch
from conftest import assert_one_line_error, run

from seqattn.checkpoint import atomic_write, average_checkpoints, load_checkpoint, save_checkpoint
from seqattn.errors import SeqattnError


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path):
    target = tmp_path / "last.pt"
    save_checkpoint({"model": {"w": torch.ones(3)}}, target)

    def crash(f):
        f.write(b"half a checkpoint")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        atomic_write(target, crash)
    assert torch.equal(load_checkpoint(target)["model"]["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temporary file left behind


def test_load_checkpoint_never_unpickles_objects(tmp_path):

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pt"
    torch.save({"model": {}, "x": Evil()}, path)
    with pytest.raises(SeqattnError, match="evil.pt: not a valid seqattn checkpoint"):
        load_checkpoint(path)
    (tmp_path / "trunc.pt").write_bytes((tmp_path / "evil.pt").read_bytes()[:50])
    with pytest.raises(SeqattnError, match="trunc.pt: not a valid seqattn checkpoint"):
        load_checkpoint(tmp_path / "trunc.pt")


def test_training_keeps_the_last_k_and_averaging_identical_checkpoints_is_identity(model_dir, tmp_path):
    model, _ = model_dir
    assert sorted(p.name for p in model.glob("step_*.pt")) == ["step_120.pt", "step_80.pt"]
    avg = average_checkpoints([model / "step_120.pt", model / "step_120.pt"])
    ref = load_checkpoint(model / "step_120.pt")["model"]
    for k, v in ref.items():
        assert torch.equal(avg["model"][k], v)
    two = average_checkpoints([model / "step_80.pt", model / "step_120.pt"])
    a80 = load_checkpoint(model / "step_80.pt")["model"]
    key = "decoder.out.weight"
    assert torch.allclose(two["model"][key], (a80[key] + ref[key]) / 2, atol=1e-6)
    out = tmp_path / "avg.pt"
    proc = run("average", model / "step_80.pt", model / "step_120.pt", "--out", out)
    assert proc.returncode == 0, proc.stderr
    proc = run("translate", model, "--checkpoint", out, stdin="apple bear\n")
    assert proc.returncode == 0 and proc.stdout.strip()
    save_checkpoint({"model": {"x": torch.ones(2)}}, tmp_path / "other.pt")
    assert_one_line_error(run("average", model / "step_80.pt", tmp_path / "other.pt", "--out", tmp_path / "x.pt"),
                          "do not match")
    assert not (tmp_path / "x.pt").exists()
