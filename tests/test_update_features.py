"""Feature version 4: statistics of the update the optimizer took, for any optimizer."""

import copy
import math

import numpy as np
import pytest
import torch

from qlr import QLRScheduler, slope_rule
from qlr.control import LRController
from qlr.features import (
    FEATURE_NAMES,
    FEATURES_V2,
    GRADIENT_FEATURES,
    UPDATE_FEATURES,
    FeatureTracker,
)

SLOPE = FEATURE_NAMES.index("update_slope")
SPREAD = FEATURE_NAMES.index("update_slope_spread")
ARMIJO = FEATURE_NAMES.index("armijo_ratio")
SIZE = FEATURE_NAMES.index("update_size")
V4 = [n for n in FEATURE_NAMES if n not in GRADIENT_FEATURES and n != "batch_growth"]


def _quadratic_run(
    optimizer: str,
    lr: float,
    scale: float = 1.0,
    copies: int = 1,
    steps: int = 20,
    k: int = 5,
    x0: float = 1.0,
) -> np.ndarray:
    """Observations of `optimizer` on scale * 0.5 * sum(lam * x^2), coordinates repeated."""
    lam = torch.logspace(-1, 0, 8, dtype=torch.float64).repeat(copies)
    x = torch.full((8 * copies,), x0, dtype=torch.float64, requires_grad=True)
    opt = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam}[optimizer]([x], lr=lr)
    tracker = FeatureTracker(interval=k)
    observations = []
    for step in range(1, steps + 1):
        opt.zero_grad()
        loss = scale * 0.5 * (lam * x**2).sum()
        loss.backward()
        opt.step()
        tracker.update(loss.item(), [x.grad], [x])
        if step % k == 0:
            observations.append(tracker.observation())
    return np.array(observations)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_a_tiny_step_reads_r_near_one_and_armijo_near_one(optimizer):
    obs = _quadratic_run(optimizer, lr=1e-5)
    r = 2 * obs[-1, SLOPE]
    armijo = 2 * obs[-1, ARMIJO]
    assert r == pytest.approx(1.0, abs=0.02)
    assert armijo == pytest.approx(1.0, abs=0.02)
    assert obs[-1, SPREAD] < 0.01


def test_past_stability_sgd_reads_r_below_minus_one():
    # lr * (largest curvature 1) = 2.5: the stiffest direction overshoots and grows; r = -1.5.
    obs = _quadratic_run("sgd", lr=2.5)
    assert 2 * obs[-1, SLOPE] < -1.0
    assert 2 * obs[-1, ARMIJO] < 0  # the loss rose along the step


def test_past_stability_adam_reads_overshoot():
    """Adam far above its stable rate jumps across the valley and back: r < -1 on the way out."""
    obs = _quadratic_run("adam", lr=10.0, steps=30)
    slopes = 2 * obs[:, SLOPE]
    assert np.all(slopes < 0)  # every block reads overshoot
    assert slopes.min() < -1.0
    assert np.all(2 * obs[:, ARMIJO] < 0.25)  # no block reads a good Armijo decrease
    calm = _quadratic_run("adam", lr=1e-3, steps=30)
    assert np.all(2 * calm[:, SLOPE] > 0.9)


def test_r_follows_one_minus_lr_times_curvature_for_sgd():
    """On a one-dimensional quadratic with SGD, r = 1 - lr * curvature exactly."""
    for lr in (0.2, 0.9, 1.6):
        x = torch.tensor([1.0], dtype=torch.float64, requires_grad=True)
        opt = torch.optim.SGD([x], lr=lr)
        tracker = FeatureTracker(interval=5)
        for _ in range(5):
            opt.zero_grad()
            loss = 0.5 * (x**2).sum()
            loss.backward()
            opt.step()
            tracker.update(loss.item(), [x.grad], [x])
        assert 2 * tracker.observation()[SLOPE] == pytest.approx(1 - lr, abs=1e-6)


@pytest.mark.parametrize("optimizer,lr", [("sgd", 1.5), ("adam", 0.05)])
def test_update_features_are_invariant_to_loss_scale(optimizer, lr):
    base = _quadratic_run(optimizer, lr)
    for c in (1e-3, 40.0, 1e4):
        scaled_lr = lr / c if optimizer == "sgd" else lr  # Adam's step ignores the loss scale
        obs = _quadratic_run(optimizer, scaled_lr, scale=c)
        np.testing.assert_allclose(obs[:, 13:17], base[:, 13:17], atol=2e-4)


@pytest.mark.parametrize("optimizer,lr", [("sgd", 1.5), ("adam", 0.05)])
def test_update_features_are_invariant_to_parameter_count(optimizer, lr):
    np.testing.assert_allclose(
        _quadratic_run(optimizer, lr, copies=5)[:, 13:17],
        _quadratic_run(optimizer, lr)[:, 13:17],
        atol=1e-6,
    )


def test_update_size_grows_with_the_rate():
    sizes = [_quadratic_run("sgd", lr)[-1, SIZE] for lr in (1e-5, 1e-3, 1e-1)]
    assert sizes[0] < sizes[1] < sizes[2]
    assert -1 < sizes[0] and sizes[2] < 1


