"""Labels for Data Set A (by position and dose) and Data Set B (by expert votes), paper 2.2.

Labels are 0 = healthy and 1 = sick everywhere (:data:`data_prep.core.paper.LABELS`).

Data Set A. Healthy: every position that got no light (dose 0). Sick: positions where every
cell is dead or dying at the end of the time-lapse, imaged early, while the cells still look
relatively healthy: only a window of early frames is used. "Dead at the end" is the
manifest's ``dead_at_end`` column (the simulator fills it from its ground truth), or, for
real data, a list of position keys or a minimum dose given by the user. Positions that are
neither (exposed but not dead at the end) are left out of Data Set A.

Data Set B. Each item is a 256 px crop of 10 consecutive frames (:mod:`data_prep.votes_csv`).
Unsure votes are dropped; an item keeps the label its remaining votes agree on, and items
whose votes disagree ("discordant") or that only got Unsure votes are dropped.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from data_prep.concordance import Concordance, concordance, count_disagreement
from data_prep.core.errors import UserError
from data_prep.core.manifest import MANIFEST_NAME, Position
from data_prep.votes_csv import Item, Vote

HEALTHY, SICK = 0, 1
_VOTE_TO_LABEL = {"healthy": HEALTHY, "sick": SICK}


def sick_keys_a(
    positions: list[Position],
    experiment: Path,
    sick_positions: list[str] | None = None,
    sick_min_dose: float | None = None,
) -> set[str]:
    """Keys of the positions that are dead at the end (Data Set A's sick source).

    Precedence: an explicit list of ``plate/well/position`` keys, then a minimum dose
    (seconds), then the manifest's ``dead_at_end`` column.
    """
    keys = {p.key for p in positions}
    if sick_positions:
        unknown = sorted(set(sick_positions) - keys)
        if unknown:
            raise UserError(
                f"--sick-positions: {', '.join(unknown)} not in {experiment / MANIFEST_NAME}."
            )
        return set(sick_positions)
    if sick_min_dose is not None:
        return {p.key for p in positions if p.dose_s >= sick_min_dose}
    return {p.key for p in positions if p.dead_at_end}


def label_positions_a(
    positions: list[Position], sick: set[str], experiment: Path
) -> dict[str, int]:
    """Label each Data Set A position: dose 0 -> 0 (healthy), dead at the end -> 1 (sick).

    Returns
    -------
    dict
        position key -> label, for the positions in Data Set A only.

    Raises
    ------
    UserError
        If a dose-0 position is also listed as sick, or a class is empty.
    """
    manifest = experiment / MANIFEST_NAME
    labels: dict[str, int] = {}
    for p in positions:
        if p.dose_s == 0 and p.key in sick:
            raise UserError(f"{manifest}: position {p.key} has dose 0 but is marked dead at end.")
        if p.dose_s == 0:
            labels[p.key] = HEALTHY
        elif p.key in sick:
            labels[p.key] = SICK
    for label, name in ((HEALTHY, "healthy (dose 0)"), (SICK, "sick (dead at the end)")):
        if label not in labels.values():
            raise UserError(
                f"{manifest}: no {name} positions, so that class of Data Set A would be empty."
            )
    return labels


def early_frames(first: int, count: int, positions: list[Position], experiment: Path) -> range:
    """Frames ``first .. first + count - 1``; every position must have them."""
    if first < 0 or count < 1:
        raise UserError(f"--early-frames: need FIRST >= 0 and COUNT >= 1, got {first} {count}.")
    short = [p for p in positions if p.n_frames < first + count]
    if short:
        raise UserError(
            f"{experiment / MANIFEST_NAME}: position {short[0].key} has {short[0].n_frames} "
            f"frames, fewer than the window --early-frames {first} {count} needs."
        )
    return range(first, first + count)


@dataclass(frozen=True)
class VoteSummary:
    """Data Set B labels from votes, with the counts of what was dropped."""

    labels: dict[Item, int]
    n_items: int
    n_unsure_only: int
    n_discordant: int
    concordance: Concordance


def label_items_b(votes: list[Vote]) -> VoteSummary:
    """Label Data Set B items from votes (module docstring) and measure concordance.

    Concordance follows section 3.1's rule (:func:`data_prep.concordance.count_disagreement`).
    """
    by_item: dict[str, dict[str, str]] = defaultdict(dict)
    for v in votes:
        by_item[v.item_id][v.annotator] = v.label  # an annotator's last vote counts
    labels: dict[Item, int] = {}
    unsure_only = discordant = 0
    for item_id, per_annotator in by_item.items():
        given = {label for label in per_annotator.values() if label != "unsure"}
        if not given:
            unsure_only += 1
        elif len(given) > 1:
            discordant += 1
        else:
            labels[Item.parse(item_id)] = _VOTE_TO_LABEL[given.pop()]
    return VoteSummary(
        labels=labels,
        n_items=len(by_item),
        n_unsure_only=unsure_only,
        n_discordant=discordant,
        concordance=concordance(
            *count_disagreement((v.item_id, v.annotator, v.label) for v in votes)
        ),
    )
