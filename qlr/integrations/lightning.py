"""Lightning integration: `QLRCallback` drives a `QLRScheduler` from inside ``Trainer.fit``.

Importing this module needs no Lightning; the class is built on first use, on top of
``lightning.pytorch`` (or, where only the older package is installed, ``pytorch_lightning``)::

    from qlr.integrations.lightning import QLRCallback  # ImportError naming lightning if absent

`callback_class` builds it for a named package, for a setup that has both installed and trains
with ``pytorch_lightning``.

What counts as a step: the callback counts one scheduler step per real optimizer step of the
LightningModule's first optimizer, detected with ``on_before_optimizer_step``. The scheduler is
stepped at the end of that batch (``on_train_batch_end``): the parameters have been updated, and
the gradients that produced the update, already clipped and unscaled, are still in ``.grad``
because Lightning zeroes them only before the next backward pass.

* Gradient accumulation: micro-batches only collect their losses; the step's loss is their mean
  (Lightning divides the returned loss by ``accumulate_grad_batches``; that is undone first).
* Manual optimization: ``training_step`` must return the loss (a tensor or ``{"loss": ...}``).
  A batch in which the first optimizer stepped counts once, however often it stepped. Call
  ``zero_grad()`` before ``manual_backward``, as Lightning's examples do, so that the gradients
  are still there at the end of the batch; or drive a `QLRScheduler` yourself.
* Mixed precision: the precision plugin's ``GradScaler`` is passed on, so overflow steps the
  scaler skipped are not counted.
* Several processes (DDP): the loss is averaged over processes before the scheduler sees it, so
  every process takes the same decision and the replicas keep the same learning rate.
"""

from __future__ import annotations

import importlib
import math
import os
import warnings
from collections.abc import Mapping
from typing import Any

import torch

from qlr.integrations import SchedulerCallback, missing_framework
from qlr.policy import Policy

PACKAGES = ("lightning.pytorch", "pytorch_lightning")

_classes: dict[str, type] = {}


