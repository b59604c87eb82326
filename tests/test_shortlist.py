"""The vocabulary shortlist: Dice ranks by hand, the training data always covered, the vocabulary of a batch,
and the file round trip."""

import numpy as np
import pytest

from seqattn_runtime.shortlist import SPECIALS, Shortlist, build


def test_candidates_are_the_k_best_by_dice_computed_by_hand():
    # source piece 10 occurs in pairs 0-2, 11 in pair 3; target 20 in 0-2, 21 in 0 and 3, 22 everywhere
    src = [[10], [10], [10], [11]]
    tgt = [[20, 21, 22], [20, 22], [20, 22], [21, 22]]
    sl = build(src, tgt, 12, 23, k=1, frequent=0)
    # Dice(10, 20) = 2*3 / (3 + 3) = 1.0, Dice(10, 22) = 2*3 / (3 + 4) = 0.857, Dice(10, 21) = 2*1 / (3 + 2) = 0.4
    # Dice(11, 21) = 2*1 / (1 + 2) = 0.667, Dice(11, 22) = 2*1 / (1 + 4) = 0.4
    k1 = {s: sl.ids[sl.offsets[s] : sl.offsets[s + 1]].tolist() for s in (10, 11)}
    # k = 1 keeps 10 -> 20 and 11 -> 21; then pair 0 needs 21 and 22 from 10 (its only source piece),
    # pairs 1-2 need 22 from 10, pair 3 needs 22 from 11
    assert k1 == {10: [20, 21, 22], 11: [21, 22]}
    assert sl.frequent.tolist() == list(range(SPECIALS))
    wide = build(src, tgt, 12, 23, k=3, frequent=1)
    assert wide.frequent.tolist() == list(range(SPECIALS)) + [22]       # in every pair
    assert wide.ids[wide.offsets[10] : wide.offsets[11]].tolist() == [20, 21, 22]


def test_on_its_training_data_the_shortlist_always_holds_the_reference():
    rng = np.random.default_rng(0)
    src = [rng.integers(4, 60, rng.integers(1, 12)).tolist() for _ in range(400)]
    tgt = [rng.integers(4, 80, rng.integers(1, 12)).tolist() for _ in range(400)]
    for k, frequent in ((1, 0), (3, 5), (20, 10)):
        sl = build(src, tgt, 60, 80, k=k, frequent=frequent)
        for s, t in zip(src, tgt):
            assert set(t) <= set(sl.vocab([s]).tolist())
        batch = sl.vocab(src[:16])
        assert set(x for t in tgt[:16] for x in t) <= set(batch.tolist())
    assert len(build(src, tgt, 60, 80, k=1, frequent=0).ids) < len(build(src, tgt, 60, 80, k=20, frequent=0).ids)


def test_a_vocabulary_opens_with_the_specials_and_takes_extra_ids():
    sl = build([[5, 6], [7]], [[9, 10], [11]], 8, 12, k=2, frequent=0)
    v = sl.vocab([[5]], extra=[4])
    assert v[:SPECIALS].tolist() == list(range(SPECIALS))          # <eos> keeps its id inside the shortlist
    assert v.tolist() == [0, 1, 2, 3, 4, 9, 10]
    assert sl.vocab([]).tolist() == list(range(SPECIALS))
    assert np.all(np.diff(sl.vocab([[5, 6], [7]])) > 0)


def test_the_file_round_trip_and_a_file_that_is_not_one(tmp_path):
    sl = build([[5, 6], [7]], [[9, 10], [11]], 8, 12, k=2, frequent=1)
    sl.save(tmp_path / "shortlist.npz")
    back = Shortlist.load(tmp_path / "shortlist.npz")
    assert back.tgt_vocab == 12 and all(np.array_equal(getattr(back, f), getattr(sl, f))
                                        for f in ("offsets", "ids", "frequent"))
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="bad.npz: not a shortlist"):
        Shortlist.load(tmp_path / "bad.npz")
    np.savez(tmp_path / "odd.npz", offsets=np.array([0, 5]), ids=np.array([1]), frequent=np.array([0]),
             tgt_vocab=np.int64(4))
    with pytest.raises(ValueError, match="odd.npz: not a shortlist .its offsets or ids are out of range"):
        Shortlist.load(tmp_path / "odd.npz")
    with pytest.raises(ValueError, match="need k >= 1"):
        build([[5]], [[9]], 8, 12, k=0)
