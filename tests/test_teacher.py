"""The lookahead teacher: it looks without touching, simulates exactly, and chooses well."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from qlr.agents.bench.baselines import get_method
from qlr.agents.bench.budget import Budget
from qlr.agents.bench.methods import run_scheduled
from qlr.agents.bench.teacher import (
    FACTORS,
    TEACHER_HORIZON,
    LookaheadTeacher,
    lookahead_choice,
    run_teacher,
)
from qlr.control import reference_lr, scale_lr
from qlr.envs.optimizers import make_optimizer
from qlr.envs.problems import sample_least_squares, sample_mlp, sample_quadratic

HOLD = FACTORS.index(1.0)
PROBLEMS = {
    # eigenvalues log-spaced in [0.01, 1]: plain gradient descent is stable below lr 2
    "quadratic": lambda: sample_quadratic(np.random.default_rng(0), dim=8, cond=100.0),
    "minibatch": lambda: sample_least_squares(np.random.default_rng(2), dim=5, n=64, batch_size=16),
    "mlp": lambda: sample_mlp(np.random.default_rng(3), features=3, hidden=8, n=64, batch_size=16),
}


def advance(problem, optimizer, steps: int) -> list[float]:
    """The loop of `qlr.envs.run.run_inner`: loss and gradient, then the step."""
    losses = []
    for _ in range(steps):
        losses.append(problem.loss_and_grad())
        optimizer.step()
    return losses


def start(family: str, optimizer: str, lr: float):
    problem = PROBLEMS[family]()
    return problem, make_optimizer(optimizer, problem.params, lr)


def assert_same_run(a, b) -> None:
    for p, q in zip(a.params, b.params, strict=True):
        assert torch.equal(p, q) and torch.equal(p.grad, q.grad)
    assert (a.grad_evals, a.func_evals, a.examples_seen) == (
        b.grad_evals,
        b.func_evals,
        b.examples_seen,
    )


def teach(family: str, optimizer: str, lr: float, steps: int, **kwargs):
    """A run of `steps` under the teacher: (teacher, result, problem)."""
    problem, opt = start(family, optimizer, lr)
    teacher = LookaheadTeacher(problem, opt, steps, **kwargs)
    result = run_scheduled(problem, opt, Budget(grad_evals=steps), teacher.step, steps=steps)
    return teacher, result, problem


def constant(family: str, optimizer: str, lr: float, steps: int):
    problem, opt = start(family, optimizer, lr)
    return run_scheduled(problem, opt, Budget(grad_evals=steps))


@pytest.mark.parametrize(
    "family, optimizer, lr",
    [("quadratic", "momentum", 0.05), ("minibatch", "adam", 0.01), ("mlp", "sgd", 0.1)],
)
def test_a_lookahead_leaves_the_live_run_untouched_and_foresees_holding(
    family, optimizer, lr
) -> None:
    live, opt = start(family, optimizer, lr)
    twin, twin_opt = start(family, optimizer, lr)  # never looked ahead from
    advance(live, opt, 7)
    advance(twin, twin_opt, 7)
    choice = lookahead_choice(live, opt, FACTORS, steps=12)
    assert choice.grad_evals == 12 * len(FACTORS) and choice.func_evals == len(FACTORS)
    assert reference_lr(opt) == lr
    assert_same_run(live, twin)  # parameters, gradients and counters as they were
    # ... and from here the live run, held, is exactly the copy that held: same minibatches,
    # same optimizer state, same final loss to the last bit.
    assert advance(live, opt, 12) == advance(twin, twin_opt, 12)
    assert live.loss() == twin.loss() == choice.final_losses[HOLD]
    assert_same_run(live, twin)


def test_the_teacher_run_is_a_run_that_never_looked_ahead() -> None:
    teacher, result, problem = teach("minibatch", "adam", 0.003, steps=60)
    assert 1.0 in teacher.decisions and set(teacher.decisions) != {1.0}  # held and moved
    # Replay its factors with a hook that never looks ahead: the same run, bit for bit.
    twin, opt = start("minibatch", "adam", 0.003)
    factors = iter(teacher.decisions)
    calls = []

    def replay(loss: float) -> None:
        calls.append(loss)
        if len(calls) % 5 == 0 and len(calls) < 60:
            scale_lr(opt, next(factors))

    replayed = run_scheduled(twin, opt, Budget(grad_evals=60), replay, steps=60)
    assert replayed.losses == result.losses and replayed.lrs == result.lrs
    assert replayed.final_loss == result.final_loss
    assert_same_run(problem, twin)


def test_from_a_rate_far_too_low_it_raises_the_rate_and_ends_far_lower() -> None:
    teacher, result, _ = teach("quadratic", "sgd", 0.01, steps=300)
    held = constant("quadratic", "sgd", 0.01, steps=300)
    assert teacher.decisions[0] > 1.0
    assert max(result.lrs) > 0.5
    assert result.final_loss < 1e-3 * held.final_loss


def test_from_a_rate_just_above_stability_it_lowers_the_rate_and_survives() -> None:
    assert constant("quadratic", "sgd", 2.2, steps=300).diverged
    teacher, result, _ = teach("quadratic", "sgd", 2.2, steps=300)
    assert teacher.decisions[0] < 1.0
    assert math.isinf(teacher.choices[0].final_losses[HOLD])  # holding would have diverged
    assert not result.diverged
    assert result.final_loss < 1e-3 * result.initial_loss


@pytest.mark.parametrize(
    "family, optimizer, lr",
    [("quadratic", "sgd", 0.01), ("minibatch", "sgd", 0.005), ("mlp", "adam", 0.01)],
)
def test_it_ends_at_or_below_its_best_option_at_the_first_decision(family, optimizer, lr) -> None:
    teacher, result, _ = teach(family, optimizer, lr, steps=60)
    first = teacher.choices[0]
    assert first.final_losses[first.index] == min(first.final_losses)
    assert result.final_loss <= min(first.final_losses)
    # The last decision's choice is what the live run then did: its copy's loss is the run's.
    last = teacher.choices[-1]
    assert result.final_loss == last.final_losses[last.index]
    assert len(teacher.choices) == 60 // 5 - 1  # no decision after the last step


def test_ties_prefer_holding_the_rate() -> None:
    # At the ceiling, x1, x1.41 and x2 all give the same rate: one copy, three equal losses.
    problem, opt = start("quadratic", "sgd", 0.3)
    advance(problem, opt, 5)
    choice = lookahead_choice(problem, opt, FACTORS, steps=10, max_lr=0.3)
    assert choice.final_losses[HOLD:] == (choice.final_losses[HOLD],) * 3
    assert choice.index == HOLD
    assert choice.grad_evals == 10 * 3  # x0.5, x0.71 and the shared copy


def test_the_method_charges_the_live_run_only_and_reports_the_copies() -> None:
    problem = PROBLEMS["quadratic"]()
    result = get_method("teacher").run(problem, "sgd", 0.01, Budget(grad_evals=40))
    assert result.grad_evals == problem.grad_evals == 40
    # decisions after steps 5, 10, ..., 35; five copies each, run to step 40
    assert result.extra["lookahead_grad_evals"] == 5 * sum(40 - 5 * k for k in range(1, 8))
    assert result.extra["lookahead_func_evals"] == 5 * 7
    assert len(result.extra["decisions"]) == 7


def test_under_a_budget_in_examples_the_copies_look_a_capped_horizon_ahead() -> None:
    steps = 130  # the cap binds on the first three decisions
    problem = PROBLEMS["minibatch"]()
    result = run_teacher(problem, "sgd", 0.01, Budget(examples=16 * steps))
    assert result.grad_evals == steps
    capped, capped_result, _ = teach("minibatch", "sgd", 0.01, steps, horizon=TEACHER_HORIZON)
    assert result.losses == capped_result.losses
    assert result.extra["lookahead_grad_evals"] == capped.extra_grad_evals
    assert max(c.grad_evals for c in capped.choices) <= len(FACTORS) * TEACHER_HORIZON
    full, _, _ = teach("minibatch", "sgd", 0.01, steps)
    assert full.extra_grad_evals > capped.extra_grad_evals


def test_bad_arguments_fail_with_a_reason() -> None:
    problem, opt = start("quadratic", "sgd", 0.1)
    with pytest.raises(ValueError, match="include 1"):
        LookaheadTeacher(problem, opt, 100, factors=(0.5, 2.0))
    with pytest.raises(ValueError, match="positive"):
        LookaheadTeacher(problem, opt, 100, factors=(0.0, 1.0))
    with pytest.raises(ValueError, match="interval >= 1"):
        LookaheadTeacher(problem, opt, 100, interval=0)
    with pytest.raises(ValueError, match="horizon"):
        LookaheadTeacher(problem, opt, 100, horizon=0)
    with pytest.raises(ValueError, match="steps must be at least 1"):
        lookahead_choice(problem, opt, FACTORS, steps=0)


def test_the_teacher_runs_in_compare_and_never_ends_above_the_rate_it_started_from() -> None:
    from qlr.agents.bench.runner import make_specs, run_all
    from qlr.agents.bench.suites import load_suite

    suite = replace(load_suite("compare_tiny"), methods=("constant", "teacher"))
    specs, skipped = make_specs(suite)
    rows = [row for spec_rows, _ in run_all(specs, jobs=1, progress=False) for row in spec_rows]
    taught = [r for r in rows if r["method"] == "teacher"]
    assert not skipped
    assert len(taught) == 2 * len(suite.problems) * len(suite.optimizers) * len(suite.initial_lrs)
    assert all(r["grad_evals"] <= suite.evals for r in taught)
    held = {
        (r["problem"], r["optimizer"], r["lr"], r["budget"]): r
        for r in rows
        if r["method"] == "constant" and r["role"] == "method"
    }
    for r in taught:
        start = held[(r["problem"], r["optimizer"], r["lr"], r["budget"])]
        # Only a start that blows up before the first decision (step 5) can end a teacher run.
        doomed = start["status"] == "diverged" and start["grad_evals"] <= 5
        assert r["status"] == ("diverged" if doomed else "ok"), r
        # Holding throughout is one of its options at every decision, and it sees the future.
        assert r["final_loss"] <= start["final_loss"]
