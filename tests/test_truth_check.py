"""Data Set B against the simulated truth: item sick fractions and vote agreement."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from data_prep.sim.annotators import THRESHOLD, item_truth, truth_label, vote_truth_agreement
from data_prep.sim.truth import SICK_HEALTHY, SICK_NONE, SICK_SICK
from data_prep.votes_csv import Item, Vote


def test_item_truth_is_the_mean_sick_fraction_over_ten_frames(tmp_path):
    sick = np.full((20, 512, 512), SICK_NONE, np.uint8)
    # item at (0, 0): frames 0-4 a quarter sick + a quarter healthy (1/2 of cells), 5-9 healthy
    sick[:5, :64, :256] = SICK_SICK
    sick[:5, 64:128, :256] = SICK_HEALTHY
    sick[5:10, :128, :128] = SICK_HEALTHY
    sick[:10, 256:, :256] = SICK_SICK  # item at (256, 0): all sick
    sick[10:, :, :] = SICK_SICK  # second window: everything sick
    tifffile.imwrite(tmp_path / "sick.tif", sick, compression="zlib")
    items = [Item("p/w/s", 0, 0, 0), Item("p/w/s", 0, 0, 256), Item("p/w/s", 0, 256, 0),
             Item("p/w/s", 10, 0, 0)]  # fmt: skip
    got = item_truth(tmp_path, items)
    np.testing.assert_allclose(got, [0.25, 0.0, 1.0, 1.0])
    np.testing.assert_array_equal(truth_label(got), [0, 0, 1, 1])
    assert truth_label(np.array([THRESHOLD]))[0] == 0  # "above" the undecided point


def test_vote_truth_agreement_hand_count():
    rows = [("i1", "a", "sick"), ("i1", "b", "sick"), ("i2", "a", "healthy"),
            ("i3", "a", "healthy"), ("i3", "b", "sick"), ("i4", "a", "unsure")]  # fmt: skip
    votes = [
        Vote(f"p/w/s@t0y0x{256 * int(i[1])}", a, lab, False, f"2018-01-01T09:0{k}:00Z")
        for k, (i, a, lab) in enumerate(rows)
    ]
    truth = {f"p/w/s@t0y0x{256 * k}": t for k, t in ((1, 1), (2, 1), (3, 0), (4, 0))}
    got = vote_truth_agreement(votes, truth)
    assert got["votes"] == 5 and got["votes_agree"] == pytest.approx(3 / 5)
    assert got["labels"] == 2 and got["labels_agree"] == pytest.approx(0.5)
    assert got["labels_agree_per_true_class"] == {"healthy": None, "sick": 0.5}
