"""The learning-rate control loop shared by the training environment and the deployed scheduler.

`LRController` owns everything between "an optimizer step happened" and "the learning rate
changes": the feature tracker, the decision interval, the action factors, the bounds and the
per-step guard; and, for a controller that also acts on the batch size, the batch size the loop
should use next. The environment and `QLRScheduler` drive the same object, so a policy is trained
with exactly the rules it will run under.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from enum import Enum
from typing import Any

import numpy as np
import torch

from qlr.feature_set import lr_ceiling
from qlr.features import FEATURE_NAMES, FEATURES_V2, FEATURES_V3, FeatureTracker

logger = logging.getLogger(__name__)

MIN_LR = 1e-8
"""The default lower bound of the learning rate, in training and in deployment."""
MAX_LR = 10.0
"""The default upper bound of the learning rate, in training and in deployment."""
MAX_BATCH_GROWTH = 8.0
"""The default upper bound of the batch size, as a multiple of the starting batch size."""
CEILING_BELOW_FAILURE = 0.5
"""After a step overflowed or diverged, the rate stays below this multiple of the rate it failed
at, while the ceiling relaxes (see `LRController.remember_failure`)."""
CEILING_RELAX = 1.05
"""The ceiling's rise per decision: back to the failing rate after about 14 decisions."""


class CutKind(str, Enum):
    """The guard that cut the rate on a step; the value names it in logs (``qlr/{value}_cut``)."""

    NONFINITE = "nonfinite"  # a NaN or infinite loss or gradient
    SPIKE = "spike"  # a loss spike (see `LRController`)


# Factors symmetric in log space; the wider sets follow Almeida et al. (2021).
ACTION_SETS: dict[int, tuple[float, ...]] = {
    3: (0.5, 1.0, 2.0),
    5: (0.5, 2**-0.5, 1.0, 2**0.5, 2.0),
    7: (0.5, 2**-0.5, 0.9, 1.0, 1.1, 2**0.5, 2.0),
}


def resolve_features(names: Sequence[str] | None, batch: bool = False) -> tuple[str, ...]:
    """Check a selection of feature names and return it as a tuple.

    None selects the default: every feature for a controller that also sets the batch size
    (`batch`), and the rate features of version 2 (all but ``grad_noise`` and ``batch_growth``)
    for one that does not, which saves it reading gradients on every step.
    """
    if names is None:
        return FEATURES_V3 if batch else FEATURES_V2
    if isinstance(names, str):
        raise ValueError(f"features must be a list of feature names, got the string {names!r}")
    names = tuple(names)
    unknown = [n for n in names if n not in FEATURE_NAMES]
    if unknown or not names or len(set(names)) != len(names):
        raise ValueError(
            f"features {list(names)} must be distinct names from {list(FEATURE_NAMES)}"
            + (f"; unknown: {unknown}" if unknown else "")
        )
    return names


def check_factors(
    spec: Iterable[float], name: str, minimum: int = 2, keeps: str | None = None
) -> tuple[float, ...]:
    """Check a sequence of multiplicative factors and return it as a tuple of floats.

    Args:
        spec: the factors.
        name: what they are called in an error message.
        minimum: how many there must be at least.
        keeps: when set, 1 must be one of the factors, and this says what it keeps (for the
            message, e.g. ``"keep the batch size"``).

    Raises:
        ValueError: `spec` is not a sequence of numbers, holds too few, holds one that is not
            positive and finite, or lacks the 1 that `keeps` asks for.
    """
    try:
        factors = tuple(float(f) for f in spec)
    except TypeError as err:
        raise ValueError(f"{name} must be a sequence of positive factors, got {spec!r}") from err
    if len(factors) < minimum or not all(math.isfinite(f) and f > 0 for f in factors):
        count = {1: "one positive factor", 2: "two positive factors"}.get(
            minimum, f"{minimum} positive factors"
        )
        raise ValueError(f"{name} must hold at least {count}, got {spec!r}")
    if keeps is not None and 1.0 not in factors:
        raise ValueError(f"{name} must include 1 ({keeps}), got {spec!r}")
    return factors


def resolve_batch_factors(spec: Sequence[float] | None) -> tuple[float, ...] | None:
    """Check the batch-size factors of a noise-level controller (None: rate-only control)."""
    if spec is None:
        return None
    return check_factors(spec, "batch_factors", keeps="keep the batch size")


