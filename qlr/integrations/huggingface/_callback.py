"""`QLRTrainerCallback`, the class itself: importing this module imports transformers.

`qlr.integrations.huggingface` is where it is documented and imported from; that package loads
this module on first use, so that importing it needs no transformers.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from typing import Any

import torch
from transformers import TrainerCallback

from qlr.control import reference_lr
from qlr.integrations import SchedulerCallback
from qlr.policy import Policy

__all__ = ["QLRTrainerCallback"]


class QLRTrainerCallback(SchedulerCallback, TrainerCallback):
    """Adjusts a ``transformers.Trainer``'s learning rate with a learned policy.

    At ``on_train_begin`` the callback builds a `QLRScheduler` on the Trainer's optimizer and
    hooks the model's forward pass to collect training losses; after every optimizer step (not
    every micro-batch) it calls ``scheduler.step(loss)``.

    Args:
        policy: ``"default"`` (shipped with qlr), a path to a policy file, or a loaded `Policy`.
        **scheduler_kwargs: passed on to `QLRScheduler` (``min_lr``, ``max_lr``,
            ``nonfinite_cut``, ``writer``, ...).

    Attributes:
        scheduler: the `QLRScheduler`, once training has started; None before.

    Example:
        >>> from transformers import Trainer, TrainingArguments
        >>> from qlr.integrations.huggingface import QLRTrainerCallback
        >>> args = TrainingArguments(
        ...     output_dir="out",
        ...     learning_rate=1e-4,  # where qlr starts
        ...     lr_scheduler_type="constant",  # qlr alone sets the rate
        ... )
        >>> trainer = Trainer(
        ...     model=model, args=args, train_dataset=data, callbacks=[QLRTrainerCallback()]
        ... )
        >>> trainer.train()
    """

    # Its public home; the class lives here so that importing that module needs no transformers.
    __module__ = "qlr.integrations.huggingface"

    def __init__(
        self, policy: str | os.PathLike | Policy = "default", **scheduler_kwargs: Any
    ) -> None:
        super().__init__(policy, **scheduler_kwargs)
        self._losses_are_shares = False  # each loss already divided by the whole step's count
        self._hook: torch.utils.hooks.RemovableHandle | None = None
        self._trainer_scheduler: torch.optim.lr_scheduler.LambdaLR | None = None

    # ------------------------------------------------------------------ Trainer events
    def on_train_begin(
        self,
        args: Any,
        state: Any,
        control: Any,
        model: torch.nn.Module | None = None,
        optimizer: torch.optim.Optimizer | None = None,
        lr_scheduler: Any = None,
        **kwargs: Any,
    ) -> None:
        if model is None or optimizer is None:
            raise RuntimeError("QLRTrainerCallback: the Trainer passed no model or optimizer")
        lr = reference_lr(optimizer)
        if not lr > 0:
            raise ValueError(
                f"QLRTrainerCallback: the learning rate is {lr} when training starts (a warmup "
                "starts it at 0); qlr multiplies the rate and needs a positive start: pass "
                "lr_scheduler_type='constant' and warmup_steps=0"
            )
        if self.scheduler is None or self.scheduler.optimizer is not optimizer:
            # accelerate's optimizer wrapper holds the fp16 GradScaler: skipped steps don't count.
            scaler = getattr(optimizer, "scaler", None)
            # The Trainer has worked out its optimizer steps (epochs, accumulation) by now.
            max_steps = getattr(state, "max_steps", 0)
            budget = max_steps if isinstance(max_steps, int) and max_steps > 0 else None
            self.scheduler = self._build_scheduler(optimizer, scaler=scaler, total_steps=budget)
        self._trainer_scheduler = _lambda_scheduler(lr_scheduler)
        _warn_about_schedule(args, lr_scheduler, self._trainer_scheduler)
        self._losses = []
        self._remove_hook()
        self._hook = model.register_forward_hook(self._record_loss, with_kwargs=True)

    def on_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        losses, self._losses = self._losses, []
        if self.scheduler is None:
            return
        if not losses:
            raise RuntimeError(
                "QLRTrainerCallback: the model's forward returned no loss. qlr reads it from "
                "outputs.loss, outputs['loss'], or outputs[0] when labels are passed; a loss "
                "computed outside the model (compute_loss_func, label_smoothing_factor) is not "
                "supported"
            )
        stacked = torch.stack(losses)
        loss = stacked.sum() if self._losses_are_shares else stacked.mean()
        loss = _mean_over_processes(loss)
        optimizer = self.scheduler.optimizer
        before = reference_lr(optimizer)
        self.scheduler.step(loss)
        after = reference_lr(optimizer)
        if before > 0 and after != before and self._trainer_scheduler is not None:
            # The Trainer's LambdaLR recomputes the rate from base_lrs right after this event;
            # scaling them keeps qlr's change (and makes the Trainer log the rate in use).
            factor = after / before
            sched = self._trainer_scheduler
            sched.base_lrs = [base * factor for base in sched.base_lrs]

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._remove_hook()

    # ------------------------------------------------------------------ loss capture
    def _record_loss(
        self, module: torch.nn.Module, args: tuple, kwargs: dict[str, Any], output: Any
    ) -> None:
        # Evaluation and prediction run in eval mode or without grad: their losses don't count.
        if not module.training or not torch.is_grad_enabled():
            return
        loss = _model_loss(output, has_labels="labels" in kwargs)
        if loss is None:
            return
        self._losses.append(loss.detach().float().mean())  # mean: DataParallel gives one per GPU
        self._losses_are_shares = kwargs.get("num_items_in_batch") is not None

    def _remove_hook(self) -> None:
        if self._hook is not None:
            self._hook.remove()
            self._hook = None


def _model_loss(output: Any, has_labels: bool) -> torch.Tensor | None:
    """The loss in a model's output, following transformers' conventions."""
    loss = None
    if isinstance(output, Mapping):  # ModelOutput is a Mapping too
        loss = output.get("loss")
    elif hasattr(output, "loss"):
        loss = output.loss
    elif isinstance(output, (tuple, list)) and output and has_labels:
        loss = output[0]
    return loss if isinstance(loss, torch.Tensor) else None


def _lambda_scheduler(lr_scheduler: Any) -> torch.optim.lr_scheduler.LambdaLR | None:
    """The Trainer's scheduler if it recomputes the rate from ``base_lrs`` (unwrapped)."""
    inner = getattr(lr_scheduler, "scheduler", lr_scheduler)  # accelerate's AcceleratedScheduler
    return inner if isinstance(inner, torch.optim.lr_scheduler.LambdaLR) else None


