"""docs/walkthrough.md and its Korean twin are current: the same commands; every one runs, from an empty
directory; every output block that does not depend on training time is what its command prints now, at the
page's own settings; every figure is drawn by the command above it. `make docs` rewrites what they show."""

import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from walkthrough import PAGES, Page, prepare, run  # noqa: E402

# The model every compared output comes from runs at the page's settings (it stops by itself after 750 steps,
# about 40 s here); the other training commands are cut to 3 s: they must run, not learn.
AT_PAGE_SETTINGS = "seqattn demo --task dates --out runs/walk "


def small(command: str) -> str:
    return command if command.startswith(AT_PAGE_SETTINGS) else re.sub(r"--seconds \S+", "--seconds 3", command)


@pytest.fixture(scope="module")
def pages() -> list[Page]:
    return [Page.read(p) for p in PAGES]


@pytest.fixture(scope="module")
def ran(pages, tmp_path_factory):
    """Run every command of the pages in order in an empty directory: ({command: stdout}, {command: figures})."""
    workdir = tmp_path_factory.mktemp("walkthrough")
    prepare(workdir)
    return run(pages[0].commands, workdir, small, timeout=600)


def test_both_pages_give_the_same_commands_outputs_and_figures(pages):
    english, korean = pages
    assert english.commands == korean.commands and len(english.commands) >= 20
    assert [(o.commands, o.items, o.tags) for o in english.outputs] == \
        [(o.commands, o.items, o.tags) for o in korean.outputs]
    assert english.figures == korean.figures and len(english.figures) == 3
    for block in english.outputs:   # what the suite shortens it does not compare
        assert "timed" in block.tags or all(small(c) == c for c in block.commands), block.commands


def test_every_command_runs_and_every_figure_is_drawn_by_the_command_above_it(pages, ran):
    outputs, drawn = ran
    for page in pages:
        for figure, block in page.figures.items():
            assert (page.path.parent / figure).is_file(), figure
            assert any(Path(figure).name in drawn[c] for c in block), (figure, block)
    plain = next(out for c, out in outputs.items() if "--attention none" in c)
    assert "attention heatmap: none" in plain
    free_of_plain = next(out for c, out in outputs.items() if c.startswith("seqattn explain runs/none/"))
    assert "teacher forcing" in free_of_plain and " (0." not in free_of_plain      # no attention: no weights


def test_every_output_that_does_not_depend_on_training_time_is_what_its_command_prints_now(pages, ran):
    outputs, _ = ran
    compared = 0
    for page in pages:
        for block in page.outputs:
            now = block.select(outputs)    # a timed block's selection must still apply
            if "timed" not in block.tags:
                assert block.shown == now, (page.path.name, block.commands, block.shown, now)
                compared += 1
    assert compared >= 2 * 7


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_the_code_the_pages_point_at_exists(page):
    """Every `name` the pages quote from seqattn/model/ is still there."""
    text = page.read_text(encoding="utf-8")
    model = "".join((ROOT / "seqattn" / "model" / f).read_text() for f in
                    ("attention.py", "encoder.py", "decoder.py", "seq2seq.py"))
    for name in ("Encoder.forward", "Seq2Seq.initial_state", "Seq2Seq.step", "Decoder.forward", "Decoder.step",
                 "Attention.forward", "Attention.keys", "Attention.scores", "Decoder.attend", "Decoder.out"):
        assert name in text, name
        cls, attr = name.split(".")
        assert f"class {cls}" in model and (f"def {attr}(" in model or f"self.{attr} =" in model), name
    for snippet in ("torch.bmm(query, keys.transpose(1, 2))", "torch.softmax", "torch.bmm(alpha, values)"):
        assert snippet in text and snippet in model, snippet


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_where_next_runs_as_the_readme_says_and_quotes_its_time(page):
    """The closing commands are the README's Multi30k recipe (tested from a fresh directory in
    test_multi30k.py), and the training time the page quotes is the README's, to 5 minutes."""
    text, readme = page.read_text(encoding="utf-8"), (ROOT / "README.md").read_text(encoding="utf-8")
    where_next = text.split("\n## ")[-1]
    commands = re.findall(r"```console\n(.*?)```", where_next, flags=re.S)[0].split("\n")
    recipe = readme.split("## Multi30k recipe")[1].split("\n## ")[0]
    recipe_lines = [line.split("#")[0].strip() for line in recipe.splitlines()]
    for command in filter(None, (c.strip() for c in commands)):
        assert command in recipe_lines, command
    minutes = 5 * round(float(re.search(r"trains in \*\*([\d.]+) minutes\*\*", readme)[1]) / 5)
    assert (f"about {minutes} minutes" if page.name == "walkthrough.md" else f"{minutes}분 정도") in text
    assert "../" not in text and "shared/" not in text                          # nothing outside the repository


def test_an_output_block_shows_what_its_comment_selects_and_is_rewritten_in_place(tmp_path):
    path = tmp_path / "page.md"
    path.write_text("Printed here (2026-01-01).\n\n```sh\necho a\necho b\n```\n\n"
                    '<!-- output: head 1, ..., part "y" -->\n```text\nold\n```\n\n'
                    '<!-- output: starting "|"; raw; timed -->\n| old |\n\nafter (2026-01-01)\n', encoding="utf-8")
    page = Page.read(path)
    outputs = {"echo a": "first\nsecond\n\ny one\ny two\n\nz\n", "echo b": "| 1 |\n| 2 |\n"}
    assert [b.tags for b in page.outputs] == [set(), {"raw", "timed"}]
    assert page.outputs[0].select(outputs) == "first\n...\ny one\ny two\n"
    assert page.outputs[1].select(outputs) == "| 1 |\n| 2 |\n"            # from `$ echo b`'s part of the output
    assert page.rewritten(outputs, "2030-05-06") == (
        "Printed here (2030-05-06).\n\n```sh\necho a\necho b\n```\n\n"
        '<!-- output: head 1, ..., part "y" -->\n```text\nfirst\n...\ny one\ny two\n```\n\n'
        '<!-- output: starting "|"; raw; timed -->\n| 1 |\n| 2 |\n\nafter (2026-01-01)\n')
    path.write_text("```sh\necho a\n```\n<!-- output: middle 3 -->\n```text\n```\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"page\.md: cannot read output selection 'middle 3'"):
        Page.read(path)
