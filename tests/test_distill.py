"""Sequence-level distillation's data step (`seqattn distill`): one output line per source line, in order,
the teacher's beam search (or ensemble), and a run that resumes where an interrupted one left off."""

import gzip

import pytest
from conftest import assert_one_line_error, reverse_pairs, run, write_tiny_config

from seqattn.config import load_config
from seqattn.distill import distill, done_lines
from seqattn.train import Trainer
from seqattn.translator import SearchOptions, Translator


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("teacher")
    Trainer(load_config(write_tiny_config(tmp, reverse_pairs(60, seed=6), train__max_steps=60,
                                          train__valid_every=60))).run()
    return tmp / "model"


def test_the_teacher_translates_every_line_in_order_and_a_cut_run_resumes(teacher, tmp_path):
    lines = [s for s, _ in reverse_pairs(53, seed=7)] + [""]
    translator = Translator.load(teacher, device="cpu")
    want = [o.text for o in translator.translate(lines, options=SearchOptions(beam=5))]
    out = tmp_path / "distilled.en"
    seen = []
    assert distill(translator, lines, out, SearchOptions(beam=5), chunk=10, progress=lambda d, t: seen.append(d)) == 54
    assert out.read_text().split("\n")[:-1] == want and seen == [0, 10, 20, 30, 40, 50, 54]
    # a crash after 23 lines and part of the 24th: the torn line is dropped, the rest translated again
    whole = out.read_bytes()
    rows = whole.splitlines(True)
    out.write_bytes(b"".join(rows[:23]) + rows[23][:3])            # 23 lines and 3 bytes of the 24th
    assert done_lines(out) == 23 and out.read_bytes().endswith(b"\n")
    assert distill(translator, lines, out, SearchOptions(beam=5), chunk=10) == 31
    assert out.read_bytes() == whole
    assert distill(translator, lines, out, SearchOptions(beam=5)) == 0            # done: nothing to do
    with pytest.raises(Exception, match="holds 54 lines, more than the 10 of the source"):
        distill(translator, lines[:10], out, SearchOptions(beam=5))


def test_the_cli_distills_with_an_ensemble_and_a_student_trains_on_it(teacher, tmp_path):
    pairs = reverse_pairs(60, seed=8)
    with gzip.open(tmp_path / "train.src.gz", "wt", encoding="utf-8") as f:
        f.write("".join(f"{s}\n" for s, _ in pairs))
    out = tmp_path / "train.distilled"
    proc = run("distill", teacher, "--ensemble", teacher, "--src", tmp_path / "train.src.gz", "--out", out,
               "--chunk", "25")
    assert proc.returncode == 0, proc.stderr
    assert "60 lines (60 translated now, 0 before)" in proc.stderr
    want = Translator.load(teacher, ensemble=[str(teacher)]).translate([s for s, _ in pairs],
                                                                       options=SearchOptions(beam=5))
    assert out.read_text().splitlines() == [o.text for o in want]
    again = run("distill", teacher, "--src", tmp_path / "train.src.gz", "--out", out)
    assert again.returncode == 0 and "(0 translated now, 60 before)" in again.stderr
    # the student: the teacher's outputs as its targets
    (tmp_path / "student").mkdir()
    (tmp_path / "student" / "train.src").write_text("".join(f"{s}\n" for s, _ in pairs))
    cfg = write_tiny_config(tmp_path / "student", pairs, train__max_steps=10, train__valid_every=10)
    text = cfg.read_text().replace(f"train_tsv: {tmp_path / 'student' / 'train.tsv'}",
                                   f"train_src: {tmp_path / 'student' / 'train.src'}\n  train_tgt: {out}")
    cfg.write_text(text)
    trained = run("train", cfg)
    assert trained.returncode == 0, trained.stderr
    assert_one_line_error(run("distill", teacher, "--src", tmp_path / "missing.txt", "--out", out), "missing.txt")
