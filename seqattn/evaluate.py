"""Corpus metrics with sacrebleu (BLEU, chrF, their signatures) and exact-match accuracy."""

from __future__ import annotations


def score(hyps: list[str], refs: list[str]) -> dict:
    """Return {'bleu', 'chrf', 'exact', 'bleu_signature', 'chrf_signature', 'n'} for hyps against refs."""
    import sacrebleu

    if len(hyps) != len(refs):
        raise ValueError(f"{len(hyps)} hypotheses but {len(refs)} references")
    bleu, chrf = sacrebleu.BLEU(), sacrebleu.CHRF()
    exact = sum(h.strip() == r.strip() for h, r in zip(hyps, refs)) / max(len(refs), 1)
    return {
        "bleu": bleu.corpus_score(hyps, [refs]).score,
        "chrf": chrf.corpus_score(hyps, [refs]).score,
        "exact": 100.0 * exact,
        "n": len(refs),
        "bleu_signature": str(bleu.get_signature()),
        "chrf_signature": str(chrf.get_signature()),
    }
