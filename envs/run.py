"""A plain inner training run: a problem, an optimizer, a fixed budget, and an optional hook.

This is the loop a user writes (loss, backward, optimizer step, scheduler step), used to score
learned controllers and baselines under the same rules: every run gets the same number of
gradient evaluations, and the loss it ends with is measured on the full objective.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from qlr.control import MAX_BATCH_GROWTH, reference_lr
from qlr.envs.problems import Problem
from qlr.policy import load_policy
from qlr.scheduler import QLRScheduler

DIVERGENCE_FACTOR = 1e3  # a run whose loss exceeds this multiple of its start has diverged


@dataclass
class RunResult:
    """The outcome of one inner run."""

    initial_loss: float
    final_loss: float  # full objective after the budget; inf when the run diverged
    diverged: bool
    grad_evals: int
    func_evals: int  # function evaluations charged to the method (line searches pay these)
    examples_seen: int
    wall_time: float
    steps_taken: int = 0  # optimizer steps before the budget ran out or the run diverged
    losses: list[float] = field(default_factory=list)  # loss seen at each step
    lrs: list[float] = field(default_factory=list)  # learning rate used at each step

    @property
    def log10_improvement(self) -> float:
        """log10(initial / final loss); -inf for a divergence."""
        if self.diverged or not self.final_loss > 0:
            return -math.inf if self.diverged else math.inf
        return math.log10(self.initial_loss / self.final_loss)


def run_inner(
    problem: Problem,
    optimizer: torch.optim.Optimizer,
    steps: int,
    after_step: Callable[[float], None] | None = None,
    divergence_factor: float = DIVERGENCE_FACTOR,
    record: bool = True,
    max_examples: int | None = None,
    stop_at_divergence: bool = True,
) -> RunResult:
    """Train `problem` for `steps` gradient evaluations with `optimizer`.

    Args:
        problem: the inner problem; its parameters must be the optimizer's.
        optimizer: a torch optimizer over ``problem.params``.
        steps: gradient evaluations in the budget.
        after_step: called with the step's loss after every ``optimizer.step()``, where a user's
            loop calls ``scheduler.step(loss)``.
        divergence_factor: the run stops as diverged when its loss exceeds this multiple of the
            initial loss, or is not finite.
        record: keep the per-step losses and learning rates.
        max_examples: stop before a step whose batch would take the examples used by gradient
            evaluations past this (a budget in examples, for runs whose batch size changes);
            `steps` still caps the run.
        stop_at_divergence: stop at the first loss past the limit or not finite (the run is
            lost). False goes on stepping as a user's loop would, for a hook that can bring the
            run back (`QLRScheduler`'s rollback guard); the run then counts as diverged only if
            its final loss is past the limit or not finite.
    """
    initial = problem.loss()
    start_grads, start_funcs = problem.grad_evals, problem.func_evals
    start_examples = problem.examples_seen
    limit = divergence_factor * abs(initial) if initial != 0 else math.inf
    losses: list[float] = []
    lrs: list[float] = []
    diverged = False
    taken = 0
    began = time.perf_counter()
    for _ in range(steps):
        used = problem.examples_seen - start_examples
        if max_examples is not None and used + _batch_examples(problem) > max_examples:
            break  # the next batch would not fit in the budget
        lr = reference_lr(optimizer)
        loss = problem.loss_and_grad()
        if record:
            losses.append(loss)
            lrs.append(lr)
        if stop_at_divergence and (not math.isfinite(loss) or loss > limit):
            diverged = True
            break
        optimizer.step()
        taken += 1
        if after_step is not None:
            after_step(loss)
    wall = time.perf_counter() - began
    grad_evals = problem.grad_evals - start_grads
    func_evals = problem.func_evals - start_funcs
    examples = problem.examples_seen - start_examples
    final = math.inf if diverged else problem.loss()
    if not math.isfinite(final) or final > limit:
        diverged, final = True, math.inf
    return RunResult(
        initial_loss=initial,
        final_loss=final,
        diverged=diverged,
        grad_evals=grad_evals,
        func_evals=func_evals,
        examples_seen=examples,
        wall_time=wall,
        steps_taken=taken,
        losses=losses,
        lrs=lrs,
    )


def make_scheduler(
    problem: Problem,
    optimizer: torch.optim.Optimizer,
    policy,
    hold_batch: bool = False,
    total_steps: int | None = None,
) -> QLRScheduler:
    """A `QLRScheduler` for `problem`; a policy that sets the batch size starts from its batch.

    On a full-batch problem such a policy keeps the whole data set as its batch (min = max).
    `hold_batch` pins the batch at its start (min = max) while the policy still sets the rate:
    an ablation that shows what the batch actions add. `total_steps` tells the scheduler the
    run's budget (a policy that reads ``progress`` uses it).
    """
    policy = load_policy(policy)
    if policy.batch_factors is None:
        return QLRScheduler(optimizer, policy=policy, total_steps=total_steps)
    batch = getattr(problem, "batch_size", None)
    if batch is None:  # full batch: nothing to grow
        n = int(getattr(problem, "n", 1))
        return QLRScheduler(
            optimizer,
            policy=policy,
            batch_size=n,
            max_batch_size=n,
            min_batch_size=n,
            total_steps=total_steps,
        )
    # The bound it was trained with (a multiple of the start), never above the data set.
    growth = policy.metadata.max_batch_growth or MAX_BATCH_GROWTH
    limit = max(int(batch), min(problem.n, int(growth * batch)))
    if hold_batch:
        limit = int(batch)
    return QLRScheduler(
        optimizer,
        policy=policy,
        batch_size=int(batch),
        max_batch_size=limit,
        total_steps=total_steps,
    )


def scheduler_hook(problem: Problem, scheduler: QLRScheduler) -> Callable[[float], None]:
    """`scheduler.step`, then hand the problem the batch size the scheduler chose."""

    def hook(loss: float) -> None:
        scheduler.step(loss)
        batch = scheduler.batch_size
        if batch is not None and problem.stochastic and batch != problem.batch_size:
            problem.set_batch_size(batch)

    return hook


def example_budget(problem: Problem, steps: int) -> int | None:
    """`steps` at the problem's starting batch, in examples (None for full-batch problems)."""
    batch = getattr(problem, "batch_size", None) if problem.stochastic else None
    return None if batch is None else steps * int(batch)


def run_policy(
    problem: Problem,
    optimizer: torch.optim.Optimizer,
    policy,
    steps: int,
    record: bool = True,
    tell_budget: bool = False,
) -> RunResult:
    """`run_inner` under a `QLRScheduler` running `policy`, the deployment path.

    A policy that sets the batch size gets the budget of `steps` at the starting batch, in
    examples: a grown batch costs its examples, so it takes fewer, larger steps. With
    `tell_budget` the scheduler is told the budget (``total_steps=steps``).
    """
    total = steps if tell_budget else None
    scheduler = make_scheduler(problem, optimizer, policy, total_steps=total)
    max_examples = None
    if scheduler.policy.batch_factors is not None:
        max_examples = example_budget(problem, steps)
        steps = steps if max_examples is None else max_examples
    hook = scheduler_hook(problem, scheduler)
    return run_inner(problem, optimizer, steps, hook, record=record, max_examples=max_examples)


def _batch_examples(problem: Problem) -> int:
    """Examples one gradient evaluation of `problem` uses now."""
    if problem.stochastic:
        return int(problem.batch_size)
    return int(getattr(problem, "n", 0))
