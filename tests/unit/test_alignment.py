import numpy as np
import pandas as pd
import pytest

from include.segmentation.core.alignment import align_segment_ids, stability

MARKETS = np.array([f"M{i:02d}" for i in range(20)], dtype=object)
PREVIOUS = pd.Series(np.repeat([3, 7, 9, 12], 5), index=MARKETS)  # last month: ids 3, 7, 9, 12


def test_a_relabelled_identical_partition_keeps_every_id():
    permuted = PREVIOUS.map({3: 2, 7: 0, 9: 3, 12: 1}).to_numpy()  # K-Means numbering is arbitrary
    ids = align_segment_ids(MARKETS, permuted, PREVIOUS, first_new_id=13)
    np.testing.assert_array_equal(ids, PREVIOUS.to_numpy())
    assert stability(MARKETS, ids, PREVIOUS) == 1.0


def test_a_few_moved_markets_keep_at_least_90_percent_stable():
    labels = PREVIOUS.map({3: 0, 7: 1, 9: 2, 12: 3}).to_numpy().copy()
    labels[[0, 6]] = [1, 2]  # two of twenty markets move to another segment
    ids = align_segment_ids(MARKETS, labels, PREVIOUS, first_new_id=13)
    assert ids[0] == 7
    assert ids[6] == 9
    assert stability(MARKETS, ids, PREVIOUS) == pytest.approx(0.9)


def test_a_genuinely_new_segment_gets_a_new_id_and_a_vanished_one_is_not_reused():
    labels = PREVIOUS.map({3: 0, 7: 1, 9: 2, 12: 2}).to_numpy()  # 9 and 12 merged
    new_markets = np.append(MARKETS, ["N1", "N2", "N3"]).astype(object)
    labels = np.append(labels, [5, 5, 5])  # a cluster made only of markets that are new this month
    ids = align_segment_ids(new_markets, labels, PREVIOUS, first_new_id=13)
    assert set(ids[:10]) == {3, 7}
    assert len(set(ids[10:20])) == 1
    assert ids[10] in {9, 12}  # the merged cluster keeps one of its two ids
    assert set(ids[20:]) == {13}


def test_first_month_numbers_by_size_and_noise_stays_unassigned():
    labels = np.array([4, 4, 4, 1, 1, -1])
    ids = align_segment_ids(np.array(list("abcdef"), dtype=object), labels, pd.Series(dtype=float), first_new_id=1)
    np.testing.assert_array_equal(ids, [1, 1, 1, 2, 2, -1])


def test_new_ids_may_not_collide_with_previous_ones():
    with pytest.raises(ValueError, match=r"first_new_id \(5\) must exceed every previous SegmentID \(12\)"):
        align_segment_ids(MARKETS, np.zeros(20, dtype=int), PREVIOUS, first_new_id=5)
