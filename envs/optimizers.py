"""The inner optimisers a learning-rate controller drives, built by name.

Next to the torch classes with their defaults there are the settings people train with:
SGD with momentum and weight decay (``momentum_wd``, the CNN recipe), Adam with betas
(0.9, 0.95) (``adam95``) and AdamW as language models are trained (``adamw95_clip``: betas
(0.9, 0.95), weight decay 0.1, the gradient's norm clipped at 1).

Gradient clipping belongs to the training loop, not to an optimiser, but every loop here (the
environment, :func:`~qlr.envs.run.run_inner`, the baselines) calls ``optimizer.step()`` right
after the gradient is computed, which is exactly where a user's loop clips. So clipping is an
option of :func:`make_optimizer` (``clip_grad_norm=...``, for any name): the optimiser it
returns rescales the gradients in place before each step, and whatever reads the gradients
after the step (a ``QLRScheduler``) sees the clipped ones, as it would in a user's loop.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch

OPTIMIZERS: tuple[str, ...] = (
    "sgd",
    "momentum",
    "nesterov",
    "adagrad",
    "rmsprop",
    "adam",
    "adamw",
    "momentum_wd",
    "adam95",
    "adamw95_clip",
)
"""Names accepted by :func:`make_optimizer`."""

# name -> (torch class, defaults that differ from the class's own); "clip_grad_norm" is not a
# constructor argument but the norm at which `make_optimizer` clips (see the module docstring).
_SPECS: dict[str, tuple[type[torch.optim.Optimizer], dict[str, Any]]] = {
    "sgd": (torch.optim.SGD, {}),
    "momentum": (torch.optim.SGD, {"momentum": 0.9}),
    "nesterov": (torch.optim.SGD, {"momentum": 0.9, "nesterov": True}),
    "adagrad": (torch.optim.Adagrad, {}),
    "rmsprop": (torch.optim.RMSprop, {}),
    "adam": (torch.optim.Adam, {}),
    "adamw": (torch.optim.AdamW, {}),
    "momentum_wd": (torch.optim.SGD, {"momentum": 0.9, "weight_decay": 5e-4}),
    "adam95": (torch.optim.Adam, {"betas": (0.9, 0.95)}),
    "adamw95_clip": (
        torch.optim.AdamW,
        {"betas": (0.9, 0.95), "weight_decay": 0.1, "clip_grad_norm": 1.0},
    ),
}

# Inner problems are small CPU tensors (often one vector), where the multi-tensor "foreach"
# kernels only add overhead: a step on one 100-dim vector is ~10-15% faster without them
# (median of 2,000 steps, torch 2.13 CPU; with torch's own default it is in between).
_FAST_DEFAULTS: dict[str, Any] = {"foreach": False}


class ClipGradNorm:
    """Mixin for a torch optimiser: each ``step`` first clips the gradients' global norm.

    The gradients of all parameters with one are scaled together, in place, so that their
    joint 2-norm is at most :attr:`max_grad_norm` (``torch.nn.utils.clip_grad_norm_``), then the
    optimiser steps. The norm is an attribute of the optimiser, not of its parameter groups: a
    copy (``copy.deepcopy``, pickle, so `qlr.envs.snapshot.clone_run`) keeps it, and so does
    ``load_state_dict``, whose ``state_dict`` does not hold it.
    """

    def __init__(self, params: Any, *args: Any, max_grad_norm: float, **kwargs: Any):
        if not (math.isfinite(max_grad_norm) and max_grad_norm > 0):
            raise ValueError(f"clip_grad_norm must be positive and finite, got {max_grad_norm!r}")
        super().__init__(params, *args, **kwargs)
        self.max_grad_norm = float(max_grad_norm)

    # torch's Optimizer.__getstate__ keeps only its own fields; the norm must travel too.
    def __getstate__(self) -> dict[str, Any]:
        return {**super().__getstate__(), "max_grad_norm": self.max_grad_norm}

    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = None
        if closure is not None:  # the closure computes the gradients, so it runs first
            with torch.enable_grad():
                loss = closure()
        grads = [p for group in self.param_groups for p in group["params"] if p.grad is not None]
        torch.nn.utils.clip_grad_norm_(grads, self.max_grad_norm, foreach=False)
        super().step()
        return loss


class ClippedSGD(ClipGradNorm, torch.optim.SGD):
    """``torch.optim.SGD`` that clips the gradients' global norm before each step."""


class ClippedAdagrad(ClipGradNorm, torch.optim.Adagrad):
    """``torch.optim.Adagrad`` that clips the gradients' global norm before each step."""


class ClippedRMSprop(ClipGradNorm, torch.optim.RMSprop):
    """``torch.optim.RMSprop`` that clips the gradients' global norm before each step."""


class ClippedAdam(ClipGradNorm, torch.optim.Adam):
    """``torch.optim.Adam`` that clips the gradients' global norm before each step."""


class ClippedAdamW(ClipGradNorm, torch.optim.AdamW):
    """``torch.optim.AdamW`` that clips the gradients' global norm before each step."""


# Module-level classes (not made on the fly) so that clipped optimisers pickle like others.
_CLIPPED: dict[type[torch.optim.Optimizer], type[torch.optim.Optimizer]] = {
    torch.optim.SGD: ClippedSGD,
    torch.optim.Adagrad: ClippedAdagrad,
    torch.optim.RMSprop: ClippedRMSprop,
    torch.optim.Adam: ClippedAdam,
    torch.optim.AdamW: ClippedAdamW,
}


def make_optimizer(
    name: str, params: Iterable[torch.Tensor] | Iterable[dict[str, Any]], lr: float, **kwargs: Any
) -> torch.optim.Optimizer:
    """Build the optimiser ``name`` over ``params``.

    ``momentum`` and ``nesterov`` are SGD with momentum 0.9 (Nesterov for the latter);
    ``momentum_wd`` adds weight decay 5e-4; ``adam95`` is Adam with betas (0.9, 0.95);
    ``adamw95_clip`` is AdamW with betas (0.9, 0.95), weight decay 0.1 and gradients clipped
    to norm 1. The others are the torch classes with their defaults. ``kwargs`` override
    everything.

    Args:
        name: One of :data:`OPTIMIZERS`.
        params: Tensors or parameter groups, as for any torch optimiser.
        lr: Initial learning rate.
        **kwargs: Extra constructor arguments, e.g. ``betas`` or ``weight_decay``, and
            ``clip_grad_norm``: clip the global gradient norm to this before every step
            (``None`` turns off the clipping a name comes with). The optimiser is then a
            subclass of the torch class (e.g. :class:`ClippedAdamW`).

    Raises:
        ValueError: On an unknown name, or arguments the optimiser does not accept.
    """
    if name not in _SPECS:
        raise ValueError(f"unknown optimizer {name!r}; valid names: {', '.join(OPTIMIZERS)}")
    cls, defaults = _SPECS[name]
    options = {**_FAST_DEFAULTS, **defaults, **kwargs}
    clip = options.pop("clip_grad_norm", None)
    try:
        if clip is None:
            return cls(params, lr=lr, **options)
        return _CLIPPED[cls](params, lr=lr, max_grad_norm=float(clip), **options)
    except (TypeError, ValueError) as err:  # unexpected keyword, or a value torch rejects
        raise ValueError(f"bad arguments for optimizer {name!r}: {err}") from err
