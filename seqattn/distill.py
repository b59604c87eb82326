"""Sequence-level knowledge distillation, the data step: a teacher (one model or an ensemble) translates a
training source, and a student then trains on its outputs (`seqattn distill`, then `seqattn train`).

The translations are written a chunk at a time, each chunk appended and flushed to disk whole, so an
interrupted run resumes where the file ends: a torn last line is dropped and translated again.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from .errors import SeqattnError
from .translator import SearchOptions, Translator


def done_lines(out: Path) -> int:
    """Return how many whole lines out holds (0 when missing), after cutting a torn last line off."""
    if not out.exists():
        return 0
    data = out.read_bytes()
    whole = data.rfind(b"\n") + 1
    if whole < len(data):                      # a write that a crash cut short: translate that line again
        with open(out, "r+b") as f:
            f.truncate(whole)
    return data.count(b"\n", 0, whole)


def distill(translator: Translator, lines: list[str], out: str | Path, options: SearchOptions,
            batch_size: int = 64, chunk: int = 2000, progress: Callable[[int, int], None] | None = None) -> int:
    """Write the teacher's translation of each of lines to out, one line each, in order, continuing a
    previous run's file; return how many lines this call translated. progress(done, total) follows each
    chunk."""
    out = Path(out)
    done = done_lines(out)
    if done > len(lines):
        raise SeqattnError(f"{out}: holds {done} lines, more than the {len(lines)} of the source: not its "
                           f"translation (remove it to start again)")
    if progress:
        progress(done, len(lines))
    start = done
    with open(out, "a", encoding="utf-8") as f:
        while done < len(lines):
            part = lines[done : done + chunk]
            outputs = translator.translate(part, batch_size=batch_size, options=options)
            f.write("".join(o.text.replace("\n", " ") + "\n" for o in outputs))
            f.flush()
            os.fsync(f.fileno())
            done += len(part)
            if progress:
                progress(done, len(lines))
    return done - start