def test_update_features_stay_finite_and_bounded_on_wild_input():
    tracker = FeatureTracker(interval=3)
    x = torch.ones(4, requires_grad=True)
    for loss, grad, value in [
        (1.0, torch.ones(4), 1.0),
        (float("nan"), torch.ones(4), 2.0),
        (1e30, torch.full((4,), 1e30), -1e30),
        (0.0, torch.zeros(4), 0.0),
        (2.0, torch.full((4,), float("inf")), 3.0),
        (1.0, torch.ones(4), 1.0),
        (0.5, torch.ones(4), 0.5),
    ]:
        x.data.fill_(value)
        tracker.update(loss, [grad], [x])
        obs = tracker.observation()
        assert np.all(np.isfinite(obs)) and np.all(np.abs(obs) <= 1.0)


def test_frozen_and_half_precision_parameters():
    a = torch.ones(3, dtype=torch.bfloat16, requires_grad=True)
    frozen = torch.ones(2, requires_grad=True)
    opt = torch.optim.SGD([a, frozen], lr=0.01)
    tracker = FeatureTracker(interval=5)
    for _ in range(10):
        opt.zero_grad()
        loss = (a.float() ** 2).sum()
        loss.backward()
        opt.step()
        tracker.update(loss.item(), [a.grad, frozen.grad], [a, frozen])
    obs = tracker.observation()
    assert frozen.grad is None and np.all(np.isfinite(obs))
    assert 2 * obs[SLOPE] == pytest.approx(0.98, abs=0.05)  # r = 1 - 0.01 * 2


def test_a_v4_selection_keeps_no_gradient_and_a_v2_one_no_parameters():
    v4 = LRController(features=V4).tracker
    v2 = LRController(features=FEATURES_V2).tracker
    assert v4.reads_updates and not v4.reads_gradients
    assert v2.reads_gradients and not v2.reads_updates
    assert UPDATE_FEATURES == set(FEATURE_NAMES[13:17])
    x = torch.ones(50, requires_grad=True)
    opt = torch.optim.SGD([x], lr=0.1)
    for _ in range(7):
        opt.zero_grad()
        (x**2).sum().backward()
        opt.step()
        v4.update(1.0, [x.grad], [x])
        v2.update(1.0, [x.grad], [x])
    assert v4.buffer_numel == x.numel()  # the update chain's buffer, no gradient kept
    assert v2._chain.numel == 0  # no copy of the parameters


def test_a_restored_tracker_continues_as_one_that_restarts_its_samples():
    def feed(tracker, x, opt, steps):
        out = []
        for i in range(steps):
            opt.zero_grad()
            loss = ((x - torch.arange(6.0)) ** 2).sum() * (1 + 0.1 * math.sin(i))
            loss.backward()
            opt.step()
            tracker.update(loss.item(), [x.grad], [x])
            if tracker.block_length == tracker.interval:
                out.append(tracker.observation())
        return np.array(out)

    x = torch.zeros(6, requires_grad=True)
    opt = torch.optim.Adam([x], lr=0.1)
    reference = FeatureTracker(interval=3)
    feed(reference, x, opt, 8)  # stops mid-block and mid-sample
    x2 = x.detach().clone().requires_grad_()
    opt2 = torch.optim.Adam([x2], lr=0.1)
    opt2.load_state_dict(copy.deepcopy(opt.state_dict()))
    restored = FeatureTracker(interval=3)
    state = reference.state_dict()
    assert not any(isinstance(v, torch.Tensor) for v in state.values())  # numbers and lists
    restored.load_state_dict(state)
    reference.restart_samples()  # the update sample in progress is formed afresh
    np.testing.assert_array_equal(feed(restored, x2, opt2, 12), feed(reference, x, opt, 12))


def test_the_slope_rule_raises_a_rate_far_too_low_and_lowers_one_far_too_high():
    def run(lr: float, policy=None) -> tuple[list[float], float]:
        """The rate after each decision, and the final loss."""
        x = torch.ones(8, dtype=torch.float64, requires_grad=True)
        lam = torch.logspace(-1, 0, 8, dtype=torch.float64)
        opt = torch.optim.SGD([x], lr=lr)
        scheduler = QLRScheduler(opt, policy=slope_rule()) if policy is None else None
        rates = []
        for _ in range(40):
            opt.zero_grad()
            loss = 0.5 * (lam * x**2).sum()
            loss.backward()
            opt.step()
            if scheduler is not None:
                scheduler.step(loss)
                if scheduler.controller.tracker.block_length == 0:
                    rates.append(scheduler.get_last_lr()[0])
        return rates, float(0.5 * (lam * x.detach() ** 2).sum())

    low, _ = run(1e-4)
    assert low == pytest.approx([1e-4 * 2 ** (i / 2) for i in range(1, 9)])  # r stays near 1
    high, loss = run(2.5)  # lr x largest curvature = 2.5: the stiffest directions grow
    assert high[0] == 1.25  # r < -0.9 at the first decision: halved, now stable
    _, constant_loss = run(2.5, policy="none")
    assert loss < 1e-3 < constant_loss


def test_slope_rule_checks_its_arguments():
    with pytest.raises(ValueError, match="lower_below < raise_above"):
        slope_rule(raise_above=-1.0, lower_below=0.5)
    with pytest.raises(ValueError, match="up > 1"):
        slope_rule(up=0.9)
    with pytest.raises(ValueError, match="interval must be a positive integer"):
        slope_rule(interval=0)
