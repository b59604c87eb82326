"""Device choice: CUDA with bf16 autocast when present, else the CPU on all cores."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import torch

from .errors import SeqattnError


def pick_device(name: str = "auto") -> torch.device:
    """Return the torch device for 'auto', 'cpu' or 'cuda' (setting CPU threads to all cores)."""
    if name == "cuda" and not torch.cuda.is_available():
        raise SeqattnError("device 'cuda' asked for, but CUDA is not available")
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        torch.backends.cudnn.benchmark = True
        return torch.device("cuda")
    torch.set_num_threads(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count())
    return torch.device("cpu")


def autocast(device: torch.device):
    """Return the mixed-precision context for device: bf16 autocast on CUDA, nothing on CPU."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def freeze_loaded_objects() -> None:
    """Hide every object alive now (torch's, the loaded model's) from Python's cyclic garbage collector:
    they live as long as the process, and each full collection would walk them again (about 170,000
    objects after loading a model: a 50 ms pause, met at least once while translating a file). Call it
    once the model is loaded, in a process that keeps that model (the CLI's commands do)."""
    import gc

    gc.freeze()


def allocator() -> str:
    """Return the malloc this process runs with: 'tcmalloc', 'jemalloc' or 'system'."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return "system"
    return next((name for name in ("tcmalloc", "jemalloc") if name in maps), "system")
