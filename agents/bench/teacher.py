"""The lookahead teacher: a reference line that picks each rate factor by trying them all.

At every decision (every `interval` steps, with the factors and rate bounds of a controller) the
teacher copies the live run once per factor (`qlr.envs.snapshot.clone_run`), applies the factor
to the copy, holds that rate constant to the end of the budget (or for `horizon` steps) and
keeps the factor whose copy ends with the lowest full objective (`Problem.loss`). Ties prefer
holding the rate; when every copy diverges, the one that survived longest wins.

The copies run the loop of `qlr.envs.run.run_inner` (loss and gradient, ``optimizer.step()``)
from the moment the teacher is called, which is where a scheduler is stepped: each copy is
exactly what the live run would do next at that held rate, minibatches included. The teacher
therefore sees the future of every option, which no deployable controller can: like the oracle
constant in hindsight it is a reference line, not a method. Its price is about
``len(factors) x remaining steps`` extra gradient evaluations per decision (``T^2 / 2`` over a
run of ``T`` steps with five factors every five steps), counted in `LookaheadTeacher` and never
charged to the live run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from qlr.agents.bench.budget import Budget
from qlr.agents.bench.methods import MAX_LR, MIN_LR, MethodResult, budget_steps, run_scheduled
from qlr.control import ACTION_SETS, check_factors, reference_lr, scale_lr
from qlr.envs.optimizers import make_optimizer
from qlr.envs.problems import Problem
from qlr.envs.run import DIVERGENCE_FACTOR
from qlr.envs.snapshot import clone_run

__all__ = [
    "FACTORS",
    "TEACHER_HORIZON",
    "LookaheadChoice",
    "LookaheadTeacher",
    "env_lookahead_action",
    "lookahead_choice",
    "run_teacher",
]

FACTORS: tuple[float, ...] = ACTION_SETS[5]
"""The default policy's factors: x0.5, x0.71, x1, x1.41, x2."""
TEACHER_HORIZON = 100
"""Lookahead steps of the `teacher` method under a budget in examples alone (20 decisions)."""


@dataclass(frozen=True)
class LookaheadChoice:
    """What one lookahead found.

    Attributes:
        index: the chosen position in `factors`.
        factor: the chosen factor.
        factors: the factors tried, in order.
        final_losses: per factor, the full objective its copy ended with (inf: it diverged).
        survived: per factor, the steps its copy took before it diverged or the lookahead ended.
        grad_evals: gradient evaluations the copies spent.
        func_evals: function evaluations the copies spent (one final loss per copy run).
    """

    index: int
    factor: float
    factors: tuple[float, ...]
    final_losses: tuple[float, ...]
    survived: tuple[int, ...]
    grad_evals: int
    func_evals: int


