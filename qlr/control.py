"""The learning-rate control loop shared by the training environment and the deployed scheduler.

`LRController` owns everything between "an optimizer step happened" and "the learning rate
changes": the feature tracker, the decision interval, the action factors, the bounds and the
per-step guard. The environment and `QLRScheduler` drive the same object, so a policy is trained
with exactly the rules it will run under.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np
import torch

from qlr.features import FeatureTracker

# Factors symmetric in log space; the wider sets follow Almeida et al. (2021).
ACTION_SETS: dict[int, tuple[float, ...]] = {
    3: (0.5, 1.0, 2.0),
    5: (0.5, 2**-0.5, 1.0, 2**0.5, 2.0),
    7: (0.5, 2**-0.5, 0.9, 1.0, 1.1, 2**0.5, 2.0),
}


def resolve_action_factors(spec: int | Sequence[float]) -> tuple[float, ...]:
    """Turn 3, 5, 7 or an explicit sequence of positive factors into a tuple of floats."""
    if isinstance(spec, (int, np.integer)) and not isinstance(spec, bool):
        if int(spec) not in ACTION_SETS:
            raise ValueError(
                f"action_factors={spec} is not a predefined set; choose one of "
                f"{sorted(ACTION_SETS)} or pass a sequence of positive factors"
            )
        return ACTION_SETS[int(spec)]
    try:
        factors = tuple(float(f) for f in spec)
    except TypeError as err:
        raise ValueError(
            f"action_factors must be one of {sorted(ACTION_SETS)} or a sequence of positive "
            f"factors, got {spec!r}"
        ) from err
    if len(factors) < 2 or not all(math.isfinite(f) and f > 0 for f in factors):
        raise ValueError(f"action_factors must hold at least two positive factors, got {spec!r}")
    return factors


def reference_lr(optimizer: torch.optim.Optimizer) -> float:
    """The learning rate of the first param group; the others keep their ratio to it."""
    return float(optimizer.param_groups[0]["lr"])


def scale_lr(optimizer: torch.optim.Optimizer, factor: float) -> None:
    """Multiply every param group's learning rate by `factor`, keeping their ratios.

    A tensor learning rate is updated in place, so `torch.compile` sees no new constant.
    """
    if factor == 1.0:
        return
    for group in optimizer.param_groups:
        if isinstance(group["lr"], torch.Tensor):
            group["lr"].mul_(factor)
        else:
            group["lr"] = group["lr"] * factor


class LRController:
    """Observe every step, decide every `decision_interval` steps, clamp, and guard.

    Args:
        action_factors: 3, 5 or 7 (predefined sets), or the multiplicative factors themselves.
        decision_interval: optimizer steps between two decisions (k).
        min_lr: the learning rate is never set below this.
        max_lr: the learning rate is never set above this.
        nonfinite_cut: factor applied at once when a step's loss or gradient is NaN or infinite.
        history: past decisions kept by the feature tracker for its loss rank feature.
    """

    def __init__(
        self,
        action_factors: int | Sequence[float] = 3,
        decision_interval: int = 5,
        min_lr: float = 1e-8,
        max_lr: float = 10.0,
        nonfinite_cut: float = 0.1,
        history: int = 5,
    ) -> None:
        self.action_factors = resolve_action_factors(action_factors)
        if int(decision_interval) != decision_interval or decision_interval < 1:
            raise ValueError(
                f"decision_interval must be a positive integer, got {decision_interval}"
            )
        if not (0 < min_lr < max_lr) or not math.isfinite(max_lr):
            raise ValueError(
                f"need 0 < min_lr < max_lr < inf, got min_lr={min_lr}, max_lr={max_lr}"
            )
        if not 0 < nonfinite_cut < 1:
            raise ValueError(f"nonfinite_cut must lie in (0, 1), got {nonfinite_cut}")
        self.decision_interval = int(decision_interval)
        self.min_lr = float(min_lr)
        self.max_lr = float(max_lr)
        self.nonfinite_cut = float(nonfinite_cut)
        self.tracker = FeatureTracker(interval=self.decision_interval, history=history)

    @property
    def n_actions(self) -> int:
        return len(self.action_factors)

    def reset(self) -> None:
        self.tracker.reset()

    def clamp(self, lr: float) -> float:
        return min(self.max_lr, max(self.min_lr, lr))

    def record_step(self, loss: float, grads: Iterable[torch.Tensor | None]) -> float:
        """Feed one optimizer step; return the factor to apply to the learning rate right now.

        The factor is 1 for an ordinary step and `nonfinite_cut` for a step whose loss or
        gradients were not finite: the guard acts at once instead of waiting for a decision.
        """
        stats = self.tracker.update(loss, grads)
        return 1.0 if stats.finite else self.nonfinite_cut

    @property
    def decision_due(self) -> bool:
        return self.tracker.block_length >= self.decision_interval

    def observe(self) -> np.ndarray:
        """The observation for a decision; starts the next block."""
        return self.tracker.observation()

    def next_lr(self, lr: float, action: int) -> float:
        """The learning rate after taking `action` at rate `lr`, within the bounds."""
        if not 0 <= int(action) < self.n_actions:
            raise ValueError(f"action must be in [0, {self.n_actions}), got {action}")
        return self.clamp(lr * self.action_factors[int(action)])