class _QLRCallbackLogic(SchedulerCallback):
    """Adjusts the learning rate of a LightningModule's first optimizer with a learned policy.

    At the start of training the callback builds a `QLRScheduler` on the first optimizer, then
    calls ``scheduler.step(loss)`` after every optimizer step with that step's training loss.
    Its state travels in Lightning checkpoints, so a resumed run continues the same feature
    stream (restore the optimizer too, as ``Trainer.fit(ckpt_path=...)`` does).

    Let qlr set the rate alone: a scheduler returned by ``configure_optimizers`` runs as well,
    and closed-form ones (``LambdaLR``, ``OneCycleLR``, ...) overwrite qlr's changes.

    Args:
        policy: ``"default"`` (shipped with qlr), a path to a policy file, or a loaded `Policy`.
        **scheduler_kwargs: passed on to `QLRScheduler` (``min_lr``, ``max_lr``,
            ``nonfinite_cut``, ``writer``, ...).

    Attributes:
        scheduler: the `QLRScheduler`, once training has started; None before.

    Example:
        >>> import lightning.pytorch as pl
        >>> from qlr.integrations.lightning import QLRCallback
        >>> trainer = pl.Trainer(max_epochs=10, callbacks=[QLRCallback()])
        >>> trainer.fit(model, train_loader)  # model.configure_optimizers() sets the initial rate
    """

    def __init__(
        self, policy: str | os.PathLike | Policy = "default", **scheduler_kwargs: Any
    ) -> None:
        super().__init__(policy, **scheduler_kwargs)
        self._pending_state: dict[str, Any] | None = None  # from a checkpoint, before fit starts
        self._optimizer_stepped = False
        self._warned_no_grads = False

    # ------------------------------------------------------------------ Lightning hooks
    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        # Built here rather than in on_fit_start: by now Lightning has restored the optimizer
        # from a checkpoint, so the scheduler starts from the rate the run will really use.
        if not trainer.optimizers:
            raise RuntimeError("QLRCallback needs an optimizer: configure_optimizers returned none")
        optimizer = trainer.optimizers[0]
        if self.scheduler is None or self.scheduler.optimizer is not optimizer:
            scaler = getattr(trainer.precision_plugin, "scaler", None)
            budget = _step_budget(trainer)
            self.scheduler = self._build_scheduler(optimizer, scaler=scaler, total_steps=budget)
        if self._pending_state is not None:
            self.scheduler.load_state_dict(self._pending_state)
            self._pending_state = None
        if trainer.lr_scheduler_configs:
            warnings.warn(
                "QLRCallback: configure_optimizers also returns a learning-rate scheduler; it "
                "keeps running, and closed-form schedulers (LambdaLR, OneCycleLR, ...) overwrite "
                "qlr's changes. Return the optimizer alone to let qlr set the rate.",
                UserWarning,
                stacklevel=2,
            )
        self._losses = []
        self._optimizer_stepped = False

    def on_before_optimizer_step(self, trainer: Any, pl_module: Any, optimizer: Any) -> None:
        # The one hook that fires for real optimizer steps only (after accumulation), in
        # automatic and manual optimization alike, and names the optimizer that steps.
        optimizer = getattr(optimizer, "_optimizer", optimizer)  # a LightningOptimizer wrapper
        if self.scheduler is not None and optimizer is self.scheduler.optimizer:
            self._optimizer_stepped = True

    def on_train_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self.scheduler is None:
            return
        automatic = pl_module.automatic_optimization
        loss = _loss_of(outputs)
        if loss is not None:
            loss = loss.detach().float().mean()
            if automatic:  # Lightning divided it by the accumulation count for backward
                loss = loss * trainer.accumulate_grad_batches
            self._losses.append(loss)
        if not self._optimizer_stepped:
            return
        self._optimizer_stepped = False
        losses, self._losses = self._losses, []
        if not losses:
            if automatic:  # training_step returned None: Lightning skipped the batch
                return
            raise RuntimeError(
                "QLRCallback needs the loss of each step: return it from training_step "
                "(a tensor or {'loss': tensor}) when using manual optimization"
            )
        if not automatic:
            self._check_grads()
        step_loss = torch.stack(losses).mean()
        step_loss = trainer.strategy.reduce(step_loss, reduce_op="mean")
        self.scheduler.step(step_loss)

    def _check_grads(self) -> None:
        if self._warned_no_grads or self.scheduler is None:
            return
        groups = self.scheduler.optimizer.param_groups
        if all(p.grad is None for group in groups for p in group["params"]):
            warnings.warn(
                "QLRCallback: the gradients were already cleared at the end of the batch, so qlr "
                "sees the loss only; call optimizer.zero_grad() before manual_backward, not after "
                "optimizer.step()",
                UserWarning,
                stacklevel=2,
            )
            self._warned_no_grads = True

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """The scheduler's memory, saved by Lightning in every checkpoint."""
        if self.scheduler is not None:
            return {"scheduler": self.scheduler.state_dict()}
        if self._pending_state is not None:
            return {"scheduler": self._pending_state}
        return {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the memory; applied when training starts if the scheduler is not built yet."""
        state = state_dict.get("scheduler")
        if state is None:
            return
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state)
        else:
            self._pending_state = state


def _step_budget(trainer: Any) -> int | None:
    """The run's optimizer steps as Lightning plans them (max_steps, or epochs x batches over
    the accumulation), or None when it cannot tell (an unbounded or unsized run)."""
    try:
        steps = trainer.estimated_stepping_batches
    except Exception:  # a loader without a length, or a Lightning version without the attribute
        return None
    if isinstance(steps, (int, float)) and math.isfinite(steps) and steps >= 1:
        return int(steps)
    return None


def _loss_of(outputs: Any) -> torch.Tensor | None:
    """The loss a ``training_step`` returned: a tensor, ``{"loss": tensor}``, or None."""
    if isinstance(outputs, Mapping):
        outputs = outputs.get("loss")
    return outputs if isinstance(outputs, torch.Tensor) else None


def callback_class(package: str | None = None) -> type:
    """The `QLRCallback` class built on ``package``'s ``Callback``.

    Args:
        package: ``"lightning.pytorch"`` or ``"pytorch_lightning"``; by default the first of the
            two that is installed.

    Raises:
        ImportError: the package (or, by default, both) is not installed.
    """
    candidates = PACKAGES if package is None else (package,)
    for name in candidates:
        if name not in PACKAGES:
            raise ValueError(f"package must be one of {PACKAGES}, got {name!r}")
        if name in _classes:
            return _classes[name]
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        cls = type(
            "QLRCallback",
            (_QLRCallbackLogic, module.Callback),
            {"__module__": __name__, "__qualname__": "QLRCallback"},
        )
        cls.__doc__ = _QLRCallbackLogic.__doc__
        _classes[name] = cls
        return cls
    wanted = " or ".join(candidates)
    raise missing_framework("QLRCallback", wanted, "lightning", name=candidates[0].split(".")[0])


def __getattr__(name: str) -> Any:
    # The class exists only once Lightning has been imported, so it is built on first access.
    if name == "QLRCallback":
        return callback_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
