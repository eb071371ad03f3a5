"""Deferring to the slope rule: a learned controller that leaves the rule only where it is sure.

A Q-network trained on a few problem families can be confidently wrong on another. `Deferral`
makes the slope rule (`qlr.rules.slope_rule`) the default action and lets the network overrule
it only when

* its q-value for its own choice beats its q-value for the rule's action by more than
  `margin` (a residual controller: the learned advantage must clear a margin), and
* with an ensemble (a network with several heads), every head picks the same action (their
  disagreement hands the decision back to the rule).

The rule reads one feature, ``update_slope``, which every policy of feature version 4 or later
can observe; its factors must be among the policy's action factors.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from qlr.update_chain import SLOPE_CLIP

SLOPE_FEATURE = "update_slope"  # the median of r clipped to +-SLOPE_CLIP, divided by it


@dataclass(frozen=True)
class Deferral:
    """The rule a policy defers to and how sure the network must be to overrule it.

    Args:
        margin: q-value advantage over the rule's action the network's choice needs (>= 0; 0
            overrules on any strict advantage).
        raise_above: r above which the rule raises the rate (see `qlr.rules.slope_rule`).
        lower_below: r below which the rule lowers it.
        up: the rule's factor when raising.
        down: the rule's factor when lowering.
    """

    margin: float
    raise_above: float = 0.5
    lower_below: float = -0.9
    up: float = 2**0.5
    down: float = 0.5

    def __post_init__(self) -> None:
        if not (math.isfinite(self.margin) and self.margin >= 0):
            raise ValueError(f"margin must be a finite number >= 0, got {self.margin}")
        if not -SLOPE_CLIP < self.lower_below < self.raise_above < SLOPE_CLIP:
            raise ValueError(
                f"need -{SLOPE_CLIP:g} < lower_below < raise_above < {SLOPE_CLIP:g}, got "
                f"lower_below={self.lower_below}, raise_above={self.raise_above}"
            )
        if not (math.isfinite(self.up) and self.up > 1) or not 0 < self.down < 1:
            raise ValueError(f"need up > 1 and 0 < down < 1, got up={self.up}, down={self.down}")

    def to_dict(self) -> dict[str, float]:
        return {key: float(value) for key, value in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: Any) -> Deferral:
        if not isinstance(data, dict) or "margin" not in data:
            raise ValueError(f"a deferral needs at least a margin, got {data!r}")
        unknown = sorted(set(data) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(f"unknown deferral fields {unknown}")
        return cls(**{key: float(value) for key, value in data.items()})

    def rule_indices(self, action_factors: tuple[float, ...]) -> tuple[int, int, int]:
        """The indices of the rule's (down, hold, up) among `action_factors`.

        Raises:
            ValueError: one of the rule's factors is not an action of the policy.
        """
        indices = []
        for factor in (self.down, 1.0, self.up):
            matches = [i for i, f in enumerate(action_factors) if math.isclose(f, factor)]
            if not matches:
                raise ValueError(
                    f"the rule's factor {factor:g} is not among the action factors "
                    f"{[round(f, 4) for f in action_factors]}"
                )
            indices.append(matches[0])
        return indices[0], indices[1], indices[2]

    def rule_action(self, slope: float, indices: tuple[int, int, int]) -> int:
        """The rule's action for the observed ``update_slope`` feature (r / SLOPE_CLIP)."""
        r = float(slope) * SLOPE_CLIP
        if r > self.raise_above:
            return indices[2]
        if r < self.lower_below:
            return indices[0]
        return indices[1]

    def choose(self, head_q: np.ndarray, rule: int) -> int:
        """The action for one observation, from every head's q-values ([heads, n_actions])."""
        mean = head_q.mean(axis=0)
        best = int(np.argmax(mean))
        if best == rule:
            return rule
        if head_q.shape[0] > 1 and np.any(np.argmax(head_q, axis=1) != best):
            return rule  # the heads disagree: nothing supports leaving the rule
        return best if mean[best] - mean[rule] > self.margin else rule
