"""The scores `qlr evaluate` and `qlr compare` share: the oracle constant, the floor, the ratio.

A run is scored by log10(final loss / reference loss), the reference being the oracle constant's
loss (the lowest final loss of the constant rates on a grid, chosen in hindsight per instance
and inner optimizer) or the constant rate the run started from. Both losses are floored at a
tiny fraction of the run's initial loss, so a run that reaches an exact zero still gets a
finite score, and the ratio is clipped to +-`MAX_LOG10` decades: a divergence scores +12.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Hashable, Iterable

import numpy as np

MAX_LOG10 = 12.0  # scores are clipped to +-12 decades; a divergence scores +12
SCORED = ("ok", "diverged")  # statuses of runs that ran to a final loss (compare's rows)


def loss_floor(initial_loss: float | None) -> float:
    """The smallest loss a score tells apart: 1e-12 of the run's initial loss (plus 1e-30)."""
    return 1e-12 * abs(initial_loss or 0.0) + 1e-30


def log10_ratio(a: float, b: float, floor: float) -> float:
    """log10(a / b) with both floored; a divergence (inf) against a finite b counts as +12."""
    if not math.isfinite(a) and not math.isfinite(b):
        return 0.0
    a = min(max(a, floor), 1e300)
    b = min(max(b, floor), 1e300)
    return float(np.clip(math.log10(a / b), -MAX_LOG10, MAX_LOG10))


def score(final_loss: float, reference_loss: float, initial_loss: float | None) -> float:
    """log10(final / reference), floored at `loss_floor` of the run's initial loss."""
    return log10_ratio(final_loss, reference_loss, loss_floor(initial_loss))


def oracle_losses(
    rows: Iterable[dict],
    key: Callable[[dict], Hashable],
    on_grid: Callable[[float], bool] | None = None,
) -> defaultdict[Hashable, float]:
    """The oracle constant's loss per `key(row)`: the lowest final loss of the constant runs.

    Args:
        rows: run rows with ``method``, ``lr`` and ``final_loss`` (and ``status`` where a run
            may have failed: only runs that reached a final loss count).
        key: what a row is compared within (instance and inner optimizer, budget, ...).
        on_grid: when given, only constant runs whose rate it accepts count.

    Returns:
        key -> lowest final loss; a key without any constant run reads as infinity.
    """
    oracle: defaultdict[Hashable, float] = defaultdict(lambda: math.inf)
    for row in rows:
        if row["method"] != "constant" or row.get("status", "ok") not in SCORED:
            continue
        if on_grid is not None and not on_grid(row["lr"]):
            continue
        k = key(row)
        oracle[k] = min(oracle[k], row["final_loss"])
    return oracle