def lookahead_choice(
    problem: Problem,
    optimizer: torch.optim.Optimizer,
    factors: tuple[float, ...],
    steps: int,
    min_lr: float = MIN_LR,
    max_lr: float = MAX_LR,
    limit: float = math.inf,
    gradient_ready: bool = False,
) -> LookaheadChoice:
    """Try every factor on a copy of the run, held for `steps` steps; the live run is untouched.

    Call it where a scheduler is stepped (after ``optimizer.step()``): each copy then runs
    exactly the steps the live run would take next at that rate. A factor is applied as a
    controller applies it: every group's rate is scaled, the first group's kept within
    ``[min_lr, max_lr]``. Factors that give the same rate after the bounds share one copy.

    Args:
        problem: the live problem.
        optimizer: its optimizer (over ``problem.params``).
        factors: the factors to try; must include 1 (hold), which wins ties.
        steps: steps each copy takes at its held rate.
        min_lr: floor of the first group's rate.
        max_lr: ceiling of the first group's rate.
        limit: a copy whose step loss or final loss exceeds this, or is not finite, has
            diverged (final loss inf), as `run_inner` judges the live run.
        gradient_ready: the gradient for the next step is already in ``p.grad`` (the loop of
            `LearningRateEnv`, which computes it right after each step), so each copy steps
            first and then evaluates, instead of evaluating first as `run_inner` does.

    Returns:
        The choice, with every copy's final loss and what the copies cost.

    Raises:
        ValueError: `factors` has no 1 or a non-positive factor, or `steps` < 1.
    """
    factors = _check_factors(factors)
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    hold = factors.index(1.0)
    lr = reference_lr(optimizer)
    if not (math.isfinite(lr) and lr > 0):  # no factor can move such a rate: nothing to try
        nothing = (math.nan,) * len(factors)
        return LookaheadChoice(hold, 1.0, factors, nothing, (0,) * len(factors), 0, 0)
    targets = [min(max_lr, max(min_lr, lr * f)) for f in factors]
    tried: dict[float, tuple[float, int]] = {}
    grads = funcs = 0
    for target in targets:
        if target in tried:
            continue
        copy, copy_optimizer, _ = clone_run(problem, optimizer)
        start = (copy.grad_evals, copy.func_evals)
        # The same operation the live run gets if this factor wins: bit-identical rates.
        scale_lr(copy_optimizer, target / lr)
        tried[target] = _hold(copy, copy_optimizer, steps, limit, gradient_ready)
        grads += copy.grad_evals - start[0]
        funcs += copy.func_evals - start[1]
    finals = tuple(tried[t][0] for t in targets)
    survived = tuple(tried[t][1] for t in targets)
    # Lowest final loss; among diverged copies the longest-lived; then hold; then the order.
    index = min(range(len(factors)), key=lambda i: (finals[i], -survived[i], i != hold, i))
    return LookaheadChoice(index, factors[index], factors, finals, survived, grads, funcs)


def _hold(
    problem: Problem,
    optimizer: torch.optim.Optimizer,
    steps: int,
    limit: float,
    gradient_ready: bool = False,
) -> tuple[float, int]:
    """`steps` steps at the optimizer's rate, in the loop's order: (final loss, steps taken)."""
    for taken in range(steps):
        if gradient_ready:
            optimizer.step()
        loss = problem.loss_and_grad()
        if not math.isfinite(loss) or loss > limit:
            return math.inf, taken
        if not gradient_ready:
            optimizer.step()
    final = problem.loss()
    return (final if math.isfinite(final) and final <= limit else math.inf), steps


class LookaheadTeacher:
    """Step hook that sets the rate by lookahead every `interval` steps (see the module doc).

    Call `step` after every ``optimizer.step()``, like a scheduler. At the end of each block it
    calls `lookahead_choice` with the steps left in the run (at most `horizon`) and applies the
    chosen factor to the live optimizer. A copy diverges past `divergence_factor` times the
    first step's loss, the bound `run_inner` puts on the live run (measured there on the full
    objective: the same value on a deterministic problem).

    Args:
        problem: the live problem.
        optimizer: its optimizer.
        total_steps: optimizer steps in the live run; copies run to its end.
        interval: steps per decision.
        factors: the factors tried at each decision; must include 1.
        horizon: cap on the steps a copy runs (None: to the end of the run). A capped lookahead
            keeps long runs affordable, at the price of a shorter view.
        min_lr: floor of the first group's rate.
        max_lr: ceiling of the first group's rate.
        divergence_factor: see above.

    Attributes:
        decisions: the factor chosen at each decision.
        choices: the full `LookaheadChoice` of each decision.
        extra_grad_evals: gradient evaluations spent by the copies, never by the live run.
        extra_func_evals: function evaluations spent by the copies.
    """

    def __init__(
        self,
        problem: Problem,
        optimizer: torch.optim.Optimizer,
        total_steps: int,
        interval: int = 5,
        factors: tuple[float, ...] = FACTORS,
        horizon: int | None = None,
        min_lr: float = MIN_LR,
        max_lr: float = MAX_LR,
        divergence_factor: float = DIVERGENCE_FACTOR,
    ) -> None:
        if total_steps < 0 or interval < 1:
            raise ValueError(
                f"need total_steps >= 0 and interval >= 1, got {total_steps} and {interval}"
            )
        if horizon is not None and horizon < 1:
            raise ValueError(f"horizon must be None or at least 1, got {horizon}")
        if not 0 < min_lr < max_lr:
            raise ValueError(f"need 0 < min_lr < max_lr, got {min_lr} and {max_lr}")
        self.problem = problem
        self.optimizer = optimizer
        self.total_steps = int(total_steps)
        self.interval = int(interval)
        self.factors = _check_factors(factors)
        self.horizon = horizon
        self.min_lr, self.max_lr = float(min_lr), float(max_lr)
        self.divergence_factor = float(divergence_factor)
        self.steps = 0
        self.decisions: list[float] = []
        self.choices: list[LookaheadChoice] = []
        self.extra_grad_evals = 0
        self.extra_func_evals = 0
        self._limit: float | None = None

    def step(self, loss: float) -> None:
        """Record one optimizer step; look ahead and set the rate at the end of each block."""
        loss = float(loss)
        if self._limit is None:
            finite = math.isfinite(loss) and loss != 0
            self._limit = self.divergence_factor * abs(loss) if finite else math.inf
        self.steps += 1
        left = self.total_steps - self.steps
        if self.steps % self.interval or left < 1:
            return
        look = left if self.horizon is None else min(self.horizon, left)
        choice = lookahead_choice(
            self.problem,
            self.optimizer,
            self.factors,
            look,
            self.min_lr,
            self.max_lr,
            self._limit,
        )
        lr = reference_lr(self.optimizer)
        if math.isfinite(lr) and lr > 0:
            scale_lr(self.optimizer, min(self.max_lr, max(self.min_lr, lr * choice.factor)) / lr)
        self.decisions.append(choice.factor)
        self.choices.append(choice)
        self.extra_grad_evals += choice.grad_evals
        self.extra_func_evals += choice.func_evals