def resolve_action_factors(spec: int | Sequence[float]) -> tuple[float, ...]:
    """Turn 3, 5, 7 or an explicit sequence of positive factors into a tuple of floats."""
    if isinstance(spec, (int, np.integer)) and not isinstance(spec, bool):
        if int(spec) not in ACTION_SETS:
            raise ValueError(
                f"action_factors={spec} is not a predefined set; choose one of "
                f"{sorted(ACTION_SETS)} or pass a sequence of positive factors"
            )
        return ACTION_SETS[int(spec)]
    if not isinstance(spec, Iterable):
        raise ValueError(
            f"action_factors must be one of {sorted(ACTION_SETS)} or a sequence of positive "
            f"factors, got {spec!r}"
        )
    return check_factors(spec, "action_factors")


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

    Two guards act between decisions, on the step that trips them:

    * a NaN or infinite loss or gradient multiplies the rate by `nonfinite_cut`;
    * with `spike_factor` set, a loss above `spike_factor` times the mean loss of the previous
      block, and above the loss of the step before, multiplies the rate by `spike_cut`. A loss
      that keeps rising is cut on every step; one that falls back after a cut is left to recover.
      A loss that is merely noisy rarely reaches twice its recent mean.

    They act one step late: a step's loss and gradient statistics stay on their device until
    the next `record_step` reads them (one small transfer, usually finished on an accelerator by
    then), so that between decisions a training loop never waits for the step it has just
    queued. The cut for step t therefore reaches the rate after step t + 1, except on the step
    that completes a block, which is read at once because the decision needs it: a cut on that
    step comes before the decision, as it always did. The environment and the scheduler share
    this timing.

    With `batch_factors`, every action is a pair (rate factor, batch factor): action
    ``i * len(batch_factors) + j`` multiplies the rate by ``action_factors[i]`` and the batch size
    by ``batch_factors[j]``. Decisions are then paced in examples, not steps: the n-th decision
    comes at the first step by which ``n * decision_interval * starting batch size`` examples
    have been spent. At twice the batch a decision comes after half as many steps; when the
    batch does not divide that budget (k = 5 at twice the batch: 2.5 steps), blocks of 2 and 3
    steps alternate, a single decision spends within one batch of the budget and the error never
    accumulates. A batch larger than a decision's share makes every step a decision. A larger
    batch buys no extra progress per decision.

    Args:
        action_factors: 3, 5 or 7 (predefined sets), or the multiplicative factors themselves.
        decision_interval: optimizer steps between two decisions (k).
        min_lr: the learning rate is never set below this.
        max_lr: the learning rate is never set above this.
        max_lr_growth: when set, the rate is also never raised above this multiple of the rate
            the run started with (a bound relative to the user's choice rather than absolute).
        nonfinite_cut: factor applied at once when a step's loss or gradient is NaN or infinite.
        history: past decisions kept by the feature tracker for its loss rank feature.
        features: names of the features the policy reads, in order (default: see
            `resolve_features`).
        spike_factor: loss ratio that trips the spike guard; None switches it off.
        spike_cut: factor the spike guard applies.
        batch_factors: batch-size factors for a controller that also sets the batch (None: it
            sets only the rate; see above).
        batch_size: the batch size the run starts with (needed with `batch_factors`).
        max_batch_size: the batch size is never set above this (default: `MAX_BATCH_GROWTH` x
            `batch_size`).
        min_batch_size: the batch size is never set below this.
        total_steps: the run's budget in optimizer steps, when it is known (at the starting
            batch size, for a controller that sets the batch). It feeds the ``progress``
            feature; a run may go past it (progress stays at 1).
        group: a `torch.distributed` process group whose ranks decide together: every step's
            statistics are summed over it (see `qlr.distributed`), so every rank reads the same
            features and guards and makes the same decision. None for one process.
    """

    def __init__(
        self,
        action_factors: int | Sequence[float] = 3,
        decision_interval: int = 5,
        min_lr: float = MIN_LR,
        max_lr: float = MAX_LR,
        max_lr_growth: float | None = None,
        nonfinite_cut: float = 0.1,
        history: int = 5,
        features: Sequence[str] | None = None,
        spike_factor: float | None = None,
        spike_cut: float = 0.5,
        batch_factors: Sequence[float] | None = None,
        batch_size: int | None = None,
        max_batch_size: int | None = None,
        min_batch_size: int = 1,
        total_steps: int | None = None,
        group: Any | None = None,
    ) -> None:
        self.action_factors = resolve_action_factors(action_factors)
        self.batch_factors = resolve_batch_factors(batch_factors)
        if int(decision_interval) != decision_interval or decision_interval < 1:
            raise ValueError(
                f"decision_interval must be a positive integer, got {decision_interval}"
            )
        if not (0 < min_lr < max_lr) or not math.isfinite(max_lr):
            raise ValueError(
                f"need 0 < min_lr < max_lr < inf, got min_lr={min_lr}, max_lr={max_lr}"
            )
        if max_lr_growth is not None and not (math.isfinite(max_lr_growth) and max_lr_growth > 1):
            raise ValueError(f"max_lr_growth must be a number > 1 or None, got {max_lr_growth}")
        if not 0 < nonfinite_cut < 1:
            raise ValueError(f"nonfinite_cut must lie in (0, 1), got {nonfinite_cut}")
        if spike_factor is not None and not (math.isfinite(spike_factor) and spike_factor > 1):
            raise ValueError(f"spike_factor must be a number > 1 or None, got {spike_factor}")
        if not 0 < spike_cut < 1:
            raise ValueError(f"spike_cut must lie in (0, 1), got {spike_cut}")
        self.decision_interval = int(decision_interval)
        self.min_lr = float(min_lr)
        self.max_lr = float(max_lr)
        self.max_lr_growth = None if max_lr_growth is None else float(max_lr_growth)
        self.ceiling: float | None = None  # below a rate that failed, while it relaxes
        self.nonfinite_cut = float(nonfinite_cut)
        self.spike_factor = None if spike_factor is None else float(spike_factor)
        self.spike_cut = float(spike_cut)
        self.features = resolve_features(features, batch=self.batch_factors is not None)
        self._feature_index = [FEATURE_NAMES.index(n) for n in self.features]
        self.tracker = FeatureTracker(
            interval=self.decision_interval,
            history=history,
            dense="grad_noise" in self.features,
            features=self.features,
            group=group,
        )
        self.total_steps = check_total_steps(total_steps)
        self.last_cuts: tuple[CutKind, ...] = ()  # every cut of the last record_step, in order
        self.held_cuts: list[CutKind] = []  # judged by flush, returned by the next record_step
        self._warned_bad_lr = False
        self.examples = 0  # examples spent since the run started (batch control only)
        self.blocks = 0  # decision blocks closed since the run started
        self.start_batch_size: int | None = None
        self.batch_size: int | None = None
        self.min_batch_size: int | None = None
        self.max_batch_size: int | None = None
        if batch_size is not None:
            self.set_batch_bounds(batch_size, max_batch_size, min_batch_size)
        elif self.batch_factors is not None:
            raise ValueError("a controller with batch_factors needs the starting batch_size")

    def set_batch_bounds(
        self, batch_size: int, max_batch_size: int | None = None, min_batch_size: int = 1
    ) -> None:
        """Start from `batch_size`, kept within [`min_batch_size`, `max_batch_size`]."""
        _check_batch("batch_size", batch_size)
        if max_batch_size is None:
            max_batch_size = int(MAX_BATCH_GROWTH * int(batch_size))
        _check_batch("max_batch_size", max_batch_size)
        _check_batch("min_batch_size", min_batch_size)
        if not min_batch_size <= batch_size <= max_batch_size:
            raise ValueError(
                f"need min_batch_size <= batch_size <= max_batch_size, got {min_batch_size}, "
                f"{batch_size}, {max_batch_size}"
            )
        self.start_batch_size = self.batch_size = int(batch_size)
        self.min_batch_size, self.max_batch_size = int(min_batch_size), int(max_batch_size)
        self._update_interval()

    @property
    def n_actions(self) -> int:
        return len(self.action_factors) * len(self.batch_factors or (1.0,))

    def action(self, index: int) -> tuple[float, float]:
        """The (rate factor, batch factor) of action `index`."""
        per_rate = len(self.batch_factors or (1.0,))
        rate, batch = divmod(int(index), per_rate)
        return self.action_factors[rate], (self.batch_factors or (1.0,))[batch]

    @property
    def obs_dim(self) -> int:
        return len(self.features)

    def reset(self) -> None:
        self.tracker.reset()
        self.last_cuts = ()
        self.held_cuts = []
        self.examples = self.blocks = 0
        self.ceiling = None  # a new run has no failure to remember
        if self.start_batch_size is not None:
            self.batch_size = self.start_batch_size
            self._update_interval()

    def clamp(self, lr: float) -> float:
        upper = (
            self.max_lr
            if self.ceiling is None
            else max(self.min_lr, min(self.max_lr, self.ceiling))
        )
        return min(upper, max(self.min_lr, lr))

    def remember_failure(self, lr: float) -> None:
        """A step at rate `lr` overflowed or diverged: keep the rate below it for a while.

        The ceiling starts at `CEILING_BELOW_FAILURE` times the failing rate and relaxes by
        `CEILING_RELAX` at every decision (`relax_ceiling`), so a controller that raises the
        rate straight back cannot return to the rate that failed for about 14 decisions.
        """
        if math.isfinite(lr) and lr > 0:
            ceiling = CEILING_BELOW_FAILURE * lr
            self.ceiling = ceiling if self.ceiling is None else min(self.ceiling, ceiling)

    def relax_ceiling(self) -> None:
        """One decision further from the last failure: the ceiling rises a little."""
        if self.ceiling is not None:
            self.ceiling *= CEILING_RELAX
            if self.ceiling >= self.max_lr:
                self.ceiling = None

    def record_step(
        self,
        loss: float | torch.Tensor,
        grads: Iterable[torch.Tensor | None],
        params: Iterable[torch.Tensor] | None = None,
    ) -> float:
        """Feed one optimizer step; return the factor to apply to the learning rate right now.

        `loss` is a float or a 0-dim tensor; `params` are the parameters after the step, in the
        order of `grads`; the update features need them (see `qlr.features`).

        The step's statistics are queued on their device and read at the next call, so that
        between decisions nothing waits for the device: the guards judge a step one call
        later, except the step that completes a block, which is read and judged at once,
        before the decision. The factor is the product of the guards' cuts decided in this
        call (1 for none: `nonfinite_cut` for a step whose loss or gradients were not finite,
        `spike_cut` for a loss spike, see the class docstring); `last_cuts` lists them.
        """
        cuts, self.held_cuts = self.held_cuts, []
        cuts += self._judge()
        self.tracker.queue(loss, grads, params)
        self.examples += self.batch_size or 0
        if self.decision_due:
            cuts += self._judge()
        self.last_cuts = tuple(cuts)
        factor = 1.0
        for kind in cuts:
            factor *= self.cut_factor(kind)
        return factor

    def cut_factor(self, kind: CutKind) -> float:
        """The factor the guard `kind` applies."""
        return self.nonfinite_cut if kind is CutKind.NONFINITE else self.spike_cut

    def flush(self) -> None:
        """Read and judge a queued step now; its cut comes with the next `record_step`.

        For a state dict, and for a block that ends early: nothing is lost or judged twice.
        """
        self.held_cuts += self._judge()

    def _judge(self) -> list[CutKind]:
        """Finish the queued step, if any, and return the guard that trips on it (or none)."""
        if not self.tracker.pending:
            return []
        reference, previous = self.tracker.reference_loss, self.tracker.last_loss
        stats = self.tracker.finish()
        assert stats is not None
        if not stats.finite:
            return [CutKind.NONFINITE]
        loss, factor = stats.loss, self.spike_factor
        # Only while the loss is still rising: once a cut has made the rate stable the loss falls
        # back over a few steps, and cutting on each of them would send the rate to the floor.
        if factor is not None and reference > 0 and loss > factor * reference and loss > previous:
            return [CutKind.SPIKE]
        return []

    @property
    def decision_due(self) -> bool:
        return self.tracker.block_length >= self.tracker.interval

    def _update_interval(self) -> None:
        """Steps in the current block: `decision_interval`, or with batch control the steps
        until the examples spent reach the next decision's share (see the class docstring)."""
        interval = self.decision_interval
        if self.batch_factors is not None and self.batch_size and self.start_batch_size:
            due = (self.blocks + 1) * self.decision_interval * self.start_batch_size
            interval = max(1, math.ceil((due - self.examples) / self.batch_size))
        self.tracker.interval = interval

    def scale_batch(self, factor: float) -> int | None:
        """Multiply the batch size by `factor` (rounded, within bounds); return the new size.

        Returns None, changing nothing, for a controller that does not know its batch size.
        """
        if self.batch_size is None or self.min_batch_size is None or self.max_batch_size is None:
            return None
        new = min(self.max_batch_size, max(self.min_batch_size, round(self.batch_size * factor)))
        if new != self.batch_size:
            self.tracker.record_batch_change(new / self.batch_size)
            self.batch_size = int(new)
        self._update_interval()
        return self.batch_size

    def apply_action(self, optimizer: torch.optim.Optimizer, index: int) -> int | None:
        """Apply action `index` (rate and, if any, batch factor); return the new batch size.

        The one way a decision reaches the run, in the environment and in `QLRScheduler` alike.
        Returns None for a controller that sets only the rate.
        """
        rate_factor, batch_factor = self.action(index)
        self.scale(optimizer, rate_factor)
        return self.scale_batch(batch_factor) if self.batch_factors is not None else None

    @property
    def progress(self) -> float | None:
        """The fraction of the budget spent (examples, with batch control), or None."""
        if self.total_steps is None:
            return None
        if self.batch_factors is not None and self.start_batch_size:
            return self.examples / (self.total_steps * self.start_batch_size)
        return self.tracker.steps / self.total_steps

    def observe(self, lr: float | None = None) -> np.ndarray:
        """The observation for a decision (the selected features); starts the next block.

        A step still queued (a block that ended early) is judged first: see `flush`.

        Args:
            lr: the rate now, which ``lr_ceiling`` compares with the ceiling; it may be left
                out only while no failure is remembered.
        """
        if self.ceiling is not None and lr is None:
            raise ValueError("observe needs the current rate (lr=) while a ceiling is set")
        near_ceiling = lr_ceiling(self.ceiling, 0.0 if lr is None else float(lr))
        self.flush()
        obs = self.tracker.observation(self.progress, near_ceiling)[self._feature_index]
        self.blocks += 1
        self._update_interval()
        return obs

    def scale(self, optimizer: torch.optim.Optimizer, factor: float) -> bool:
        """Multiply the optimizer's rates by `factor`, within the bounds, and remember the move.

        Returns False, changing nothing, when the rate is zero or not finite (something else set
        it so, a warmup or another scheduler): a factor cannot move it and dividing by it must
        not crash a training loop. The first time, a warning says so.
        """
        lr = reference_lr(optimizer)
        if not (math.isfinite(lr) and lr > 0):
            if not self._warned_bad_lr:
                logger.warning("qlr: learning rate is %r, left as it is; qlr only scales it", lr)
                self._warned_bad_lr = True
            return False
        ratio = self.clamp(lr * factor) / lr
        if self.max_lr_growth is not None and ratio > 1:
            # lr_drift's record of every factor applied says how far the rate is from its start.
            headroom = math.log10(self.max_lr_growth) - self.tracker.lr_change_decades
            ratio = max(1.0, min(ratio, 10.0**headroom))
        scale_lr(optimizer, ratio)
        self.tracker.record_lr_change(ratio)
        return True

    # ------------------------------------------------------------------ persistence
    def state_dict(self) -> dict[str, Any]:
        """What the controller knows of the run: bounds, counters, batch size, held cuts, and
        the feature tracker's state. Plain values and tensors (``torch.load(weights_only=True)``).

        A step still queued is read and judged first; a cut it calls for is kept in the state
        and returned by the next `record_step`, as it would have been without saving.
        """
        self.flush()
        return {
            "min_lr": self.min_lr,
            "max_lr": self.max_lr,
            "ceiling": self.ceiling,
            "batch_size": self.batch_size,
            "examples": self.examples,
            "total_steps": self.total_steps,
            "blocks": self.blocks,
            "held_cuts": [kind.value for kind in self.held_cuts],
            "tracker": self.tracker.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` saved.

        A state without a budget (``total_steps`` None) keeps the budget given to the
        constructor. The batch size is restored only by a controller that sets it (one built
        with a starting batch size).
        """
        self.min_lr = float(state["min_lr"])
        self.max_lr = float(state["max_lr"])
        ceiling = state.get("ceiling")  # absent from states saved before the rollback guard
        self.ceiling = None if ceiling is None else float(ceiling)
        if state["total_steps"] is not None:
            self.total_steps = int(state["total_steps"])
        self.tracker.load_state_dict(state["tracker"])
        self.held_cuts = [CutKind(kind) for kind in state["held_cuts"]]
        self.blocks = int(state["blocks"])
        if state["batch_size"] is not None and self.batch_size is not None:
            self.batch_size = int(state["batch_size"])
            self.examples = int(state["examples"])


def check_total_steps(total_steps: object) -> int | None:
    """`total_steps` as an int: None, or a positive integer (a budget of optimizer steps)."""
    if total_steps is None:
        return None
    if isinstance(total_steps, (int, np.integer)) and not isinstance(total_steps, bool):
        if total_steps >= 1:
            return int(total_steps)
    raise ValueError(f"total_steps must be a positive integer or None, got {total_steps!r}")


def _check_batch(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
