"""Annotator concordance and the paper's ambiguity estimate (paper section 3.1).

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
