"""`FeatureTracker`: the observation of a learning-rate controller, computed from a training run.

`FeatureTracker` turns the stream of (loss, gradients) pairs of a training run into a short,
bounded observation vector. The environment that trains a controller and the scheduler that
deploys it both use this class, so a policy sees exactly the same features in both places.
What each feature means, and what each feature version reads, is defined in `qlr.feature_set`;
every name defined there can be imported from here as well.

Cost: gradients are read on two steps per decision, the block's last two (|g|^2 on both, and
g . g_prev between them); every other step only records the loss. The only parameter-sized memory
is the one gradient kept between those two steps (copied or referenced by device, see
`qlr._gradient_memory`; ``copy_grads`` overrides the choice).

A policy that reads ``grad_noise`` needs the disagreement of every pair of successive gradients in
the block, so for it the tracker reads (and keeps) the gradients on every step (``dense=True``):
one more dot product and copy per step.

A policy that reads only the loss and update features (the version-4 default) keeps no gradient:
its one parameter-sized buffer is the update chain's. A non-finite gradient is seen on the steps
that read gradients; on the others it shows up one step later, in the loss of the parameters it
has corrupted.

Distributed training: with ``group`` set, each step's reductions and loss are summed over the
process group (one small all-reduce per step, waited for when the step is read), so every rank
computes the same features and its controller the same decisions (`qlr.distributed`). Under
sharded training (FSDP2) each rank reads its own shards of the parameters and gradients.

Host reads. `FeatureTracker.queue` leaves a step's loss (a float, or a 0-dim tensor on its
device) and its reductions where they are (see `qlr._readback`). They are read by
`FeatureTracker.finish`: `LRController` calls it on the next step, when the device has usually
computed them, or at once on the step that completes a block, since the decision needs it. So
between decisions a training loop never waits for the step it has just queued, only (at worst)
for the one before.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from qlr._gradient_memory import GradientMemory
from qlr._readback import Readback, Terms, flat
from qlr.distributed import GroupSum, is_sharded
from qlr.feature_set import (
    FEATURE_NAMES,
    FEATURE_VERSION,
    FEATURES_BY_VERSION,
    FEATURES_V1,
    FEATURES_V2,
    FEATURES_V3,
    FEATURES_V4,
    FEATURES_V5,
    GRADIENT_FEATURES,
    OBS_DIM,
    OBS_HIGH,
    OBS_LOW,
    UPDATE_FEATURES,
    relative_change,
    spread,
)
from qlr.update_chain import ChainPhase, UpdateChain, UpdateSamples

__all__ = [
    "FEATURES_BY_VERSION",
    "FEATURES_V1",
    "FEATURES_V2",
    "FEATURES_V3",
    "FEATURES_V4",
    "FEATURES_V5",
    "FEATURE_NAMES",
    "FEATURE_VERSION",
    "GRADIENT_FEATURES",
    "OBS_DIM",
    "OBS_HIGH",
    "OBS_LOW",
    "UPDATE_FEATURES",
    "FeatureTracker",
    "StepStats",
    "UpdateChain",
    "relative_change",
    "spread",
]

_DRIFT_DECADES = 3.0  # lr_drift reaches tanh(1) = 0.76 after three decades of movement
_GROWTH_DOUBLINGS = 3.0  # batch_growth reaches tanh(1) = 0.76 at 8 times the starting batch


def _finite(x: float, default: float = 0.0) -> float:
    return x if math.isfinite(x) else default


@dataclass
class StepStats:
    """What the tracker extracted from one optimizer step."""

    loss: float
    grad_norm_sq: float
    grad_dot_prev: float  # g_t . g_{t-1}; nan on the first step
    prev_grad_norm_sq: float  # |g_{t-1}|^2; nan on the first step
    finite: bool


@dataclass(slots=True)
class _PendingStep:
    """A step whose reductions are queued on the device (see `FeatureTracker.queue`)."""

    values: Readback  # every reduction's per-parameter terms, then the loss
    n_grad: int  # reductions of the gradient: |g|^2 and g . g_prev, when measured
    measure: bool
    align: bool
    keep: bool
    phase: ChainPhase  # the update chain's phase
    chained: bool


class FeatureTracker:
    """Computes the observation of a learning-rate controller from a training run.

    Call `update(loss, grads)` after every optimizer step and `observation()` whenever the
    controller decides; `observation()` closes the current block of steps. `update` reads the
    step's values at once; `queue` and `finish` split it, so that a loop on an accelerator can
    read a step's values one step later (see the module docstring).

    Args:
        interval: steps per decision (k); the gradient alignment is measured between the last
            two steps before each decision.
        history: number of past decisions kept for the loss rank feature (M in Hansen's paper).
        noise_window: number of past steps over which the loss noise is measured.
        dense: read the gradients on every step, so that ``grad_noise`` averages every pair of
            successive gradients in the block rather than only the last pair.
        features: the names of the features that will be read (default: all). Gradients are
            kept between steps only for the gradient features, and the parameters are copied
            only for the update features, so a selection without either costs less.
        copy_grads: how a gradient is kept between steps: True copies it into a buffer the
            tracker owns, False keeps a reference (copying from the first time the loop is
            seen to reuse gradients in place), None chooses by device: copies on the CPU,
            references on accelerators (see the module docstring).
        foreach: take the reductions and move the update chain's buffer with multi-tensor
            kernels; None chooses by device, as torch's optimizers do (see `qlr._readback`).
            Both paths give the same features to float rounding.
        group: a `torch.distributed` process group whose ranks' statistics are summed, so
            that every rank computes the same features (see `qlr.distributed`); None for one
            process.

    Example:
        >>> tracker = FeatureTracker(interval=5)
        >>> for _ in range(5):
        ...     loss = model_loss(); loss.backward(); optimizer.step()
        ...     tracker.update(loss.item(), [p.grad for p in model.parameters()])
        ...     optimizer.zero_grad()
        >>> obs = tracker.observation()  # np.float32 vector of length OBS_DIM in [-1, 1]
    """

    version = FEATURE_VERSION
    names = FEATURE_NAMES

    def __init__(
        self,
        interval: int = 1,
        history: int = 5,
        noise_window: int = 10,
        dense: bool = False,
        features: Iterable[str] | None = None,
        copy_grads: bool | None = None,
        foreach: bool | None = None,
        group: Any | None = None,
    ) -> None:
        if interval < 1:
            raise ValueError(f"interval must be >= 1, got {interval}")
        if history < 1:
            raise ValueError(f"history must be >= 1, got {history}")
        if noise_window < 2:
            raise ValueError(f"noise_window must be >= 2, got {noise_window}")
        self.interval = int(interval)
        self.history = history
        self.noise_window = noise_window
        self.dense = bool(dense)
        selected = set(FEATURE_NAMES if features is None else features)
        unknown = sorted(selected - set(FEATURE_NAMES))
        if unknown:
            raise ValueError(f"unknown features {unknown}; valid: {list(FEATURE_NAMES)}")
        self.reads_gradients = bool(selected & GRADIENT_FEATURES)
        self.reads_updates = bool(selected & UPDATE_FEATURES)
        self._group = GroupSum(group) if group is not None else None
        self._replicated = True  # under a group: whether the parameters are held whole
        self._grads = GradientMemory(copy=copy_grads, foreach=foreach)
        self._chain = UpdateChain(foreach=foreach)
        self._updates = UpdateSamples()
        self.reset()

    def reset(self) -> None:
        """Forget the run: the next update starts a new one."""
        self._grads.reset()
        self._prev_grad_norm_sq = math.nan
        self._last_loss = math.nan
        self._best_loss = math.inf
        self._decision_losses: deque[float] = deque(maxlen=self.history)
        self._step_changes: deque[float] = deque(maxlen=self.noise_window)
        self._block_start_loss = math.nan
        self._block_start_grad_norm = math.nan
        self._block: list[StepStats] = []
        self._decision_grad_norm: float | None = None
        self._log10_lr_change = 0.0  # sum of log10 of every factor the rate was scaled by
        self._log2_batch_change = 0.0  # likewise for the batch size
        self.reference_loss = math.nan  # mean loss of the last closed block (spike guard)
        self.steps = 0
        self._chain.restart()
        self._pending: _PendingStep | None = None  # queued, not yet read
        self._updates.reset()

    def record_lr_change(self, factor: float) -> None:
        """Note that the learning rate was just multiplied by `factor` (for ``lr_drift``)."""
        if factor > 0 and math.isfinite(factor):
            self._log10_lr_change += math.log10(factor)

    def record_batch_change(self, factor: float) -> None:
        """Note that the batch size was just multiplied by `factor` (for ``batch_growth``)."""
        if factor > 0 and math.isfinite(factor):
            self._log2_batch_change += math.log2(factor)

    @property
    def lr_change_decades(self) -> float:
        """log10(rate / starting rate), from every factor recorded since the run started."""
        return self._log10_lr_change

    @property
    def last_loss(self) -> float:
        """The latest finite loss recorded (nan before the first; a queued step not counted)."""
        return self._last_loss

    @property
    def block_length(self) -> int:
        """Number of steps recorded since the last observation, a queued one included."""
        return len(self._block) + (self._pending is not None)

    @property
    def pending(self) -> bool:
        """Whether a step is queued whose values `finish` has not read yet."""
        return self._pending is not None

    # ------------------------------------------------------------------ per step
    def update(
        self,
        loss: float | torch.Tensor,
        grads: Iterable[torch.Tensor | None],
        params: Iterable[torch.Tensor] | None = None,
    ) -> StepStats:
        """Record one optimizer step: its loss, the gradients it used and, for the update
        features, the parameters it produced (in the same order as the gradients).

        The same as `queue` followed by `finish`: it reads the step's values at once.
        """
        self.queue(loss, grads, params)
        stats = self.finish()
        assert stats is not None
        return stats

    def queue(
        self,
        loss: float | torch.Tensor,
        grads: Iterable[torch.Tensor | None],
        params: Iterable[torch.Tensor] | None = None,
    ) -> None:
        """Queue one optimizer step's reductions on their device; nothing is read yet.

        `loss` is a float or a 0-dim tensor, which stays on its device with the reductions.
        On CUDA they are copied to pinned host memory without blocking; `finish` reads them,
        waiting only if the device has not got there yet. A step still queued is finished
        first: the gradients and parameters of the step before decide what this one computes.
        """
        if self._pending is not None:
            self.finish()
        position = len(self._block)  # steps already in this block
        interval = self.interval
        # Gradients are read only where a feature needs them: the block's last step (alignment
        # with the step before, gradient norm), that step before, and the run's first step (the
        # first block's reference norm). Other steps cost nothing but the loss.
        align = position + 1 >= interval
        keep = position + 2 == interval or interval == 1 or position + 1 > interval
        if self.dense:
            align = keep = True
        measure = self.reads_gradients and (
            align or keep or (position == 0 and not self._decision_losses)
        )
        chained = self.reads_updates and params is not None
        flats: list[torch.Tensor | None] = []
        if measure or chained:  # else the gradients are not even listed
            grads = list(grads)
            if self._group is not None:
                self._replicated = not any(g is not None and is_sharded(g) for g in grads)
            flats = [None if g is None else flat(g) for g in grads]
        groups: list[Terms] = []  # each reduction's per-parameter terms
        if measure:
            groups += self._grads.products(flats, align)
        n_grad = len(groups)  # |g|^2, then g . g_prev when there was a kept gradient
        phase = ChainPhase.COPY
        if chained:
            phase, chain_groups = self._chain.products(flats, list(params))  # type: ignore[arg-type]
            groups += chain_groups
        self._grads.forget()
        if measure and keep:
            # Kept now, since the loop zeroes the gradients before the next call; `finish`
            # drops them again if the step turns out not to be finite.
            self._grads.keep(flats)
        self._pending = _PendingStep(
            values=Readback(groups, loss, self._group, self._replicated),
            n_grad=n_grad,
            measure=measure,
            align=align,
            keep=keep,
            phase=phase,
            chained=chained,
        )
        self.steps += 1

    def restart_samples(self) -> None:
        """Start the next update sample and the next pair of gradients afresh, as a tracker
        restored from a state dict does (the statistics and counters are kept)."""
        self.finish()
        self._chain.restart()
        self._grads.forget()

    @property
    def buffer_numel(self) -> int:
        """Elements the tracker holds between steps: the update chain's copy of the
        parameters (this rank's shards) and a kept gradient."""
        kept = self._grads.kept or []
        return self._chain.numel + sum(0 if g is None else g.numel() for g in kept)

    def finish(self) -> StepStats | None:
        """Read the queued step's values (one host transfer) and fold them into the features.

        Returns what the tracker extracted from the step, or None when no step is queued.
        """
        pending, self._pending = self._pending, None
        if pending is None:
            return None
        values, loss = pending.values.read()
        measure, align, keep = pending.measure, pending.align, pending.keep
        grad_norm_sq, grad_dot_prev = math.nan, math.nan
        if measure:
            grad_norm_sq = values[0] if pending.n_grad else 0.0
            grad_dot_prev = values[1] if pending.n_grad > 1 else math.nan
        chain_values = values[pending.n_grad :]
        finite = (
            math.isfinite(loss)
            and (not measure or math.isfinite(grad_norm_sq))
            and all(math.isfinite(v) for v in chain_values)
        )
        if pending.chained:
            if finite:
                self._updates.record(self._chain.finish(pending.phase, chain_values, loss))
            else:
                self._chain.reset()
        stats = StepStats(
            loss=loss,
            grad_norm_sq=grad_norm_sq,
            grad_dot_prev=grad_dot_prev if align else math.nan,
            prev_grad_norm_sq=self._prev_grad_norm_sq if align else math.nan,
            finite=finite,
        )
        self._prev_grad_norm_sq = math.nan
        if finite:
            if math.isfinite(self._last_loss):
                self._step_changes.append(relative_change(loss, self._last_loss))
            if not math.isfinite(self.reference_loss):
                self.reference_loss = loss  # the run's first loss, until a block closes
            if not math.isfinite(self._block_start_loss):
                self._block_start_loss = loss
                self._block_start_grad_norm = math.sqrt(grad_norm_sq)
            self._best_loss = min(self._best_loss, loss)
            self._last_loss = loss
            if keep and self.reads_gradients:
                self._prev_grad_norm_sq = grad_norm_sq
        else:
            self._grads.forget()  # kept by `queue`; a non-finite gradient is no reference
        self._block.append(stats)
        return stats

    # ------------------------------------------------------------------ per decision
    def observation(self, progress: float | None = None, lr_ceiling: float = 0.0) -> np.ndarray:
        """Features of the steps since the last call, float32 in [-1, 1]; closes the block.

        Args:
            progress: the fraction of the run's budget spent so far, when the budget is known
                (clipped to [0, 1]: a run past its budget reads 1); None when it is not.
            lr_ceiling: the ``lr_ceiling`` feature, which the rollback guard's ceiling sets
                (`qlr.feature_set.lr_ceiling`); 0, no ceiling, for a tracker on its own.
        """
        self.finish()  # a step still queued belongs to this block
        block, self._block = self._block, []
        finite_steps = [s for s in block if s.finite]
        features = dict.fromkeys(FEATURE_NAMES, 0.0)  # in FEATURE_NAMES order
        features["nonfinite"] = 1.0 if len(finite_steps) < len(block) else 0.0
        features["lr_drift"] = math.tanh(self._log10_lr_change / _DRIFT_DECADES)
        features["batch_growth"] = math.tanh(self._log2_batch_change / _GROWTH_DOUBLINGS)
        features["lr_ceiling"] = lr_ceiling
        features.update(self._updates.features())
        if progress is not None and math.isfinite(progress):
            features["progress"] = min(1.0, max(0.0, progress))
            features["budget_known"] = 1.0
        if finite_steps:
            features.update(self._finite_features(finite_steps))
            features["grad_noise"] = _gradient_disagreement(finite_steps)
            self.reference_loss = _mean([s.loss for s in finite_steps])
            self._decision_losses.append(self._last_loss)
            self._decision_grad_norm = math.sqrt(finite_steps[-1].grad_norm_sq)
        self._block_start_loss = math.nan
        self._block_start_grad_norm = math.nan
        # NaN reads 0 and infinities the bounds; done on a list, a few numpy calls fewer per
        # decision than nan_to_num and clip, with the same float32 values.
        bounded = [
            0.0 if math.isnan(v) else min(OBS_HIGH, max(OBS_LOW, v)) for v in features.values()
        ]
        return np.array(bounded, dtype=np.float32)

    def _finite_features(self, steps: list[StepStats]) -> dict[str, float]:
        """The loss and gradient features of a block's finite steps."""
        loss = self._last_loss
        changes = list(self._step_changes)
        # The block's reference point: the previous decision, or the block's first step.
        if self._decision_losses:
            block_change = relative_change(loss, self._decision_losses[-1])
            grad_start = self._decision_grad_norm
        else:
            block_change = relative_change(loss, self._block_start_loss)
            grad_start = self._block_start_grad_norm
        rank = 0.0
        if self._decision_losses:
            if loss < min(self._decision_losses):
                rank = 1.0
            elif loss > max(self._decision_losses):
                rank = -1.0
        recent = changes[-len(steps) :]
        cosines, projections = [], []
        for s in steps:
            if s.prev_grad_norm_sq > 0 and math.isfinite(s.grad_dot_prev):
                projections.append(s.grad_dot_prev / s.prev_grad_norm_sq)
                norms = math.sqrt(s.prev_grad_norm_sq * s.grad_norm_sq)
                if norms > 0:
                    cosines.append(s.grad_dot_prev / norms)
        grad_norm = math.sqrt(steps[-1].grad_norm_sq)
        start_norm = _finite(math.nan if grad_start is None else grad_start, grad_norm)
        return {
            "loss_change_step": spread(changes[-1]) if changes else 0.0,
            "loss_change_block": spread(block_change),
            "loss_above_best": spread(max(0.0, relative_change(loss, self._best_loss))),
            "loss_rank": rank,
            "loss_rise_fraction": sum(c > 0 for c in recent) / len(recent) if recent else 0.0,
            "loss_noise": spread(float(np.std(changes))) if len(changes) >= 2 else 0.0,
            "grad_cosine": _mean(cosines),
            "grad_projection": math.tanh(_mean(projections)),
            "grad_norm_change": spread(relative_change(grad_norm, start_norm)),
        }

    # ------------------------------------------------------------------ persistence
    def state_dict(self) -> dict[str, Any]:
        """The statistics and counters of the feature stream: plain numbers and lists.

        A step still queued is finished first (its values read). No tensor is saved: the update
        chain's copy of the parameters and a kept gradient are left out, and a restored tracker
        starts its next update sample, and its next pair of gradients, afresh (as
        `restart_samples` does).
        """
        self.finish()
        return {
            "version": self.version,
            "interval": self.interval,
            "copy_grads": self._grads.reused_in_place,
            "history": self.history,
            "noise_window": self.noise_window,
            "prev_grad_norm_sq": self._prev_grad_norm_sq,
            "last_loss": self._last_loss,
            "best_loss": self._best_loss,
            "decision_losses": list(self._decision_losses),
            "decision_grad_norm": self._decision_grad_norm,
            "step_changes": list(self._step_changes),
            "log10_lr_change": self._log10_lr_change,
            "log2_batch_change": self._log2_batch_change,
            "dense": self.dense,
            "reference_loss": self.reference_loss,
            "block_start_loss": self._block_start_loss,
            "block_start_grad_norm": self._block_start_grad_norm,
            "block": [vars(s).copy() for s in self._block],
            "steps": self.steps,
            "slopes": list(self._updates.slopes),
            "armijo": list(self._updates.armijo),
            "sizes": list(self._updates.sizes),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        # Older states lack only the fields added since (batch, update chain), whose defaults
        # are exact for a run that never read them.
        if state.get("version") not in range(2, self.version + 1):
            raise ValueError(
                f"feature state has version {state.get('version')!r}, this tracker reads "
                f"versions 2 to {self.version}"
            )
        self.interval = int(state["interval"])
        self.history = int(state["history"])
        self.noise_window = int(state["noise_window"])
        self.reset()
        # The update chain's buffer and a kept gradient are not saved (older states hold them;
        # they are left out): the next sample and the next gradient pair start afresh.
        self._grads.restore(None, bool(state["copy_grads"]))
        self._prev_grad_norm_sq = float(state["prev_grad_norm_sq"])
        self._last_loss = float(state["last_loss"])
        self._best_loss = float(state["best_loss"])
        self._decision_losses.extend(float(x) for x in state["decision_losses"])
        dgn = state["decision_grad_norm"]
        self._decision_grad_norm = None if dgn is None else float(dgn)
        self._step_changes.extend(float(x) for x in state["step_changes"])
        self._log10_lr_change = float(state["log10_lr_change"])
        self._log2_batch_change = float(state.get("log2_batch_change", 0.0))
        self.dense = bool(state.get("dense", self.dense))
        self.reference_loss = float(state["reference_loss"])
        self._block_start_loss = float(state["block_start_loss"])
        self._block_start_grad_norm = float(state["block_start_grad_norm"])
        self._block = [StepStats(**s) for s in state["block"]]
        self.steps = int(state["steps"])
        if "slopes" in state:
            for name in ("slopes", "armijo", "sizes"):
                getattr(self._updates, name).extend(float(x) for x in state[name])


def _gradient_disagreement(steps: list[StepStats]) -> float:
    """Mean over successive gradient pairs of |g - g'|^2 / (2 (|g|^2 + |g'|^2)), in [0, 1].

    Two minibatch gradients taken at nearly the same point differ by their noise: the value is
    about half the fraction of |g|^2 that is noise (0.5 for pure noise, 0 for none), and above
    0.5 only when successive gradients point against each other (overshooting).
    """
    values = []
    for s in steps:
        total = s.grad_norm_sq + s.prev_grad_norm_sq
        if total > 0 and math.isfinite(s.grad_dot_prev) and math.isfinite(total):
            values.append(0.5 - s.grad_dot_prev / total)
    return _mean(values)


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0
