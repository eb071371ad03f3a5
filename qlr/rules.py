"""Hand-written controllers that run through the same machinery as a learned one.

`slope_rule` is the rule a learned controller has to beat: every decision it reads the block's
median slope ratio r along the update the optimizer took (the ``update_slope`` feature, see
`qlr.features`), raises the rate while r stays near 1 (steps too short to change the slope),
cuts it when r says the loss rose along the step, and holds otherwise. It is built as a
`Policy` whose network is one linear layer, so it runs in `QLRScheduler`, saves to a policy file
and is scored exactly like a trained controller.

Example:
    >>> scheduler = QLRScheduler(optimizer, policy=slope_rule())
"""

from __future__ import annotations

import math

import torch

from qlr.features import FEATURE_VERSION
from qlr.policy import Policy, PolicyMetadata
from qlr.update_chain import SLOPE_CLIP

SLOPE_FEATURE = "update_slope"  # the median of r clipped to +-SLOPE_CLIP, divided by it


def slope_rule(
    raise_above: float = 0.5,
    lower_below: float = -0.9,
    up: float = 2**0.5,
    down: float = 0.5,
    interval: int = 5,
) -> Policy:
    """The rule on the slope ratio r: x`up` when r > `raise_above`, x`down` when r <
    `lower_below`, hold otherwise, every `interval` steps.

    r is the block's median of g(theta_t) . u / -|g(theta_{t-1}) . u| for the update u the
    optimizer took: about 1 for a step too short to change the slope, 0 at the minimum along
    the step, below -1 when the loss rose along it.

    Args:
        raise_above: r above which the rate is raised (in (-2, 2)).
        lower_below: r below which the rate is lowered (in (-2, `raise_above`)).
        up: factor applied when raising (> 1).
        down: factor applied when lowering (in (0, 1)).
        interval: optimizer steps per decision.

    Returns:
        A `Policy` with actions (`down`, 1, `up`) that reads the one feature ``update_slope``.
    """
    if not -SLOPE_CLIP < lower_below < raise_above < SLOPE_CLIP:
        raise ValueError(
            f"need -{SLOPE_CLIP:g} < lower_below < raise_above < {SLOPE_CLIP:g} (r is clipped "
            f"to +-{SLOPE_CLIP:g}), got "
            f"lower_below={lower_below}, raise_above={raise_above}"
        )
    if not (math.isfinite(up) and up > 1) or not 0 < down < 1:
        raise ValueError(f"need up > 1 and 0 < down < 1, got up={up}, down={down}")
    if int(interval) != interval or interval < 1:
        raise ValueError(f"interval must be a positive integer, got {interval}")
    # q(down) = -(x - lower/2), q(hold) = 0, q(up) = x - raise/2 for x = update_slope = r / 2:
    # exactly one of them is positive outside the dead band, none inside it (ties hold).
    weight = torch.tensor([[-1.0], [0.0], [1.0]])
    bias = torch.tensor(
        [lower_below / SLOPE_CLIP, 0.0, -raise_above / SLOPE_CLIP], dtype=torch.float32
    )
    metadata = PolicyMetadata(
        action_factors=(float(down), 1.0, float(up)),
        decision_interval=int(interval),
        hidden_sizes=(),
        feature_version=FEATURE_VERSION,
        feature_names=(SLOPE_FEATURE,),
        extra={
            "rule": "slope_rule",
            "raise_above": raise_above,
            "lower_below": lower_below,
        },
    )
    return Policy([(weight, bias)], metadata)
