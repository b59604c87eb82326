"""docs/walkthrough.md and its Korean twin: the same commands, every one of them runs (at small sizes), and
the figures they make are the ones the pages show."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "docs" / "walkthrough.md", ROOT / "docs" / "walkthrough.ko.md"]
SMALL = {"--seconds": "3"}   # the walkthrough's budgets, cut down: the commands must run, not learn


def commands(page: Path) -> list[str]:
    """Return the lines of the page's ```sh blocks, in order."""
    blocks = re.findall(r"```sh\n(.*?)```", page.read_text(encoding="utf-8"), flags=re.S)
    return [line for block in blocks for line in block.splitlines() if line.strip()]


def small(command: str) -> str:
    for flag, value in SMALL.items():
        command = re.sub(rf"{flag} \S+", f"{flag} {value}", command)
    return command


def test_both_pages_give_the_same_commands_and_show_only_figures_their_commands_make():
    english, korean = (commands(p) for p in PAGES)
    assert english == korean and len(english) >= 8
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        assert "<<OUT:" not in text                                   # every output shown was filled in
        figures = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
        assert figures
        for fig in figures:
            assert (page.parent / fig).is_file(), fig
            assert any(f"docs/{fig}" in c or "--results docs/walkthrough" in c for c in english), fig


def test_every_command_of_the_walkthrough_runs(tmp_path):
    """Run the walkthrough's commands in order, in an empty directory with the repository's benchmarks
    beside it, with the venv's seqattn and python first on PATH."""
    (tmp_path / "benchmarks").symlink_to(ROOT / "benchmarks")
    (tmp_path / "docs" / "walkthrough").mkdir(parents=True)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "MPLBACKEND": "Agg"}
    outputs = {}
    for command in commands(PAGES[0]):
        proc = subprocess.run(["bash", "-c", "set -o pipefail; " + small(command)], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, (command, proc.stderr[-2000:])
        outputs[command] = proc.stdout
    for fig in ("attention.png", "long_inputs.png"):
        assert (tmp_path / "docs" / "walkthrough" / fig).stat().st_size > 1000
    explained = next(out for c, out in outputs.items() if c.startswith("seqattn explain") and "--reference" in c)
    assert "context vector" in explained and "teacher forcing" in explained
    sample = next(c for c in outputs if "--sample" in c)
    assert len(outputs[sample].strip().splitlines()) == 5
    again = subprocess.run(["bash", "-c", small(sample)], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert again.stdout == outputs[sample]                            # --seed: the same draws again


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_the_code_the_pages_point_at_exists(page):
    """Every `name` the pages quote from seqattn/model/ is still there."""
    text = page.read_text(encoding="utf-8")
    model = "".join((ROOT / "seqattn" / "model" / f).read_text() for f in
                    ("attention.py", "encoder.py", "decoder.py", "seq2seq.py"))
    for name in ("Encoder.forward", "Seq2Seq.initial_state", "Decoder.forward", "Decoder.step", "Attention.forward",
                 "Attention.keys", "Decoder.attend", "Decoder.out"):
        assert name in text, name
        cls, attr = name.split(".")
        assert f"class {cls}" in model and (f"def {attr}(" in model or f"self.{attr} =" in model), name
    for snippet in ("torch.bmm(query, keys.transpose(1, 2))", "torch.softmax", "torch.bmm(alpha, values)"):
        assert snippet in text and snippet in model, snippet
