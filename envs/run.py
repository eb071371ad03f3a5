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

from qlr.control import reference_lr
from qlr.envs.problems import Problem

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
        lr = reference_lr(optimizer)
        loss = problem.loss_and_grad()
        if record:
            losses.append(loss)
            lrs.append(lr)
        if not math.isfinite(loss) or loss > limit:
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
