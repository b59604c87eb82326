"""What the `seqattn` process does around a command: start under tcmalloc where it pays, and leave without
the interpreter's teardown."""

from __future__ import annotations

import os
import sys

# Commands that allocate and free vocabulary-sized tensors every step: glibc's malloc hands such blocks
# back to the kernel and faults them in again; tcmalloc keeps them (BENCHMARKS.md, "What each fast path
# is worth").
TCMALLOC_COMMANDS = ("train", "bench")


def reexec_with_tcmalloc(argv: list[str]) -> None:
    """Replace this process by `python -m seqattn argv` under tcmalloc when argv's command is one of
    TCMALLOC_COMMANDS, tcmalloc is installed and not loaded yet (SEQATTN_TCMALLOC=0 turns this off)."""
    if not argv or argv[0] not in TCMALLOC_COMMANDS or os.environ.get("SEQATTN_TCMALLOC") == "0":
        return
    preload = os.environ.get("LD_PRELOAD", "")
    if "tcmalloc" in preload:
        return
    import ctypes.util

    lib = ctypes.util.find_library("tcmalloc_minimal") or ctypes.util.find_library("tcmalloc")
    if lib:
        env = {**os.environ, "LD_PRELOAD": f"{preload} {lib}".strip(), "SEQATTN_TCMALLOC": "0"}
        os.execve(sys.executable, [sys.executable, "-m", "seqattn", *argv], env)


def leave(code: int) -> None:
    """Flush the standard streams and end the process with code, skipping the interpreter's teardown
    (about 0.3 s once torch is imported: a quarter of `translate`'s start-up)."""
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BrokenPipeError:
        code = code or 1
    os._exit(code)