def env_lookahead_action(env: Any, horizon: int | None = None) -> int:
    """The action the lookahead teacher takes at this decision of a `LearningRateEnv`.

    Tries each of the env's rate factors (the batch held) on copies of its run, held for the
    steps left in the episode (at most `horizon`), in the env's own loop order and with its
    divergence limit, and returns the action of the best. A demonstrator for
    `qlr.agents.learn.demonstrations`: it reads the env's internals, which no deployed
    controller can.
    """
    controller = env.controller
    left = (env.horizon - env.decisions) * controller.decision_interval
    steps = max(1, left if horizon is None else min(horizon, left))
    limit = env.divergence_factor * abs(env.initial_loss)
    choice = lookahead_choice(
        env.problem,
        env.optimizer,
        controller.action_factors,
        steps,
        controller.min_lr,
        controller.max_lr,
        limit,
        gradient_ready=env.batch_factors is None,
    )
    batch_factors = controller.batch_factors or (1.0,)
    return choice.index * len(batch_factors) + batch_factors.index(1.0)


def run_teacher(
    problem: Problem, optimizer: str, lr: float, budget: Budget, horizon: int | None = None
) -> MethodResult:
    """The ``teacher`` method: `LookaheadTeacher` over a run of the whole budget.

    The budget counts the live run only; the copies' evaluations are reported in
    ``extra["lookahead_grad_evals"]`` and ``extra["lookahead_func_evals"]``, the factors chosen
    in ``extra["decisions"]``. Under a budget in examples alone the copies look
    `TEACHER_HORIZON` steps ahead (those runs are long); otherwise (a budget that also caps the
    evaluations) to the end of the budget, unless `horizon` says otherwise.
    """
    opt = make_optimizer(optimizer, problem.params, lr)
    steps = budget_steps(problem, budget)
    if horizon is None and budget.examples_only:
        horizon = TEACHER_HORIZON
    teacher = LookaheadTeacher(problem, opt, steps, horizon=horizon)
    result = run_scheduled(problem, opt, budget, teacher.step, steps=steps)
    result.extra.update(
        lookahead_grad_evals=teacher.extra_grad_evals,
        lookahead_func_evals=teacher.extra_func_evals,
        decisions=list(teacher.decisions),
    )
    return result


def _check_factors(factors: tuple[float, ...]) -> tuple[float, ...]:
    return check_factors(factors, "factors", minimum=1, keeps="hold the rate")
