"""Callbacks that run a `QLRScheduler` inside training frameworks.

Importing this package imports no framework; each callback imports its framework on first use:

    from qlr.integrations.lightning import QLRCallback  # Lightning
    from qlr.integrations.huggingface import QLRTrainerCallback  # transformers.Trainer

Both names are also available from here, resolved lazily. What the two share (the policy, the
scheduler's arguments, checked when the callback is made, and the scheduler built on the
framework's optimizer) is `SchedulerCallback`, here, so that neither module imports the other.
"""

from __future__ import annotations

import importlib
import inspect
import os
from typing import Any

import torch

from qlr.policy import Policy, load_policy
from qlr.scheduler import QLRScheduler

_LAZY = {
    "QLRCallback": "qlr.integrations.lightning",
    "QLRTrainerCallback": "qlr.integrations.huggingface",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    # Resolved on access so that `import qlr.integrations` loads neither framework.
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


class SchedulerCallback:
    """The part of a framework callback that holds the policy and, once training starts, the
    `QLRScheduler` that runs it.

    Args:
        policy: ``"default"`` (shipped with qlr), a path to a policy file, or a loaded `Policy`.
        **scheduler_kwargs: passed on to `QLRScheduler` (``min_lr``, ``max_lr``,
            ``nonfinite_cut``, ``writer``, ...).

    Attributes:
        scheduler: the `QLRScheduler`, once training has started; None before.
    """

    def __init__(
        self, policy: str | os.PathLike | Policy = "default", **scheduler_kwargs: Any
    ) -> None:
        super().__init__()
        # Fail at construction, not minutes later when training starts.
        inspect.signature(QLRScheduler).bind(None, **scheduler_kwargs)
        self.policy = load_policy(policy)
        self.scheduler_kwargs = scheduler_kwargs
        self.scheduler: QLRScheduler | None = None
        self._losses: list[torch.Tensor] = []  # micro-batch losses since the last optimizer step

    def _build_scheduler(self, optimizer: torch.optim.Optimizer, **defaults: Any) -> QLRScheduler:
        """A `QLRScheduler` on `optimizer` with the callback's arguments, and `defaults` (what
        the framework knows: its GradScaler, its step budget) for those not given; a default of
        None is no default."""
        options = dict(self.scheduler_kwargs)
        for key, value in defaults.items():
            if value is not None:
                options.setdefault(key, value)
        return QLRScheduler(optimizer, policy=self.policy, **options)


def missing_framework(callback: str, wanted: str, install: str, name: str) -> ImportError:
    """The error for a callback whose framework is not installed, naming what to install."""
    return ImportError(
        f"qlr's {callback} needs {wanted}, which is not installed: pip install {install}",
        name=name,
    )
