"""Model directories and checkpoints: atomic writes, safe (weights_only) loads."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

from .errors import SeqattnError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: Path, write) -> None:
    """Write path through write(fileobj) into a temporary file, fsync, then rename over path.

    A crash at any moment leaves either the old file or the new one, never a torn one.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())   # mkstemp makes 0600; give the file what open() would
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def save_checkpoint(obj: dict, path: Path) -> None:
    """Atomically save a dict of tensors and plain values (loadable with weights_only=True)."""
    try:
        atomic_write(path, lambda f: torch.save(obj, f))
    except OSError as e:
        raise SeqattnError(f"{path}: cannot write checkpoint ({e.strerror or e})") from None


def load_checkpoint(path: Path, device: str | torch.device = "cpu") -> dict:
    """Return the checkpoint dict at path, loaded without unpickling arbitrary objects."""
    try:
        obj = torch.load(path, map_location=device, weights_only=True)
    except FileNotFoundError:
        raise SeqattnError(f"{path}: checkpoint not found") from None
    except Exception as e:  # truncated zip, wrong format, disallowed global: all mean a bad file
        raise SeqattnError(f"{path}: not a valid seqattn checkpoint ({type(e).__name__})") from None
    if not isinstance(obj, dict) or "model" not in obj:
        raise SeqattnError(f"{path}: not a valid seqattn checkpoint (no model weights)")
    return obj


def average_checkpoints(paths: list[Path]) -> dict:
    """Return a checkpoint whose weights are the element-wise mean of the given checkpoints' weights."""
    if not paths:
        raise SeqattnError("no checkpoint to average")
    total: dict[str, torch.Tensor] = {}
    for path in paths:
        weights = load_checkpoint(path)["model"]
        if total and weights.keys() != total.keys():
            raise SeqattnError(f"{path}: its weights do not match {paths[0]} (different model)")
        for key, value in weights.items():
            if key in total and value.shape != total[key].shape:
                raise SeqattnError(f"{path}: {key} has shape {tuple(value.shape)}, {paths[0]} has "
                                   f"{tuple(total[key].shape)}")
            total[key] = total[key] + value.double() if key in total else value.double()
    dtypes = {k: v.dtype for k, v in load_checkpoint(paths[0])["model"].items()}
    return {"model": {k: (v / len(paths)).to(dtypes[k]) for k, v in total.items()},
            "averaged_from": [str(p) for p in paths]}
