"""Annotator concordance and the paper's ambiguity estimate (paper section 3.1).

The one disagreement rule (:func:`count_disagreement`, used by the simulated votes, the
Data Set B labels and the annotation database alike): "Out of 263 images with overlapping
annotations, for which neither annotator labeled it as 'unsure', there was disagreement on
49" (section 3.1). The unit is the *item*: an item overlaps when two or more annotators
voted on it (an annotator's last vote counts); it is left out if any of those votes is
Unsure; it disagrees when its remaining votes are not all equal. A triple overlap is one
item, not two or three pairs.

Let N be the number of crops scored by two annotators, neither of whom chose Unsure, and D
the number on which they disagree; d = D / N (49 / 263 = 18.6%). Assume a fraction a of the
crops is ambiguous, that annotators agree on every unambiguous crop, and that they agree on
an ambiguous one by chance half the time (two labels). Then:

- disagreement d = a / 2, so the ambiguous fraction before filtering is a = 2 d (37.2%);
- dropping the disagreeing crops leaves 1 - d of them, of which a / 2 = d are ambiguous
  (their agreed label is a coin flip): the ambiguous fraction after filtering is
  d / (1 - d) (22.9%);
- the paper doubles the rounded disagreement (2 x 18.6% = 37.2%; exactly 37.26%), and so
  does :meth:`Concordance.summary`; the stored fractions are exact;
- an ambiguous crop's label carries no information about the image, so the accuracy that can
  be expected is at most 1 - d / (1 - d) (77.1%), the paper's "upper limit of performance".
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Concordance:
    """Concordance figures; fractions in [0, 1]."""

    overlap: int
    disagree: int
    disagreement: float
    ambiguous_before: float
    ambiguous_after: float
    accuracy_ceiling: float

    def as_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        """One line with percentages as the paper prints them (section 3.1)."""
        pct = round(100 * self.disagreement, 1)
        return (
            f"{self.disagree} of {self.overlap} overlapping crops disagree "
            f"({pct:.1f}%); ambiguous before filtering "
            f"{min(2 * pct, 100.0):.1f}%, after {100 * self.ambiguous_after:.1f}%; "
            f"accuracy ceiling {100 * self.accuracy_ceiling:.1f}%"
        )


def concordance(overlap: int, disagree: int) -> Concordance:
    """Concordance from N overlapping and D disagreeing crops (module docstring).

    ``concordance(263, 49)`` gives 18.6%, 37.2%, 22.9% and 77.1% (paper section 3.1).
    With no overlap every fraction is 0 and the ceiling 1 (nothing is known).
    """
    if overlap < 0 or not 0 <= disagree <= overlap:
        raise ValueError(f"need 0 <= disagree <= overlap, got {disagree} of {overlap}")
    d = disagree / overlap if overlap else 0.0
    after = d / (1.0 - d) if d < 1.0 else 1.0
    return Concordance(
        overlap=overlap,
        disagree=disagree,
        disagreement=d,
        ambiguous_before=min(2.0 * d, 1.0),
        ambiguous_after=after,
        accuracy_ceiling=1.0 - after,
    )


def count_disagreement(votes: Iterable[tuple[str, str, str]]) -> tuple[int, int]:
    """N overlapping items and D disagreeing ones under section 3.1's rule (module docstring).

    Parameters
    ----------
    votes : iterable of (item_id, annotator, label)
        In the order they were cast (an annotator's last vote on an item counts); labels
        ``healthy``, ``sick`` or ``unsure``.

    Returns
    -------
    (N, D) : tuple of int
        Items voted by two or more annotators, none of them Unsure; and those of them whose
        labels are not all equal.
    """
    by_item: dict[str, dict[str, str]] = {}
    for item_id, annotator, label in votes:
        by_item.setdefault(item_id, {})[annotator] = label
    overlap = disagree = 0
    for per_annotator in by_item.values():
        labels = set(per_annotator.values())
        if len(per_annotator) >= 2 and "unsure" not in labels:
            overlap += 1
            disagree += len(labels) > 1
    return overlap, disagree
