"""What every benchmarked method shares: `Method`, `MethodResult` and the common loop.

A `Method` is a name and a function ``run(problem, optimizer, lr, budget) -> MethodResult``.
The registry of named methods is `qlr.agents.bench.baselines`; the controllers it registers
(`qlr.agents.bench.hypergradient`, `qlr.agents.bench.rule_controller`,
`qlr.agents.bench.graduated`), the lookahead teacher (`qlr.agents.bench.teacher`) and the line
searches (`qlr.agents.bench.linesearch`) build on the records here, and `qlr compare` and
`qlr evaluate` run them all the same way.

Methods that are "an optimizer plus a hook after each step" go through `run_scheduled`, which
is `qlr.envs.run.run_inner` (the loop `QLRScheduler` is scored in) with the cost of each loss
recorded as it is measured.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields

import torch

from qlr.agents.bench.budget import Budget, examples_per_eval
from qlr.control import MAX_LR, MIN_LR
from qlr.envs.optimizers import make_optimizer
from qlr.envs.problems import Problem
from qlr.envs.run import RunResult, run_inner

__all__ = [
    "MAX_LR",
    "MIN_LR",
    "Hook",
    "Method",
    "MethodFn",
    "MethodResult",
    "budget_steps",
    "new_optimizer",
    "run_scheduled",
]


@dataclass
class MethodResult(RunResult):
    """A `RunResult` with the cumulative cost at which each loss in ``losses`` was measured.

    ``grad_trace[i]``, ``func_trace[i]`` and ``example_trace[i]`` are the evaluations charged
    (since the start of the run) when ``losses[i]`` was known; curves are plotted against them
    and "evaluations to reach a target" is read from them.
    """

    grad_trace: list[int] = field(default_factory=list)
    func_trace: list[int] = field(default_factory=list)
    example_trace: list[int] = field(default_factory=list)
    extra: dict = field(default_factory=dict)


MethodFn = Callable[[Problem, "str | None", "float | None", Budget], MethodResult]
Hook = Callable[[float], None]


def _always(problem: Problem, optimizer: str | None) -> str | None:
    return None


@dataclass(frozen=True)
class Method:
    """A baseline or controller that can be run on a problem.

    Attributes:
        name: the name used on the command line and in tables.
        run: ``run(problem, optimizer, lr, budget)``; `optimizer` is None when
            ``uses_optimizer`` is False and `lr` is None when ``uses_lr`` is False.
        description: one line for tables and logs.
        uses_optimizer: False when the method brings its own update (line searches, Newton,
            Prodigy, DoG): it is then run once per instance, not once per inner optimizer.
        uses_lr: False when the initial rate plays no part (Newton, most LR-free optimizers).
        charges_trials: True when the method spends function evaluations, so that its runs
            differ between a budget of gradient evaluations and one of gradient + function
            evaluations.
        applies: ``applies(problem, optimizer)`` returns why the method cannot run there
            (the run is then recorded as "n/a"), or None.
    """

    name: str
    run: MethodFn
    description: str
    uses_optimizer: bool = True
    uses_lr: bool = True
    charges_trials: bool = False
    applies: Callable[[Problem, str | None], str | None] = _always

    def not_applicable(self, problem: Problem, optimizer: str | None) -> str | None:
        """Why this method cannot run on `problem` with `optimizer`, or None when it can."""
        return self.applies(problem, optimizer)


def new_optimizer(problem: Problem, name: str, lr: float) -> torch.optim.Optimizer:
    """The inner optimizer `name` over the problem's parameters, at rate `lr`."""
    return make_optimizer(name, problem.params, lr)


def budget_steps(problem: Problem, budget: Budget) -> int:
    """Steps a one-gradient-per-step method can afford on `problem` under `budget`."""
    return budget.steps(examples_per_eval(problem)[0])


def run_scheduled(
    problem: Problem,
    optimizer: torch.optim.Optimizer,
    budget: Budget,
    hook: Hook | None = None,
    steps: int | None = None,
    lr_reader: Callable[[torch.optim.Optimizer], float] | None = None,
    max_examples: int | None = None,
    stop_at_divergence: bool = True,
) -> MethodResult:
    """`run_inner` with `hook` after every step, for as many steps as `budget` allows.

    Args:
        problem: the inner problem; `optimizer` must be over its params.
        optimizer: the torch optimizer.
        budget: limits; one gradient evaluation (of one batch) per step.
        hook: called with the step's loss after ``optimizer.step()``, like ``scheduler.step``.
        steps: the number of steps, when the caller has planned them (graduated schedules).
        lr_reader: reads the rate the step just used, for optimizers whose ``lr`` is a
            multiplier (D-Adaptation, Prodigy, DoG); default: the rate before each step.
        max_examples: stop when the gradient evaluations have used this many examples (for a
            hook that changes the batch size as it goes); then `steps` defaults to that many.
        stop_at_divergence: False lets the run go on past a diverging loss, for a hook that
            can restore it (see `qlr.envs.run.run_inner`).
    """
    per_grad, per_func = examples_per_eval(problem)
    if steps is None:
        steps = budget.steps(per_grad) if max_examples is None else max_examples
    # run_inner measures the initial loss (one function evaluation) before it starts charging.
    start = (problem.grad_evals, problem.func_evals + 1, problem.examples_seen + per_func)
    traces: tuple[list[int], list[int], list[int]] = ([], [], [])
    effective: list[float] = []

    def after_step(loss: float) -> None:
        _append_counters(traces, problem, start)
        if lr_reader is not None:
            effective.append(lr_reader(optimizer))
        if hook is not None:
            hook(loss)

    result = run_inner(
        problem,
        optimizer,
        steps,
        after_step=after_step,
        max_examples=max_examples,
        stop_at_divergence=stop_at_divergence,
    )
    if len(traces[0]) < len(result.losses):  # a diverging step ends the run before its hook
        _append_counters(traces, problem, start)
    values = {f.name: getattr(result, f.name) for f in fields(result)}
    if lr_reader is not None:
        values["lrs"] = effective + values["lrs"][len(effective) :]
    return MethodResult(
        **values, grad_trace=traces[0], func_trace=traces[1], example_trace=traces[2]
    )


def _append_counters(traces: tuple, problem: Problem, start: tuple[int, int, int]) -> None:
    traces[0].append(problem.grad_evals - start[0])
    traces[1].append(problem.func_evals - start[1])
    traces[2].append(problem.examples_seen - start[2])
