"""Split stage positions into train and test (paper section 2.2: never the same position in
both), balanced by class and dose, with a fixed seed."""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np

from data_prep.core.errors import UserError
from data_prep.core.paper import LABELS


def split_positions(
    strata: dict[str, tuple[int, float]], test_fraction: float, seed: int, where: str
) -> dict[str, str]:
    """Assign each position to ``"train"`` or ``"test"``.

    Positions are grouped by (label, dose); each group is shuffled with ``seed`` and
    ``floor(test_fraction * n + 0.5)`` of its positions go to test, so both classes and every
    dose are represented in proportion. A class of two or more positions always gets at least
    one train and one test position (moved within its largest stratum).

    Parameters
    ----------
    strata : dict
        position key -> (label, dose in s).
    where : str
        What to name in errors (the manifest or votes file).

    Raises
    ------
    UserError
        If a class ends up with no train or no test position.
    """
    if not 0.0 < test_fraction < 1.0:
        raise UserError(f"--test-fraction: {test_fraction} is not between 0 and 1.")
    groups: dict[tuple[int, float], list[str]] = defaultdict(list)
    for key, stratum in sorted(strata.items()):
        groups[stratum].append(key)
    rng = np.random.default_rng(seed)
    out: dict[str, str] = {}
    for stratum in sorted(groups):
        keys = groups[stratum]
        order = rng.permutation(len(keys))
        n_test = math.floor(test_fraction * len(keys) + 0.5)
        for rank, i in enumerate(order):
            out[keys[i]] = "test" if rank < n_test else "train"
    # Strata of one position give none to test; make sure each class with two or more
    # positions has at least one of each part, taking it from the class's largest stratum.
    for label in LABELS:
        for part, other in (("test", "train"), ("train", "test")):
            keys = [k for k in sorted(strata) if strata[k][0] == label]
            if len(keys) >= 2 and not any(out[k] == part for k in keys):
                largest = max({strata[k] for k in keys}, key=lambda st: (len(groups[st]), -st[1]))
                candidates = [k for k in groups[largest] if out[k] == other]
                out[candidates[int(rng.integers(len(candidates)))]] = part
    for label, name in LABELS.items():
        for part in ("train", "test"):
            if not any(out[k] == part and s[0] == label for k, s in strata.items()):
                raise UserError(
                    f"{where}: the split leaves the {part} set with no {name} position "
                    f"(--test-fraction {test_fraction}); more positions are needed."
                )
    return out
