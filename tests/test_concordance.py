"""Section 3.1's disagreement rule, one function for simulator, labels and database."""

from __future__ import annotations

import pytest

from data_prep.concordance import count_disagreement
from data_prep.labels import label_items_b
from data_prep.sim.annotators import disagreement
from data_prep.votes_csv import Vote

# (item, annotator, label) in the order cast; comments give the hand count.
TABLE = [
    ("i1", "a", "healthy"), ("i1", "b", "healthy"),  # overlap, agree
    ("i2", "a", "healthy"), ("i2", "b", "sick"),  # overlap, disagree
    ("i3", "a", "sick"), ("i3", "b", "unsure"),  # unsure: left out
    ("i4", "a", "sick"), ("i4", "b", "sick"), ("i4", "c", "healthy"),  # triple, disagree once
    ("i5", "a", "healthy"), ("i5", "b", "healthy"), ("i5", "c", "healthy"),  # triple, agree
    ("i6", "a", "sick"), ("i6", "b", "sick"), ("i6", "c", "unsure"),  # triple with unsure: out
    ("i7", "a", "healthy"),  # one annotator: no overlap
    ("i8", "a", "unsure"), ("i8", "a", "healthy"), ("i8", "b", "healthy"),  # a's last vote counts
    ("i9", "a", "sick"), ("i9", "a", "sick"),  # one annotator twice: no overlap
    ("i10", "a", "unsure"), ("i10", "b", "unsure"),  # both unsure: out
]  # fmt: skip
N_OVERLAP, N_DISAGREE = 5, 2  # i1 i2 i4 i5 i8; i2 i4


def _votes() -> list[Vote]:
    return [
        Vote(f"P/A1/p1@t0y0x{256 * int(item[1:])}", who, lab, False, f"2018-01-01T09:{k:02d}:00Z")
        for k, (item, who, lab) in enumerate(TABLE)
    ]


def test_hand_made_table_has_known_count():
    assert count_disagreement(TABLE) == (N_OVERLAP, N_DISAGREE)


def test_simulator_and_labels_use_the_same_rule():
    votes = _votes()
    assert disagreement(votes) == pytest.approx(N_DISAGREE / N_OVERLAP)
    c = label_items_b(votes).concordance
    assert (c.overlap, c.disagree) == (N_OVERLAP, N_DISAGREE)


def test_no_overlap_gives_nan_and_zero():
    assert count_disagreement([("i", "a", "sick")]) == (0, 0)
    assert disagreement(_votes()[:2]) == pytest.approx(0.0)
    assert disagreement(_votes()[:1]) != disagreement(_votes()[:1])  # NaN