def _warn_about_schedule(args: Any, lr_scheduler: Any, lambda_scheduler: Any) -> None:
    kind = getattr(args.lr_scheduler_type, "value", args.lr_scheduler_type)
    inner = getattr(lr_scheduler, "scheduler", lr_scheduler)
    if lambda_scheduler is not None and kind == "constant" and not args.warmup_steps:
        return
    if lambda_scheduler is not None:
        message = (
            f"the Trainer's {kind!r} schedule keeps running, and the rate becomes that schedule "
            "times qlr's factor"
        )
    elif isinstance(inner, torch.optim.lr_scheduler.ReduceLROnPlateau):
        message = "the Trainer's reduce-on-plateau schedule also cuts the rate"
    else:
        message = f"the Trainer's scheduler {type(inner).__name__} may overwrite qlr's rate"
    warnings.warn(
        f"QLRTrainerCallback: {message}. qlr was trained to set the rate alone: pass "
        "lr_scheduler_type='constant' (and no warmup) to TrainingArguments.",
        UserWarning,
        stacklevel=2,
    )


def _mean_over_processes(loss: torch.Tensor) -> torch.Tensor:
    """Every process must see the same loss to take the same decision and keep the same rate."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        loss = loss.clone()
        torch.distributed.all_reduce(loss)
        loss /= torch.distributed.get_world_size()
    return loss
