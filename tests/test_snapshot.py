"""Copies of a live inner run continue bit for bit and never touch the original."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from qlr.control import LRController, reference_lr, scale_lr
from qlr.envs.optimizers import make_optimizer
from qlr.envs.problems import (
    sample_least_squares,
    sample_logistic,
    sample_mlp,
    sample_quadratic,
)
from qlr.envs.snapshot import RunSnapshot, clone_run
from qlr.scheduler import QLRScheduler

# Minibatch problems draw 16 of 64 examples: a permutation lasts 4 steps, so the runs below
# cross epoch boundaries before, at and after the copy.
PROBLEMS = {
    "vector": lambda: sample_quadratic(np.random.default_rng(0), dim=12, cond=100.0),
    "full_batch": lambda: sample_logistic(np.random.default_rng(1), dim=6, n=64),
    "minibatch": lambda: sample_least_squares(np.random.default_rng(2), dim=5, n=64, batch_size=16),
    "mlp": lambda: sample_mlp(np.random.default_rng(3), features=3, hidden=8, n=64, batch_size=16),
}
LRS = {"sgd": 0.05, "momentum": 0.02, "adam": 0.01}
BEFORE, AFTER = 7, 9  # steps before the copy, and after it on both runs


def advance(problem, optimizer, steps: int, controller=None) -> list[float]:
    """The loop of `qlr.envs.run.run_inner`: loss and gradient, step, then the hook."""
    losses = []
    for _ in range(steps):
        loss = problem.loss_and_grad()
        optimizer.step()
        losses.append(loss)
        if controller is not None:
            controller.step(loss)
    return losses


def start(family: str, optimizer: str, lr=None):
    problem = PROBLEMS[family]()
    return problem, make_optimizer(optimizer, problem.params, LRS[optimizer] if lr is None else lr)


def assert_same_run(a, b) -> None:
    """Same parameters, gradients and counters, bit for bit."""
    for p, q in zip(a.params, b.params, strict=True):
        assert torch.equal(p, q)
        assert (p.grad is None) == (q.grad is None)
        assert p.grad is None or torch.equal(p.grad, q.grad)
    assert (a.grad_evals, a.func_evals, a.examples_seen) == (
        b.grad_evals,
        b.func_evals,
        b.examples_seen,
    )


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adam"])
@pytest.mark.parametrize("family", list(PROBLEMS))
def test_a_copy_continues_bit_for_bit_and_leaves_the_original_alone(family, optimizer) -> None:
    original, opt = start(family, optimizer)
    twin, twin_opt = start(family, optimizer)  # the same run, never copied
    assert advance(original, opt, BEFORE) == advance(twin, twin_opt, BEFORE)

    copy, copy_opt, none = clone_run(original, opt)
    assert none is None
    assert all(c is not p for c, p in zip(copy.params, original.params, strict=True))
    assert {id(p) for p in copy_opt.state} <= {id(p) for p in copy.params}

    copied = advance(copy, copy_opt, AFTER)  # the copy runs first ...
    kept = [p.detach().clone() for p in copy.params]
    # ... and the original, stepped afterwards, still follows its never-copied twin
    assert advance(original, opt, AFTER) == advance(twin, twin_opt, AFTER) == copied
    assert_same_run(original, twin)
    assert_same_run(copy, twin)
    assert all(torch.equal(p, k) for p, k in zip(copy.params, kept, strict=True))
    assert copy.loss() == original.loss()


def test_a_tensor_learning_rate_becomes_the_copys_own() -> None:
    original, opt = start("minibatch", "adam", lr=torch.tensor(0.01))
    twin, twin_opt = start("minibatch", "adam", lr=torch.tensor(0.01))
    advance(original, opt, BEFORE)
    advance(twin, twin_opt, BEFORE)
    copy, copy_opt, _ = clone_run(original, opt)
    scale_lr(copy_opt, 0.5)
    assert isinstance(copy_opt.param_groups[0]["lr"], torch.Tensor)
    assert reference_lr(copy_opt) == pytest.approx(0.005)
    assert reference_lr(opt) == pytest.approx(0.01)  # the original's tensor did not move
    scale_lr(twin_opt, 0.5)
    assert advance(copy, copy_opt, AFTER) == advance(twin, twin_opt, AFTER)
    assert_same_run(copy, twin)


def test_a_scheduler_copy_takes_the_same_decisions() -> None:
    def run():
        problem, opt = start("vector", "sgd", lr=1e-3)
        return problem, opt, QLRScheduler(opt)  # the shipped policy

    original, opt, scheduler = run()
    twin, twin_opt, twin_scheduler = run()
    before = 13  # two decisions and part of a block: the copy must carry the block in progress
    advance(original, opt, before, scheduler)
    advance(twin, twin_opt, before, twin_scheduler)
    copy, copy_opt, copy_scheduler = clone_run(original, opt, scheduler)
    assert copy_scheduler.optimizer is copy_opt
    assert copy_scheduler.policy is scheduler.policy  # read-only, shared

    def trace(problem, optimizer, sched, steps=32):
        out = []
        for _ in range(steps):
            advance(problem, optimizer, 1, sched)
            out.append((reference_lr(optimizer), sched.decisions, sched.last_action))
        return out

    copied = trace(copy, copy_opt, copy_scheduler)
    assert trace(original, opt, scheduler) == trace(twin, twin_opt, twin_scheduler) == copied
    assert len({lr for lr, _, _ in copied}) > 1, "the policy never moved the rate: a weak test"
    assert copy_scheduler.state_dict()["steps"] == scheduler.state_dict()["steps"] == before + 32
    assert_same_run(copy, twin)


class Recorder:
    """Stands in for a TensorBoard writer: keeps what it is given."""

    def __init__(self) -> None:
        self.scalars: list[tuple] = []

    def add_scalar(self, *args) -> None:
        self.scalars.append(args)


def test_a_scheduler_copy_does_not_log() -> None:
    problem, opt = start("vector", "sgd", lr=1e-3)
    writer = Recorder()
    scheduler = QLRScheduler(opt, writer=writer)
    advance(problem, opt, 5, scheduler)
    logged = len(writer.scalars)
    assert logged > 0
    copy, copy_opt, copy_scheduler = clone_run(problem, opt, scheduler)
    assert copy_scheduler.writer is None
    advance(copy, copy_opt, 10, copy_scheduler)
    assert len(writer.scalars) == logged


def test_a_controller_copy_observes_the_same_features() -> None:
    def drive(problem, optimizer, controller, steps: int, actions: list[int]) -> list:
        observations = []
        for _ in range(steps):
            loss = problem.loss_and_grad()
            optimizer.step()
            cut = controller.record_step(loss, [p.grad for p in problem.params])
            if cut != 1.0:
                controller.scale(optimizer, cut)
            if controller.decision_due:
                observations.append(controller.observe())
                controller.apply_action(optimizer, actions[len(observations) % len(actions)])
        return observations

    def run():
        problem, opt = start("mlp", "momentum")
        return problem, opt, LRController(action_factors=5, spike_factor=2.0)

    original, opt, controller = run()
    twin, twin_opt, twin_controller = run()
    actions = [4, 2, 0, 3]
    drive(original, opt, controller, 8, actions)
    drive(twin, twin_opt, twin_controller, 8, actions)
    copy, copy_opt, copy_controller = clone_run(original, opt, controller)
    copied = drive(copy, copy_opt, copy_controller, 21, actions)
    twinned = drive(twin, twin_opt, twin_controller, 21, actions)
    kept = drive(original, opt, controller, 21, actions)
    assert len(copied) == 4
    for a, b, c in zip(copied, twinned, kept, strict=True):
        assert np.array_equal(a, b) and np.array_equal(b, c)
    assert reference_lr(copy_opt) == reference_lr(twin_opt) == reference_lr(opt)
    assert_same_run(copy, twin)


class Jitter:
    """A hook with a generator of its own: multiplies the rate by a random factor each step."""

    def __init__(self, optimizer, seed: int) -> None:
        self.optimizer = optimizer
        self.generator = torch.Generator().manual_seed(seed)

    def step(self, loss: float) -> None:
        draw = torch.rand((), generator=self.generator, dtype=torch.float64).item()
        scale_lr(self.optimizer, 0.8 + 0.4 * draw)


def test_a_hook_with_its_own_generator_draws_the_same_numbers_in_the_copy() -> None:
    original, opt = start("minibatch", "sgd")
    twin, twin_opt = start("minibatch", "sgd")
    jitter, twin_jitter = Jitter(opt, seed=5), Jitter(twin_opt, seed=5)
    advance(original, opt, BEFORE, jitter)
    advance(twin, twin_opt, BEFORE, twin_jitter)
    copy, copy_opt, copy_jitter = clone_run(original, opt, jitter)
    assert copy_jitter.optimizer is copy_opt
    assert copy_jitter.generator is not jitter.generator
    copied = advance(copy, copy_opt, AFTER, copy_jitter)
    kept = advance(original, opt, AFTER, jitter)
    assert copied == kept == advance(twin, twin_opt, AFTER, twin_jitter)
    assert reference_lr(copy_opt) == reference_lr(opt) == reference_lr(twin_opt)
    assert_same_run(copy, twin)


def test_a_snapshot_restores_as_often_as_needed() -> None:
    original, opt = start("minibatch", "momentum")
    twin, twin_opt = start("minibatch", "momentum")
    advance(original, opt, BEFORE)
    advance(twin, twin_opt, BEFORE)
    snapshot = RunSnapshot(original, opt)
    advance(original, opt, 3)  # the live run moves on; the snapshot stays where it was
    first, first_opt, _ = snapshot.restore()
    second, second_opt, _ = snapshot.restore()
    assert first.params[0] is not second.params[0]
    a = advance(first, first_opt, AFTER)
    b = advance(second, second_opt, AFTER)
    assert a == b == advance(twin, twin_opt, AFTER)
    assert_same_run(first, twin)
    assert_same_run(second, twin)


def test_a_run_that_is_not_one_run_is_refused() -> None:
    problem, opt = start("vector", "sgd")
    stranger = torch.zeros(3, requires_grad=True)
    mixed = torch.optim.SGD([*problem.params, stranger], lr=0.1)
    with pytest.raises(ValueError, match="not parameters of quadratic"):
        clone_run(problem, mixed)
    other = torch.optim.SGD(problem.params, lr=0.1)
    with pytest.raises(ValueError, match="drives another optimizer"):
        clone_run(problem, opt, QLRScheduler(other))
