"""`QLRScheduler`: a learned learning-rate controller in an ordinary PyTorch training loop."""

from __future__ import annotations

import logging
import math
import os
from typing import Any

import numpy as np
import torch

from qlr.control import (
    MAX_BATCH_GROWTH,
    MAX_LR,
    MIN_LR,
    CutKind,
    LRController,
    reference_lr,
)
from qlr.distributed import default_group
from qlr.policy import Policy, load_policy
from qlr.rollback import Snapshot

logger = logging.getLogger(__name__)

KEEP_WITHIN = 2.0
"""A block is kept as the rollback snapshot only if its mean loss is within this multiple of the
lowest block mean so far."""
DIVERGED_AT = 100.0
"""A block whose mean loss is above this multiple of the lowest block mean so far, and above the
first block's, has diverged: the scheduler rolls back, as it does for a non-finite step."""

_CONTROLLER_FIELDS = (
    "min_lr",
    "max_lr",
    "batch_size",
    "examples",
    "total_steps",
    "blocks",
    "held_cuts",
    "tracker",
)
"""The controller's fields, which a flat state dict (see `_nest_flat_state`) keeps beside the
scheduler's own."""


class QLRScheduler(torch.optim.lr_scheduler.ReduceLROnPlateau):
    """Adjusts the learning rate of an optimizer with a trained Q-network policy.

    Every optimizer step, the scheduler reads the loss and the gradients; every `k` steps (the
    decision interval stored in the policy file) it asks the policy whether to lower, hold or raise
    the learning rate, and multiplies every param group's rate by the chosen factor, keeping the
    groups' ratios. The first group's rate is kept within ``[min_lr, max_lr]``.

    Rules worth knowing:

    * Construction never changes the optimizer's learning rate; the policy starts from yours.
    * The learning rate lives in the optimizer. ``load_state_dict`` restores the scheduler's
      memory (features, counters) but leaves the optimizer's rate as it is: restore the optimizer's
      own state dict as well, as with any torch scheduler, and the run continues without a jump.
    * Between decisions ``step(loss)`` does not stall the device: pass the loss as a tensor
      (no ``.item()``), and the step's loss and gradient statistics stay on the device until
      the next ``step`` reads them, usually computed by then (on CUDA through a non-blocking
      copy into pinned memory). At worst it waits for the previous step's work, never for the
      current step's, which stays queued. A decision reads its own step at once: one full wait
      per decision.
    * A NaN or infinite loss or gradient never raises: the rate is multiplied by
      ``nonfinite_cut`` (0.1 by default), a warning is logged once, and nothing non-finite
      reaches the policy.
    * If the policy was trained with a spike guard (its file says so), a step whose loss exceeds
      the guard's multiple of the previous block's mean loss cuts the rate, as in training (see
      `qlr.LRController`).
    * Both guards act one step late, since a step is read at the next one: the cut for step t
      reaches the rate after step t + 1 (the optimizer takes one more step at the old rate),
      except on the last step of a decision block, read at once. Training has the same timing.
    * A tensor learning rate (``lr=torch.tensor(...)``, as for a compiled or capturable
      optimizer) is scaled in place by decisions, guards and bounds, so a ``torch.compile``d
      step sees each new rate without recompiling.
    * With an AMP ``GradScaler`` passed as ``scaler``, a step the scaler skipped (its scale fell)
      is not counted. Call ``scheduler.step(loss)`` after ``scaler.update()``. Telling a skipped
      step means reading the scale, one wait on every step (the scaler's own ``step`` waits
      too, unless the optimizer is fused).
    * No total number of steps is needed. When you know it, pass ``total_steps`` (optimizer
      steps, counting one per ``scheduler.step``): a policy trained to read ``progress`` then
      knows how far the run is; one that was not ignores it. A run may go on past
      ``total_steps``: progress stays at 1 and nothing else changes.
    * A policy trained with batch actions (``policy.batch_factors``) also sets the batch size:
      pass the loop's starting ``batch_size``, and read ``scheduler.batch_size`` for the next
      batch, for instance through `qlr.DynamicBatchSampler`. Decisions are then paced in
      examples: the n-th comes at the first step by which ``n * k * start`` examples have been
      spent (see `qlr.LRController`). A rate-only policy never changes the batch size.

    Args:
        optimizer: any ``torch.optim`` optimizer.
        policy: ``"default"`` (shipped with qlr), a path to a policy file, or a loaded `Policy`.
        min_lr: lower bound for the first param group's learning rate.
        max_lr: upper bound for the first param group's learning rate (default: the bound the
            policy was trained with, recorded in its file, else 10).
        max_lr_growth: the rate is never raised above this multiple of the rate it started
            from (default: the policy's own relative bound, if it was trained with one).
        nonfinite_cut: factor applied to the rate after a non-finite loss or gradient.
        scaler: the ``torch.amp.GradScaler`` of a mixed-precision loop, if any.
        writer: a TensorBoard ``SummaryWriter``; logs the rate, action and q-values per decision.
        batch_size: the loop's starting batch size; required by a policy with batch actions.
        max_batch_size: the batch size is never set above this (default: the growth bound the
            policy was trained with, times `batch_size`).
        min_batch_size: the batch size is never set below this.
        total_steps: the run's budget in optimizer steps, when known (a positive integer).
        rollback: keep the last good state and go back to it when a step overflows or diverges
            (see "Rollback" below); False turns it off, and nothing of it runs.
        snapshot_every: take the rollback snapshot at every this many clean decisions (1:
            every decision); a larger value makes it cheaper on a large model.
        snapshot_device: where the snapshot lives: None for the parameters' own device, or
            ``"cpu"`` for host memory (no accelerator memory, slower copies).
        process_group: the `torch.distributed` process group whose ranks decide together
            (default: the default group, when torch.distributed is initialized with more than
            one rank). Every step's statistics are summed over it, so every rank makes the same
            decision at every step; see "Distributed training" below.

    Distributed training: under DDP, ZeRO-style optimizers and FSDP2 (``fully_shard`` on the
    root module, every parameter a DTensor), call ``scheduler.step(loss)`` on every rank with
    that rank's loss. Each step's loss and inner products are summed over the group with one
    small all-reduce, waited for when the step is read (a step later, at once on a decision's
    step), so every rank reads the mean loss and the whole model's statistics and makes the same
    decision. Under FSDP2 each rank reads its own shards, and the copy of the parameters the
    update features keep is its shards only.

    Rollback: the guards see a step one step late, so by the time a non-finite loss or a real
    divergence is read, the parameters may already be infinite. With ``rollback=True`` (the
    default) the scheduler keeps a copy of the parameters and the optimizer's state: the state
    at construction, then the state each decision leaves, once the block after it was clean (no
    guard cut it, its mean loss within `KEEP_WITHIN` of the lowest so far); on a non-finite
    loss or
    gradient, a spike the guard cuts that takes the loss above where the run began, or a block
    whose mean loss rose past `DIVERGED_AT` times the lowest so far and above the first block's,
    it restores that copy (bit for bit, in place) before
    cutting the rate, and remembers the rate that failed: the rate then stays below half of it,
    a ceiling that relaxes by 5 % a decision. ``scheduler.rollbacks`` counts the restores
    (``qlr/rollback`` in TensorBoard). Memory: two copies of the parameters and of the
    optimizer's state, the confirmed one and the candidate (for Adam, six times the
    parameters; under sharded training, a rank's shards); time: one copy of both per snapshot
    (``snapshot_every``, ``snapshot_device="cpu"`` make it cheaper). The policy does not see
    the ceiling.

    As a torch scheduler: a `torch.optim.lr_scheduler.ReduceLROnPlateau`, stepped as that one
    is, with a metric: here the loss of the step. PyTorch Lightning drives it from
    ``configure_optimizers`` with ``{"scheduler": scheduler, "interval": "step", "monitor":
    "train_loss"}`` (the training loss logged on every step). ``base_lrs`` are the rates it
    started from, ``last_epoch`` counts the steps taken, and ``get_lr`` and ``get_last_lr``
    give the current rates.

    Example:
        >>> model = torch.nn.Linear(10, 1)
        >>> optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
        >>> scheduler = QLRScheduler(optimizer)
        >>> for x, y in loader:
        ...     optimizer.zero_grad()
        ...     loss = torch.nn.functional.mse_loss(model(x), y)
        ...     loss.backward()
        ...     optimizer.step()
        ...     scheduler.step(loss)
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        policy: str | os.PathLike | Policy = "default",
        min_lr: float = MIN_LR,
        max_lr: float | None = None,
        max_lr_growth: float | None = None,
        nonfinite_cut: float = 0.1,
        scaler: Any | None = None,
        writer: Any | None = None,
        batch_size: int | None = None,
        max_batch_size: int | None = None,
        min_batch_size: int = 1,
        total_steps: int | None = None,
        rollback: bool = True,
        snapshot_every: int = 1,
        snapshot_device: str | torch.device | None = None,
        process_group: Any | None = None,
    ) -> None:
        # The base classes' constructors are not called: LRScheduler's steps the scheduler once
        # (which needs a loss here) and ReduceLROnPlateau's takes options of its own. What
        # torch's scheduler API reads (base_lrs, last_epoch, get_last_lr) is set up here.
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"{type(optimizer).__name__} is not a torch.optim.Optimizer")
        lr = reference_lr(optimizer)
        if not math.isfinite(lr) or lr <= 0:
            raise ValueError(
                f"the optimizer's learning rate is {lr}; QLRScheduler scales it by factors, "
                "so it must start positive and finite"
            )
        self.optimizer = optimizer
        self.policy = load_policy(policy)
        if self.policy.batch_factors is not None and batch_size is None:
            raise ValueError(
                f"{self.policy!r} also sets the batch size: pass batch_size=<the loop's starting "
                "batch size> and feed the loop from scheduler.batch_size (qlr.DynamicBatchSampler)"
            )
        growth = self.policy.metadata.max_batch_growth or MAX_BATCH_GROWTH
        if batch_size is not None and max_batch_size is None:
            max_batch_size = max(int(batch_size), int(growth * batch_size))
        self.controller = LRController(
            action_factors=self.policy.action_factors,
            decision_interval=self.policy.decision_interval,
            min_lr=min_lr,
            max_lr=max_lr if max_lr is not None else (self.policy.metadata.max_lr or MAX_LR),
            max_lr_growth=max_lr_growth or self.policy.metadata.max_lr_growth,
            nonfinite_cut=nonfinite_cut,
            features=self.policy.metadata.feature_names,
            spike_factor=self.policy.metadata.spike_factor,
            spike_cut=self.policy.metadata.spike_cut,
            batch_factors=self.policy.batch_factors,
            batch_size=batch_size,
            max_batch_size=max_batch_size,
            min_batch_size=min_batch_size,
            total_steps=total_steps,
            group=process_group if process_group is not None else default_group(),
        )
        for group in optimizer.param_groups:  # as torch's schedulers record where they began
            start = group["lr"]
            group.setdefault("initial_lr", start.clone() if torch.is_tensor(start) else start)
        self.base_lrs = [group["initial_lr"] for group in optimizer.param_groups]
        self.scaler = scaler
        self.writer = writer
        self.steps = 0  # optimizer steps counted (skipped AMP steps excluded)
        self.decisions = 0
        self.spike_cuts = 0  # steps on which the spike guard cut the rate
        self.last_action: int | None = None
        self.last_observation: np.ndarray | None = None  # what the policy saw at its last decision
        self._last_scale = self._scaler_scale()
        self._warned_nonfinite = False
        if int(snapshot_every) != snapshot_every or snapshot_every < 1:
            raise ValueError(f"snapshot_every must be a positive integer, got {snapshot_every}")
        self.snapshot_every = int(snapshot_every)
        self.rollbacks = 0  # times the last good state was restored
        self._snapshot: Snapshot | None = None
        if rollback:
            self._snapshot = Snapshot(optimizer, snapshot_device)
            self._snapshot.save()  # the starting state is good by definition
            self._snapshot.confirm()
        self._clean_decisions = 0  # decisions since the last snapshot, none of them cut
        self._best_block_loss = math.inf  # the lowest mean loss of a block so far
        self._start_loss = math.nan  # the first block's mean loss: where the run began
        self._last_lr = self._group_lrs()

    # ------------------------------------------------------------------ the loop
    def step(self, loss: float | torch.Tensor | None = None) -> None:  # type: ignore[override]
        """Record one optimizer step with its loss; decide when the interval is complete.

        Args:
            loss: the loss of the step just taken, a float or a 0-dim tensor (read only with
                the step's other statistics, a step later or at the decision).
        """
        if loss is None:
            raise TypeError(
                "QLRScheduler.step() needs the loss of the step: call scheduler.step(loss) "
                "after optimizer.step() (frameworks that call step() without arguments can use "
                "the callbacks in qlr.integrations)"
            )
        loss = _check_loss(loss)  # a float, or a 0-dim tensor left where it is
        if self._scaler_skipped_step():
            return
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        # The gradients as a generator: the steps that read none do not collect them.
        cut = self.controller.record_step(loss, (p.grad for p in params), params)
        self.steps += 1
        cuts = self.controller.last_cuts
        if cuts:
            if self._snapshot is not None and self._diverging(cuts):
                self._roll_back(" and ".join(dict.fromkeys(kind.value for kind in cuts)))
            elif self._snapshot is not None:
                self._clean_decisions = -1  # a block a guard cut is not a good state
            self.controller.scale(self.optimizer, cut)
            self.spike_cuts += cuts.count(CutKind.SPIKE)
            if self.writer is not None:
                for kind in cuts:
                    factor = self.controller.cut_factor(kind)
                    self.writer.add_scalar(f"qlr/{kind.value}_cut", factor, self.steps)
        if CutKind.NONFINITE in cuts and not self._warned_nonfinite:
            logger.warning(
                "qlr: non-finite loss or gradient (seen at step %d); learning rate cut by %g "
                "(further occurrences are not logged)",
                self.steps,
                self.controller.nonfinite_cut,
            )
            self._warned_nonfinite = True
        if self.controller.decision_due:
            if self._snapshot is not None and not cuts and self._clean_decisions >= 0:
                self.controller.relax_ceiling()  # one clean block further from a failure
            self._decide()
            if self._snapshot is not None:
                self._after_decision(cuts)
        self._last_lr = self._group_lrs()

    def _roll_back(self, reason: str) -> None:
        """Go back to the last good state and keep the rate below the one that failed."""
        assert self._snapshot is not None
        self._clean_decisions = -1  # this block is not clean: no snapshot at its decision
        self.controller.remember_failure(reference_lr(self.optimizer))
        if not self._snapshot.saved:  # nothing good kept since a restored state dict
            return
        self._snapshot.restore()
        # The step queued now was taken from the failed state: read it into this block's
        # statistics (its non-finite loss shows there) without judging it again.
        self.controller.tracker.restart_samples()
        self.rollbacks += 1
        if self.rollbacks == 1:
            logger.warning(
                "qlr: %s at step %d; restored the parameters and optimizer state of the last "
                "good decision and cut the rate (further rollbacks are not logged)",
                reason,
                self.steps,
            )
        if self.writer is not None:
            self.writer.add_scalar("qlr/rollback", self.rollbacks, self.steps)

    def _start(self) -> float:
        """Where the run began: the first block's mean loss (before it closes, the first loss)."""
        start = self._start_loss
        return start if math.isfinite(start) else self.controller.tracker.reference_loss

    def _diverging(self, cuts: tuple[CutKind, ...]) -> bool:
        """Whether the guards' cuts call for a rollback, not only a cut: a non-finite step, or a
        spike that took the loss above where the run began. A spike below it (minibatch noise
        on a loss near its floor) is only cut, as the policy was trained with."""
        if CutKind.NONFINITE in cuts:
            return True
        loss, start = self.controller.tracker.last_loss, self._start()
        return CutKind.SPIKE in cuts and (not math.isfinite(start) or loss > start)

    def _after_decision(self, cuts: tuple[CutKind, ...]) -> None:
        """At a decision: roll back a block that diverged; keep a good one as the snapshot.

        A block is good when no guard cut it and its mean loss is within `KEEP_WITHIN` of the
        lowest block mean so far; one whose mean rose past `DIVERGED_AT` times that lowest mean
        has diverged, even if slowly enough that no single step tripped the spike guard.
        """
        assert self._snapshot is not None
        mean = self.controller.tracker.reference_loss  # this block's mean loss
        if not math.isfinite(self._start_loss) and math.isfinite(mean):
            self._start_loss = mean
        best = self._best_block_loss
        if best > 0 and math.isfinite(mean) and mean > max(DIVERGED_AT * best, self._start()):
            self._roll_back("a divergence")
            self.controller.scale(self.optimizer, self.controller.nonfinite_cut)
            self._clean_decisions = 0
            return
        if cuts or self._clean_decisions < 0:
            self._snapshot.discard()  # the block after the candidate was cut: not good
            self._clean_decisions = 0
            return
        if math.isfinite(mean):
            self._best_block_loss = best = min(best, mean)
        if best > 0 and not mean <= KEEP_WITHIN * best:
            self._snapshot.discard()  # not bad enough to undo, not good enough to go back to
            return
        self._snapshot.confirm()  # this block started from the candidate and stayed good
        self._clean_decisions += 1
        if self._clean_decisions >= self.snapshot_every or not self._snapshot.saved:
            self._snapshot.save()  # the state this decision leaves: judged by the next block
            self._clean_decisions = 0

    @property
    def rolls_back(self) -> bool:
        """Whether the rollback guard is on."""
        return self._snapshot is not None

    @property
    def batch_size(self) -> int | None:
        """The batch size the loop should use next (None when it was never given)."""
        return self.controller.batch_size

    def _decide(self) -> None:
        obs = self.controller.observe(reference_lr(self.optimizer))
        action, q_values = self.policy.decide(obs)
        self.last_observation = obs
        self.controller.apply_action(self.optimizer, action)
        self.last_action = action
        self.decisions += 1
        if self.writer is not None:
            self.writer.add_scalar("qlr/lr", reference_lr(self.optimizer), self.steps)
            if self.batch_size is not None:
                self.writer.add_scalar("qlr/batch_size", self.batch_size, self.steps)
            self.writer.add_scalar("qlr/action", action, self.steps)
            for i, q in enumerate(q_values):
                self.writer.add_scalar(f"qlr/q_value/{i}", float(q), self.steps)

    def _scaler_scale(self) -> float | None:
        if self.scaler is None or not self.scaler.is_enabled():
            return None
        return float(self.scaler.get_scale())

    def _scaler_skipped_step(self) -> bool:
        """A GradScaler lowers its scale exactly when it skipped the optimizer step."""
        scale = self._scaler_scale()
        skipped = scale is not None and self._last_scale is not None and scale < self._last_scale
        self._last_scale = scale
        return skipped

    def _group_lrs(self) -> list[float | torch.Tensor]:
        # A tensor rate is kept as a copy and read only by get_last_lr: reading it here would
        # wait for the device on every step.
        return [
            group["lr"].detach().clone() if isinstance(group["lr"], torch.Tensor) else group["lr"]
            for group in self.optimizer.param_groups
        ]

    # ------------------------------------------------------------------ torch scheduler API
    @property
    def last_epoch(self) -> int:  # type: ignore[override]
        """Steps taken, as torch's schedulers count their steps."""
        return self.steps

    def get_last_lr(self) -> list[float]:  # type: ignore[override]
        """The learning rate of every param group after the last step."""
        return [float(lr) for lr in self._last_lr]

    def get_lr(self) -> list[float]:  # type: ignore[override]
        """The learning rate of every param group now: qlr sets it as it goes."""
        return [float(group["lr"]) for group in self.optimizer.param_groups]

    def state_dict(self) -> dict[str, Any]:
        """The scheduler's memory, without the optimizer or the policy weights.

        The scheduler's own counters, and under ``"controller"`` the controller's state (see
        `qlr.LRController.state_dict`): plain values and tensors, so a checkpoint holding it
        loads with ``torch.load(..., weights_only=True)``. A step still queued is read and
        judged first; a cut it calls for is kept in the state and applied by the next `step`,
        as it would have been without saving.
        """
        return {
            "steps": self.steps,
            "decisions": self.decisions,
            "spike_cuts": self.spike_cuts,
            "last_action": self.last_action,
            "last_scale": self._last_scale,
            "warned_nonfinite": self._warned_nonfinite,
            "rollbacks": self.rollbacks,
            "best_block_loss": self._best_block_loss,
            "start_loss": self._start_loss,
            "controller": self.controller.state_dict(),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the memory saved by `state_dict`. The optimizer's learning rate is untouched.

        A state dict in the earlier flat format (the controller's fields beside the
        scheduler's) loads as well.
        """
        if "controller" not in state_dict:
            state_dict = _nest_flat_state(state_dict, self.controller)
        self.steps = int(state_dict["steps"])
        self.decisions = int(state_dict["decisions"])
        self.spike_cuts = int(state_dict["spike_cuts"])
        self.last_action = state_dict["last_action"]
        self._last_scale = state_dict["last_scale"]
        self._warned_nonfinite = bool(state_dict["warned_nonfinite"])
        self.rollbacks = int(state_dict.get("rollbacks", 0))  # absent before the rollback guard
        self._best_block_loss = float(state_dict.get("best_block_loss", math.inf))
        self._start_loss = float(state_dict.get("start_loss", math.nan))
        self.controller.load_state_dict(state_dict["controller"])
        if self._snapshot is not None:  # the copies are not saved: kept again when next clean
            self._snapshot.saved = False
            self._snapshot.discard()
        self._last_lr = self._group_lrs()

    def __repr__(self) -> str:
        batch = f", batch_size={self.batch_size}" if self.batch_size is not None else ""
        return (
            f"QLRScheduler(lr={reference_lr(self.optimizer):.3g}{batch}, steps={self.steps}, "
            f"policy={self.policy!r})"
        )


def _nest_flat_state(flat: dict[str, Any], controller: LRController) -> dict[str, Any]:
    """A state dict of the flat format, the controller's fields beside the scheduler's, in the
    current one, with the controller's fields under ``"controller"``.

    Fields that states saved before a feature existed lack get the value that is exact for a
    run that never had it.
    """
    state = {key: value for key, value in flat.items() if key not in _CONTROLLER_FIELDS}
    state.setdefault("spike_cuts", 0)  # saved before the spike guard counted its cuts
    inner = {key: flat[key] for key in _CONTROLLER_FIELDS if key in flat}
    inner.setdefault("total_steps", None)  # saved before budgets: the constructor's applies
    inner.setdefault("held_cuts", [])  # saved before the guards judged a step one step late
    inner.setdefault("batch_size", None)  # saved before batch control
    # Saved before decisions were paced in examples: one block per decision, and the examples
    # those blocks spent at the starting batch size.
    inner.setdefault("blocks", int(state["decisions"]))
    if "examples" not in inner:
        start = controller.start_batch_size or int(inner["batch_size"] or 0)
        inner["examples"] = inner["blocks"] * controller.decision_interval * start
    state["controller"] = inner
    return state


def _check_loss(loss: float | torch.Tensor) -> float | torch.Tensor:
    """The loss as a float, or as a detached tensor (its value is not read here)."""
    if isinstance(loss, torch.Tensor):
        if loss.numel() != 1:
            raise ValueError(
                f"loss must be a scalar, got a tensor of shape {tuple(loss.shape)}; "
                "reduce it (e.g. loss.mean()) before passing it"
            )
        return loss.detach()
    if isinstance(loss, bool) or not isinstance(loss, (int, float, np.floating, np.integer)):
        raise TypeError(f"loss must be a float or a 0-dim tensor, got {type(loss).__name__}")
    return float(loss)
