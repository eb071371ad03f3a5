"""The first design's hand-written rule controller: the ``rule`` method of
`qlr.agents.bench.baselines`.

Every 5 steps: x2 while the loss falls and successive gradients agree, x0.5 when it rises, else
hold; the rate kept within `qlr.agents.bench.methods.MIN_LR` and `MAX_LR`. The hand rule the
learned controller is now measured against is `qlr.rules.slope_rule` (the ``slope_rule``
method); this one stays a baseline of the suites.
"""

from __future__ import annotations

import math

import torch

from qlr.agents.bench.budget import Budget
from qlr.agents.bench.methods import MAX_LR, MIN_LR, MethodResult, new_optimizer, run_scheduled
from qlr.control import reference_lr, scale_lr
from qlr.envs.problems import Problem

__all__ = ["RuleController", "run_rule"]


class RuleController:
    """The hand-written controller a learned one must beat.

    Every `interval` steps it compares the mean loss of the block with that of the previous
    block (the first block: its last loss with its first) and the mean cosine between
    successive gradients: it multiplies the rate by `up` when the loss fell and the gradients
    agreed (cosine > 0), by `down` when the loss rose, and holds it otherwise. Block means
    rather than single losses keep minibatch noise from deciding.

    Args:
        optimizer: any torch optimizer; every group's rate is scaled, keeping their ratios.
        interval: steps per decision.
        up: factor while the loss falls and gradients agree.
        down: factor when the loss rises.
        min_lr: floor of the first group's rate.
        max_lr: ceiling of the first group's rate.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        interval: int = 5,
        up: float = 2.0,
        down: float = 0.5,
        min_lr: float = MIN_LR,
        max_lr: float = MAX_LR,
    ) -> None:
        if interval < 1 or not (0 < down < 1 < up) or not (0 < min_lr < max_lr):
            raise ValueError("need interval >= 1, 0 < down < 1 < up and 0 < min_lr < max_lr")
        self.optimizer = optimizer
        self.interval = interval
        self.up, self.down = up, down
        self.min_lr, self.max_lr = min_lr, max_lr
        self._block: list[float] = []
        self._cosines: list[float] = []
        self._previous_grad: torch.Tensor | None = None
        self._previous_mean: float | None = None
        self.decisions: list[float] = []  # the factor chosen at each decision

    def step(self, loss: float) -> None:
        """Record one optimizer step; decide at the end of each block."""
        grads = [
            p.grad.detach().reshape(-1)
            for group in self.optimizer.param_groups
            for p in group["params"]
            if p.grad is not None
        ]
        grad = torch.cat(grads).double() if grads else torch.zeros(1, dtype=torch.float64)
        if self._previous_grad is not None:
            norms = float(grad.norm() * self._previous_grad.norm())
            if norms > 0 and math.isfinite(norms):
                self._cosines.append(float(grad.dot(self._previous_grad)) / norms)
        self._previous_grad = grad
        self._block.append(float(loss))
        if len(self._block) >= self.interval:
            self._decide()

    def _decide(self) -> None:
        mean = sum(self._block) / len(self._block)
        before = self._block[0] if self._previous_mean is None else self._previous_mean
        now = self._block[-1] if self._previous_mean is None else mean
        agree = bool(self._cosines) and sum(self._cosines) / len(self._cosines) > 0
        if now > before:
            factor = self.down
        elif now < before and agree:
            factor = self.up
        else:
            factor = 1.0
        lr = reference_lr(self.optimizer)
        target = min(self.max_lr, max(self.min_lr, lr * factor))
        scale_lr(self.optimizer, target / lr)
        self.decisions.append(factor)
        self._previous_mean = mean
        self._block, self._cosines = [], []


def run_rule(problem: Problem, optimizer: str, lr: float, budget: Budget) -> MethodResult:
    """The ``rule`` method: `RuleController` with its defaults on the inner optimizer."""
    opt = new_optimizer(problem, optimizer, lr)
    return run_scheduled(problem, opt, budget, RuleController(opt).step)
