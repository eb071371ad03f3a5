"""Independent copies of a live inner run that continue bit for bit.

A run is a `Problem`, a torch optimizer over its parameters and, optionally, what steers the rate
(a `qlr.LRController`, a `qlr.QLRScheduler` or any step hook). `clone_run` copies all of it at
once: the parameters with their current ``.grad`` (the loop computes the next gradient before
the next step, so the one a hook sees must travel too), the optimizer's state and param-group
settings (a tensor learning rate becomes a tensor of the copy's own), the minibatch order (the
generator's state and the position in the current permutation), the problem's evaluation
counters and the controller's memory. Stepping a copy never changes the original, and a copy
stepped like the original takes exactly the same steps: same losses, same parameters, bit for
bit (on the same device and thread count).

Everything is copied in one `copy.deepcopy` pass sharing one memo, so every reference the
controller or the optimizer holds to the parameters, the optimizer or the problem points into
the copy. Torch generators found anywhere in the run (a hook may hold one) are copied by hand
first, as fresh generators given the originals' states: before torch 2.4 a generator could not
be deep-copied at all.

What is not copied: hooks registered on the optimizer (torch's own ``__getstate__`` leaves them
out), and a `QLRScheduler`'s TensorBoard writer (the copy logs nothing). A scheduler's policy is
shared, since nothing writes to it.
"""

from __future__ import annotations

import copy
import types
from collections import deque
from typing import Any, TypeVar

import numpy as np
import torch

from qlr.envs.problems import Problem
from qlr.scheduler import QLRScheduler

__all__ = ["RunSnapshot", "clone_run"]

Controller = TypeVar("Controller")

# Objects that cannot hold a generator: the walk in `_generators` does not look inside them.
# Exact types, looked up in a set: isinstance against some torch types is slow.
_LEAVES = frozenset(
    {
        str,
        bytes,
        int,
        float,
        complex,
        bool,
        type(None),
        type,
        torch.dtype,
        torch.device,
        torch.Size,
        np.ndarray,
        np.float32,
        np.float64,
        np.int64,
        types.ModuleType,
        types.FunctionType,
        types.BuiltinFunctionType,
    }
)


def clone_run(
    problem: Problem,
    optimizer: torch.optim.Optimizer,
    controller: Controller | None = None,
) -> tuple[Problem, torch.optim.Optimizer, Controller | None]:
    """An independent copy of a live run, ready to continue exactly where the original is.

    Take the copy where a scheduler would be stepped (after ``optimizer.step()``) or between
    iterations of the loop; step the copy with the same loop as the original.

    Args:
        problem: the live problem.
        optimizer: a torch optimizer over (some of) ``problem.params``.
        controller: what steers the rate, if anything: an `LRController`, a `QLRScheduler`
            (which must drive `optimizer`) or any hook object; it is copied along, its
            references to the optimizer and the parameters pointing into the copy.

    Returns:
        ``(problem, optimizer, controller)`` of the copy (``controller`` None when none was
        given).

    Raises:
        ValueError: the optimizer updates a tensor that is not one of the problem's parameters,
            or the scheduler drives another optimizer: the copy would not be one run.
    """
    params = {id(p) for p in problem.params}
    strays = [p for g in optimizer.param_groups for p in g["params"] if id(p) not in params]
    if strays:
        raise ValueError(
            f"the optimizer updates {len(strays)} tensor(s) that are not parameters of "
            f"{problem.name}; build it over problem.params"
        )
    memo: dict[int, Any] = {}
    if isinstance(controller, QLRScheduler):
        if controller.optimizer is not optimizer:
            raise ValueError("the scheduler drives another optimizer than the one given")
        memo[id(controller.policy)] = controller.policy  # read-only: shared, not copied
        if controller.writer is not None:
            memo[id(controller.writer)] = None  # the copy logs nothing
    run = (problem, optimizer, controller)
    for gen in _generators(run, memo):
        twin = torch.Generator(device=gen.device)
        twin.set_state(gen.get_state())
        memo[id(gen)] = twin
    return copy.deepcopy(run, memo)


class RunSnapshot:
    """A run frozen at one moment, to go back to as often as needed.

    The snapshot holds a copy of its own that is never stepped; every `restore` hands out a new
    independent copy of it, so one snapshot can seed several continuations (one per learning
    rate, say) or undo a bad stretch of training.

    Args:
        problem: the live problem.
        optimizer: its optimizer.
        controller: what steers the rate, if anything (see `clone_run`).

    Example:
        >>> snapshot = RunSnapshot(problem, optimizer)
        >>> for factor in (0.5, 1.0, 2.0):
        ...     trial, trial_optimizer, _ = snapshot.restore()
        ...     scale_lr(trial_optimizer, factor)
        ...     ...  # run the trial; the live run and the snapshot are untouched
    """

    def __init__(
        self,
        problem: Problem,
        optimizer: torch.optim.Optimizer,
        controller: Any | None = None,
    ) -> None:
        self._frozen = clone_run(problem, optimizer, controller)

    def restore(self) -> tuple[Problem, torch.optim.Optimizer, Any | None]:
        """A new copy of the run as it was when the snapshot was taken (see `clone_run`)."""
        return clone_run(*self._frozen)


def _generators(root: Any, skip: dict[int, Any]) -> list[torch.Generator]:
    """Every `torch.Generator` reachable from `root`, by the references deepcopy follows.

    Objects whose id is in `skip` (already settled in the memo) are not entered.
    """
    found: list[torch.Generator] = []
    seen = set(skip)
    stack = [root]
    while stack:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        kind = type(obj)
        if kind in _LEAVES or isinstance(obj, torch.Tensor):
            continue
        if isinstance(obj, torch.Generator):
            found.append(obj)
        elif isinstance(obj, dict):
            stack.extend(obj.keys())
            stack.extend(obj.values())
        elif isinstance(obj, (list, tuple, set, frozenset, deque)):
            stack.extend(obj)
        elif isinstance(obj, types.MethodType):
            stack.append(obj.__self__)  # deepcopy copies a bound method's object
        else:
            stack.extend(getattr(obj, "__dict__", {}).values())
            for cls in type(obj).__mro__:
                slots = getattr(cls, "__slots__", ())
                for name in (slots,) if isinstance(slots, str) else slots:
                    if name not in ("__dict__", "__weakref__") and hasattr(obj, name):
                        stack.append(getattr(obj, name))
    return found
