"""Rerun the walkthrough pages (docs/walkthrough.md and walkthrough.ko.md) and rewrite what they show.

usage: python benchmarks/walkthrough.py [--check]   (or `make docs`)

Runs every command of the pages' ```sh blocks in order, in an empty directory (the repository's
benchmarks/ beside it, this Python's `seqattn` first on PATH), at the pages' own settings, up to the last
command whose output or figure a page shows. Then it rewrites each output block of both pages from what
its command printed, copies the figures the commands drew into docs/walkthrough/, sets the pages' date,
and prints what changed. With --check it changes nothing and exits 1 when a page is not current.

How a page marks what it shows. An output block belongs to the nearest ```sh block above it; it is an
HTML comment (invisible when rendered) followed by a ```text block, or by plain Markdown lines up to the
next blank line with `raw`:

    <!-- output: head 4, ... -->                      the first 4 lines, then a "..." line
    <!-- output: ..., part "teacher forcing" -->      the paragraph that starts with that text
    <!-- output: starting "|"; raw; timed -->         the lines that start with "|", as Markdown

Items, separated by commas: `head N`, `tail N`, `part "TEXT"`, `starting "TEXT"`, `...`; nothing: all of
it. Where a ```sh block has several commands, each later one's output follows a `$ COMMAND` line. Tags
after `;`: `raw` (Markdown, not a code block), `timed` (depends on training time: tests/test_walkthrough.py
runs its command but does not compare it). A figure `![...](walkthrough/NAME.png)` must be drawn by the
nearest ```sh block above it (`docs/walkthrough/NAME.png`).
"""

from __future__ import annotations

import argparse
import datetime
import difflib
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "docs" / "walkthrough.md", ROOT / "docs" / "walkthrough.ko.md"]
FIGURES = "docs/walkthrough"       # where the pages' figures live, relative to the repository root

_BLOCK = re.compile(r"```sh\n(?P<sh>.*?)```\n"
                    r"|<!-- output:(?P<spec>[^>]*)-->\n(?:```text\n(?P<text>.*?)```\n|(?P<raw>(?:[^\n]+\n)+))"
                    r"|!\[[^\]]*\]\((?P<figure>[^)]+)\)", re.S)


@dataclass
class Output:
    """An output block of a page: what it selects from which commands' output, and where it sits."""

    commands: list[str]       # the ```sh block it belongs to
    items: list[tuple]        # the selection: ("head", n), ("tail", n), ("part", text), ("starting", text), ("...",)
    tags: set[str]            # raw, timed
    shown: str                # what the page shows now
    span: tuple[int, int]     # the shown text's place in the page

    def select(self, outputs: dict[str, str]) -> str:
        """Return what this block should show, given each command's output."""
        lines = []
        for n, command in enumerate(self.commands):
            lines += ([f"$ {command}"] if n else []) + outputs[command].rstrip("\n").split("\n")
        shown = []
        for item in self.items or [("all",)]:
            kind = item[0]
            if kind == "all":
                shown += lines
            elif kind == "head":
                shown += lines[: item[1]]
            elif kind == "tail":
                shown += lines[-item[1]:]
            elif kind == "...":
                shown.append("...")
            elif kind == "starting":
                shown += [line for line in lines if line.startswith(item[1])]
            else:   # part: from the line that starts with the text to the next blank line
                start = next(i for i, line in enumerate(lines) if line.startswith(item[1]))
                end = next((i for i in range(start, len(lines)) if not lines[i].strip()), len(lines))
                shown += lines[start:end]
        return "\n".join(shown) + "\n"


@dataclass
class Page:
    path: Path
    text: str
    commands: list[str] = field(default_factory=list)                 # every ```sh line, in order
    outputs: list[Output] = field(default_factory=list)
    figures: dict[str, list[str]] = field(default_factory=dict)       # figure -> the ```sh block above it

    @classmethod
    def read(cls, path: Path) -> Page:
        page = cls(path, path.read_text(encoding="utf-8"))
        block: list[str] = []
        for m in _BLOCK.finditer(page.text):
            if m["sh"] is not None:
                block = [line.strip() for line in m["sh"].splitlines() if line.strip()]
                page.commands += block
            elif m["figure"] is not None:
                page.figures[m["figure"]] = block
            else:
                items, tags = _parse(m["spec"], path)
                which = "text" if m["text"] is not None else "raw"
                if ("raw" in tags) != (which == "raw") or not block:
                    raise ValueError(f"{path}: output block '{m['spec'].strip()}' has no ```sh block above it "
                                     "or is not a ```text block (or, with raw, Markdown lines)")
                page.outputs.append(Output(block, items, tags, m[which], m.span(which)))
        return page

    def rewritten(self, outputs: dict[str, str], date: str | None = None) -> str:
        """Return the page with every output block showing what its commands printed (and the date)."""
        text, end = [], 0
        for out in self.outputs:
            text += [self.text[end:out.span[0]], out.select(outputs)]
            end = out.span[1]
        text = "".join(text + [self.text[end:]])
        if date:   # the first (YYYY-MM-DD) of the page: the day its outputs were printed
            text = re.sub(r"\(20\d\d-\d\d-\d\d\)", f"({date})", text, count=1)
        return text


