"""Graduated optimisation (Sato & Iiduka): the ``graduated_*`` methods of
`qlr.agents.bench.baselines`.

Five stages, each with an equal share of the budget; from one stage to the next the rate and the
batch size are multiplied by the factors of `GRADUATED`, each schedule shrinking
``delta = lr C / sqrt(b)`` by 1/sqrt(2) per stage. They need minibatch problems.
"""

from __future__ import annotations

import torch

from qlr.agents.bench.budget import Budget
from qlr.agents.bench.methods import MethodFn, new_optimizer, run_scheduled
from qlr.control import scale_lr
from qlr.envs.problems import DataProblem, Problem

__all__ = [
    "GRADUATED",
    "GRADUATED_STAGES",
    "GraduatedSchedule",
    "graduated_method",
    "graduated_plan",
    "needs_minibatches",
    "set_batch_size",
]

GRADUATED: dict[str, tuple[float, float]] = {
    "graduated_lr": (0.7071, 1.0),
    "graduated_batch": (1.0, 2.0),
    "graduated_hybrid": (0.866, 1.5),
}
"""name -> (lr factor, batch factor) per stage; each shrinks delta = lr C / sqrt(b) by 1/sqrt(2)."""
GRADUATED_STAGES = 5


def set_batch_size(problem: Problem, batch_size: int) -> None:
    """Change the minibatch size of a live minibatch data problem (from its next batch on)."""
    if not isinstance(problem, DataProblem):
        raise ValueError(f"{problem.name} does not use minibatches")
    problem.set_batch_size(batch_size)


def graduated_plan(
    budget: Budget,
    batch_size: int,
    n: int,
    lr_factor: float,
    batch_factor: float,
    stages: int = GRADUATED_STAGES,
) -> list[tuple[int, int, float]]:
    """``(steps, batch size, lr multiplier)`` for each stage of a graduated schedule.

    Each stage gets an equal share of the budget: of the examples when the budget counts
    examples (so a stage with a larger batch takes fewer steps), else of the gradient
    evaluations. Stage s uses ``lr0 * lr_factor**s`` and ``batch_size * batch_factor**s``
    (rounded, at most `n`).
    """
    plan = []
    for s in range(stages):
        batch = int(min(n, max(1, round(batch_size * batch_factor**s))))
        if budget.examples is not None:
            share = budget.examples // stages + (budget.examples % stages if s == stages - 1 else 0)
            steps = share // batch
        else:
            evals = min(v for v in (budget.grad_evals, budget.total_evals) if v is not None)
            steps = evals // stages + (evals % stages if s == stages - 1 else 0)
        plan.append((steps, batch, lr_factor**s))
    return plan


class GraduatedSchedule:
    """Step hook that moves through the stages of `graduated_plan`.

    Args:
        optimizer: the optimizer whose rates are multiplied (every group, ratios kept).
        problem: the minibatch problem whose batch size changes.
        plan: the output of `graduated_plan`.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, problem: Problem, plan: list) -> None:
        self.optimizer = optimizer
        self.problem = problem
        self.plan = plan
        self.stage = 0
        self.steps = 0
        self._boundaries = [sum(s for s, _, _ in plan[: i + 1]) for i in range(len(plan))]
        set_batch_size(problem, plan[0][1])

    def step(self, loss: float) -> None:
        self.steps += 1
        while self.stage + 1 < len(self.plan) and self.steps >= self._boundaries[self.stage]:
            self.stage += 1
            _, batch, multiplier = self.plan[self.stage]
            previous = self.plan[self.stage - 1][2]
            scale_lr(self.optimizer, multiplier / previous)
            set_batch_size(self.problem, batch)


def graduated_method(name: str) -> MethodFn:
    """The run function of the graduated schedule `name` (a key of `GRADUATED`)."""
    lr_factor, batch_factor = GRADUATED[name]

    def run(problem, optimizer, lr, budget):
        opt = new_optimizer(problem, optimizer, lr)
        plan = graduated_plan(budget, problem.batch_size, problem.n, lr_factor, batch_factor)
        schedule = GraduatedSchedule(opt, problem, plan)
        steps = sum(s for s, _, _ in plan)
        return run_scheduled(problem, opt, budget, schedule.step, steps=steps)

    return run


def needs_minibatches(problem: Problem, optimizer: str | None) -> str | None:
    """Why a graduated schedule cannot run on `problem` (no minibatches to grow), or None."""
    return None if problem.stochastic else "needs minibatches"
