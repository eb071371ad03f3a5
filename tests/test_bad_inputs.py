"""QLRScheduler under bad or unusual input: each case works or fails clearly, and none corrupts
the optimizer. The table of bad inputs on docs/bad-input.md lists these cases."""

import copy
import math

import numpy as np
import pytest
import torch

from qlr import QLRScheduler


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))


def _step(model, opt, sched, x, y):
    opt.zero_grad()
    loss = torch.nn.functional.mse_loss(model(x), y)
    loss.backward()
    opt.step()
    sched.step(loss)
    return loss


def _same_state(a: dict, b: dict) -> bool:
    return a["param_groups"] == b["param_groups"] and all(
        all(torch.equal(a["state"][k][n], b["state"][k][n]) for n in a["state"][k])
        for k in a["state"]
    )


@pytest.mark.parametrize(
    "loss, error, fragment",
    [
        (torch.ones(2, 2), ValueError, "scalar"),
        ("1.0", TypeError, "float"),
        ([1.0], TypeError, "float"),
        (None, TypeError, "needs the loss"),
        (True, TypeError, "float"),
    ],
)
def test_bad_losses_raise_and_leave_the_optimizer_untouched(make_policy, loss, error, fragment):
    model = _model()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, y = torch.randn(16, 4), torch.randn(16, 1)
    sched = QLRScheduler(opt, policy=make_policy(interval=1))
    _step(model, opt, sched, x, y)
    before, steps = copy.deepcopy(opt.state_dict()), sched.steps
    with pytest.raises(error, match=fragment):
        sched.step(loss)
    assert _same_state(opt.state_dict(), before) and sched.steps == steps


def test_frozen_layers_without_gradients(make_policy):
    model = _model()
    model[0].requires_grad_(False)
    opt = torch.optim.SGD(model.parameters(), lr=1e-2)
    sched = QLRScheduler(opt, policy=make_policy(favour=2, interval=2))
    x, y = torch.randn(16, 4), torch.randn(16, 1)
    for _ in range(4):
        _step(model, opt, sched, x, y)
    assert sched.get_last_lr() == [pytest.approx(4e-2)]
    assert np.all(np.isfinite(sched.last_observation))


def test_sparse_gradients(make_policy):
    torch.manual_seed(0)
    emb = torch.nn.Embedding(50, 4, sparse=True)
    opt = torch.optim.SGD(emb.parameters(), lr=0.1)
    sched = QLRScheduler(opt, policy=make_policy(seed=1, interval=2))
    idx = torch.tensor([1, 3, 5])
    for _ in range(4):
        opt.zero_grad()
        loss = emb(idx).pow(2).sum()
        loss.backward()
        assert emb.weight.grad.is_sparse
        opt.step()
        sched.step(loss)
    assert sched.decisions == 2 and np.all(np.isfinite(sched.last_observation))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_parameters(make_policy, dtype):
    model = _model().to(dtype)
    opt = torch.optim.SGD(model.parameters(), lr=1e-2)
    sched = QLRScheduler(opt, policy=make_policy(seed=2, interval=2))
    x, y = torch.randn(16, 4, dtype=dtype), torch.randn(16, 1, dtype=dtype)
    for _ in range(4):
        _step(model, opt, sched, x, y)
    assert sched.decisions == 2 and np.all(np.isfinite(sched.last_observation))


def test_zero_learning_rate_is_refused_at_construction(make_policy):
    opt = torch.optim.SGD(_model().parameters(), lr=0.0)
    with pytest.raises(ValueError, match="learning rate is 0.0"):
        QLRScheduler(opt, policy=make_policy())


def test_param_group_added_after_construction(make_policy):
    model = _model()
    head = torch.nn.Linear(1, 1)
    opt = torch.optim.SGD(model.parameters(), lr=1e-2)
    sched = QLRScheduler(opt, policy=make_policy(favour=2, interval=2))
    x, y = torch.randn(16, 4), torch.randn(16, 1)
    _step(model, opt, sched, x, y)
    opt.add_param_group({"params": head.parameters(), "lr": 1e-3})
    for _ in range(3):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(head(model(x)), y)
        loss.backward()
        opt.step()
        sched.step(loss)
    first, second = sched.get_last_lr()
    assert first == pytest.approx(4e-2) and second == pytest.approx(4e-3)
    assert np.all(np.isfinite(sched.last_observation))


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_nonfinite_loss_and_gradients_never_raise(make_policy, bad):
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=1e-2)
    sched = QLRScheduler(opt, policy=make_policy(favour=1, interval=1))
    for p in model.parameters():
        p.grad = torch.full_like(p, bad)
    sched.step(bad)
    sched.step(torch.tensor(bad))
    assert sched.get_last_lr() == [pytest.approx(1e-4)]
    assert np.all(np.isfinite(sched.last_observation))
