"""Metrics against sacrebleu itself and by hand; the heatmap renders non-ASCII text."""

import warnings

import pytest

from seqattn.evaluate import score
from seqattn.plot import plot_attention


def test_score_matches_sacrebleu_and_counts_exact_matches():
    import sacrebleu

    hyps = ["a cat sits on the mat", "the dog barks", "hello"]
    refs = ["a cat sits on the mat", "a dog barks loudly", "hello"]
    s = score(hyps, refs)
    assert s["bleu"] == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs]).score)
    assert s["chrf"] == pytest.approx(sacrebleu.corpus_chrf(hyps, [refs]).score)
    assert s["exact"] == pytest.approx(200 / 3)
    assert s["n"] == 3 and "BLEU" not in s["bleu_signature"] and "nrefs:1" in s["bleu_signature"]


def test_lowercased_bleu_ignores_case_only():
    hyps = ["A Cat sits on the mat .", "The dog barks ."]
    refs = ["a cat sits on the mat .", "the dog barks ."]
    s = score(hyps, refs)
    assert s["bleu_lc"] == pytest.approx(100.0)        # equal but for case
    assert s["bleu"] < 70.0                             # cased: 'A', 'Cat', 'The' miss
    assert "case:lc" in s["bleu_lc_signature"] and "case:mixed" in s["bleu_signature"]


def test_heatmap_renders_korean_and_german(tmp_path):
    src = ["▁2007", "년", "▁7", "월", "▁Größe", "<eos>"]
    tgt = ["▁2007", "-", "07", "<eos>"]
    weights = [[1 / 6] * 6 for _ in tgt]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = plot_attention(src, tgt, weights, tmp_path / "a.png", title="2007년 7월 → 2007-07")
    missing = [str(w.message) for w in caught if "missing from" in str(w.message)]
    assert out.read_bytes()[:4] == b"\x89PNG"
    from matplotlib import font_manager

    if not any("CJK" in f.name for f in font_manager.fontManager.ttflist):
        pytest.skip("no CJK font installed (fonts-noto-cjk)")
    assert missing == []
    svg = plot_attention(src, tgt, weights, tmp_path / "a.svg")
    assert svg.read_text(encoding="utf-8").lstrip().startswith("<?xml")


def test_heatmap_rejects_mismatched_shapes(tmp_path):
    with pytest.raises(ValueError, match="attention is"):
        plot_attention(["a"], ["b", "c"], [[1.0]], tmp_path / "x.png")
