"""Corpus metrics with sacrebleu (BLEU, lowercased BLEU, chrF, their signatures) and exact-match accuracy."""

from __future__ import annotations


def score(hyps: list[str], refs: list[str]) -> dict:
    """Return {'bleu', 'bleu_lc', 'chrf', 'exact', 'bleu_signature', 'bleu_lc_signature', 'chrf_signature', 'n'}
    for hyps against refs. 'bleu' is cased detokenised 13a BLEU; 'bleu_lc' the same lowercased (sacreBLEU -lc),
    the form most published Multi30k results use."""
    import sacrebleu

    if len(hyps) != len(refs):
        raise ValueError(f"{len(hyps)} hypotheses but {len(refs)} references")
    bleu, bleu_lc, chrf = sacrebleu.BLEU(), sacrebleu.BLEU(lowercase=True), sacrebleu.CHRF()
    exact = sum(h.strip() == r.strip() for h, r in zip(hyps, refs)) / max(len(refs), 1)
    return {
        "bleu": bleu.corpus_score(hyps, [refs]).score,
        "bleu_lc": bleu_lc.corpus_score(hyps, [refs]).score,
        "chrf": chrf.corpus_score(hyps, [refs]).score,
        "exact": 100.0 * exact,
        "n": len(refs),
        "bleu_signature": str(bleu.get_signature()),
        "bleu_lc_signature": str(bleu_lc.get_signature()),
        "chrf_signature": str(chrf.get_signature()),
    }