def _parse(spec: str, path: Path) -> tuple[list[tuple], set[str]]:
    """Return (items, tags) of an output comment's text, e.g. ' head 5, ..., tail 2; timed '."""
    selection, *tags = spec.split(";")
    groups: list[list[str]] = [[]]
    for token in shlex.shlex(selection, posix=True, punctuation_chars=","):
        if token == ",":
            groups.append([])
        else:
            groups[-1].append(token)
    items = []
    for parts in filter(None, groups):
        if parts == ["..."]:
            items.append(("...",))
        elif len(parts) == 2 and parts[0] in ("head", "tail") and parts[1].isdigit():
            items.append((parts[0], int(parts[1])))
        elif len(parts) == 2 and parts[0] in ("part", "starting"):
            items.append((parts[0], parts[1]))
        else:
            raise ValueError(f"{path}: cannot read output selection {' '.join(parts)!r} in '{spec.strip()}'")
    return items, {t.strip() for t in tags if t.strip()}


def environment() -> dict[str, str]:
    """The environment the pages' commands run in: this Python's `seqattn` first on PATH, no display."""
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
            "MPLBACKEND": "Agg"}


def prepare(workdir: Path) -> None:
    """Make workdir a learner's directory: the repository's benchmarks/ beside an empty docs/walkthrough/."""
    (workdir / "benchmarks").symlink_to(ROOT / "benchmarks")
    (workdir / FIGURES).mkdir(parents=True)


def run(commands: list[str], workdir: Path, rewrite=lambda c: c, timeout: float = 1800):
    """Run commands in order in workdir (each through `rewrite`); return ({command: stdout}, {command:
    figures it wrote or changed}). Raises RuntimeError naming the first command that fails."""
    outputs, drawn = {}, {}
    figures = workdir / FIGURES
    for command in commands:
        before = {p.name: p.stat().st_mtime_ns for p in figures.iterdir()}
        proc = subprocess.run(["bash", "-c", "set -o pipefail; " + rewrite(command)], cwd=workdir,
                              env=environment(), capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"{command!r} failed ({proc.returncode}): {proc.stderr[-2000:]}")
        outputs[command] = proc.stdout
        drawn[command] = {p.name for p in figures.iterdir() if before.get(p.name) != p.stat().st_mtime_ns}
    return outputs, drawn


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="change nothing; exit 1 when a page is not current")
    args = ap.parse_args()
    pages = [Page.read(p) for p in PAGES]
    if pages[0].commands != pages[1].commands:
        raise SystemExit("the two pages give different commands")
    shown = {c for p in pages for o in p.outputs for c in o.commands} | \
            {c for p in pages for block in p.figures.values() for c in block}
    last = max(i for i, c in enumerate(pages[0].commands) if c in shown)
    with tempfile.TemporaryDirectory(prefix="walkthrough-") as tmp:
        workdir = Path(tmp)
        prepare(workdir)
        outputs, _ = run(pages[0].commands[: last + 1], workdir)
        changed = False
        for page in pages:
            new = page.rewritten(outputs, None if args.check else datetime.date.today().isoformat())
            diff = list(difflib.unified_diff(page.text.splitlines(), new.splitlines(), str(page.path.relative_to(ROOT)),
                                             "rerun", lineterm="", n=0))
            if diff:
                changed = True
                print("\n".join(diff))
                if not args.check:
                    page.path.write_text(new, encoding="utf-8")
        for figure in sorted(workdir.joinpath(FIGURES).iterdir()):
            target = ROOT / FIGURES / figure.name
            if not target.exists() or target.read_bytes() != figure.read_bytes():
                print(f"{FIGURES}/{figure.name}: {'new' if not target.exists() else 'redrawn'}")
                if not args.check:
                    shutil.copyfile(figure, target)
    print("the pages were current" if not changed else "the pages were not current" +
          ("" if args.check else ": rewritten"))
    return 1 if args.check and changed else 0


if __name__ == "__main__":
    sys.exit(main())
