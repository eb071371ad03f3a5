"""Tests for building the inner optimisers by name."""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest
import torch

from qlr.envs import LearningRateEnv
from qlr.envs.optimizers import OPTIMIZERS, ClippedAdamW, ClippedSGD, make_optimizer
from qlr.envs.problems import sample_deep_linear, sample_mlp, sample_quadratic

EXPECTED_CLASSES = {
    "sgd": torch.optim.SGD,
    "momentum": torch.optim.SGD,
    "nesterov": torch.optim.SGD,
    "adagrad": torch.optim.Adagrad,
    "rmsprop": torch.optim.RMSprop,
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "momentum_wd": torch.optim.SGD,
    "adam95": torch.optim.Adam,
    "adamw95_clip": ClippedAdamW,
}
NEW = ("momentum_wd", "adam95", "adamw95_clip")


def test_names_are_the_documented_ones():
    old = ("sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "adamw")
    assert OPTIMIZERS == (*old, *NEW)  # new names only ever appended


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_every_optimizer_takes_a_descent_step(name):
    problem = sample_quadratic(np.random.default_rng(0), dim=20, cond=10.0)
    opt = make_optimizer(name, problem.params, lr=1e-3)
    assert type(opt) is EXPECTED_CLASSES[name]
    assert opt.param_groups[0]["lr"] == 1e-3
    before = problem.loss_and_grad()
    opt.step()
    after = problem.loss()
    assert after < before


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_every_optimizer_trains_a_module_problem(name):
    problem = sample_mlp(np.random.default_rng(0), features=3, hidden=8, n=64)
    opt = make_optimizer(name, problem.params, lr=1e-2)
    start = problem.loss()
    for _ in range(20):
        problem.loss_and_grad()
        opt.step()
    assert problem.loss() < start


def test_momentum_variants_and_overrides():
    params = [torch.zeros(3, requires_grad=True)]
    assert make_optimizer("sgd", params, 0.1).param_groups[0]["momentum"] == 0
    group = make_optimizer("momentum", params, 0.1).param_groups[0]
    assert group["momentum"] == 0.9 and not group["nesterov"]
    group = make_optimizer("nesterov", params, 0.1).param_groups[0]
    assert group["momentum"] == 0.9 and group["nesterov"]
    assert make_optimizer("momentum", params, 0.1, momentum=0.5).param_groups[0]["momentum"] == 0.5
    assert make_optimizer("adam", params, 0.1, betas=(0.5, 0.9)).param_groups[0]["betas"] == (
        0.5,
        0.9,
    )
    # the CPU fast path is a default, not a requirement
    assert make_optimizer("adam", params, 0.1, foreach=True).param_groups[0]["foreach"]


def test_defaults_match_torch_defaults():
    params = [torch.zeros(3, requires_grad=True)]
    ours = make_optimizer("adam", params, 1e-3).param_groups[0]
    theirs = torch.optim.Adam(params, lr=1e-3).param_groups[0]
    for key in ("betas", "eps", "weight_decay", "amsgrad"):
        assert ours[key] == theirs[key]
    assert make_optimizer("adamw", params, 1e-3).param_groups[0]["weight_decay"] == 0.01


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match="'lion'") as err:
        make_optimizer("lion", [torch.zeros(1, requires_grad=True)], 0.1)
    assert all(name in str(err.value) for name in OPTIMIZERS)


@pytest.mark.parametrize(
    "name, kwargs",
    [("sgd", {"betas": (0.9, 0.99)}), ("adam", {"momentum": 0.9}), ("nesterov", {"momentum": 0})],
)
def test_bad_kwargs_name_the_optimizer(name, kwargs):
    with pytest.raises(ValueError, match=f"'{name}'"):
        make_optimizer(name, [torch.zeros(1, requires_grad=True)], 0.1, **kwargs)


# --------------------------------------------------------------------------- recipes, clipping


def test_recipes_people_train_with():
    params = [torch.zeros(3, requires_grad=True)]
    group = make_optimizer("momentum_wd", params, 0.1).param_groups[0]
    assert group["momentum"] == 0.9 and group["weight_decay"] == 5e-4 and not group["nesterov"]
    group = make_optimizer("adam95", params, 0.1).param_groups[0]
    assert group["betas"] == (0.9, 0.95) and group["weight_decay"] == 0
    opt = make_optimizer("adamw95_clip", params, 0.1)
    assert isinstance(opt, torch.optim.AdamW) and opt.max_grad_norm == 1.0
    assert opt.param_groups[0]["betas"] == (0.9, 0.95)
    assert opt.param_groups[0]["weight_decay"] == 0.1
    # the clipping a name comes with can be turned off, or set on any other name
    assert type(make_optimizer("adamw95_clip", params, 0.1, clip_grad_norm=None)) is (
        torch.optim.AdamW
    )
    assert make_optimizer("sgd", params, 0.1, clip_grad_norm=2.0).max_grad_norm == 2.0
    # the older names are untouched
    assert type(make_optimizer("adamw", params, 0.1)) is torch.optim.AdamW


def test_weight_decay_pulls_the_weights_in_without_a_gradient():
    w = torch.ones(4, requires_grad=True)
    opt = make_optimizer("momentum_wd", [w], 1.0)
    w.grad = torch.zeros(4)
    opt.step()
    torch.testing.assert_close(w.detach(), torch.full((4,), 1.0 - 5e-4))


def test_clipping_rescales_the_global_norm_before_the_step():
    a, b = torch.zeros(3, requires_grad=True), torch.zeros(4, requires_grad=True)
    opt = make_optimizer("sgd", [a, b], 1.0, clip_grad_norm=0.5)
    assert isinstance(opt, ClippedSGD)
    a.grad, b.grad = torch.full((3,), 3.0), torch.full((4,), 4.0)  # joint norm sqrt(27 + 64)
    opt.step()
    norm = torch.cat([a.grad, b.grad]).norm()
    assert norm.item() == pytest.approx(0.5, rel=1e-5)  # the gradients seen after the step
    step = torch.cat([a.detach(), b.detach()])
    assert step.norm().item() == pytest.approx(0.5, rel=1e-5)
    assert torch.allclose(step[:3], step[:3][0]) and step[0] / step[3] == pytest.approx(0.75)
    # below the threshold nothing changes
    a.grad, b.grad = torch.full((3,), 0.01), torch.full((4,), 0.01)
    opt.step()
    assert torch.equal(a.grad, torch.full((3,), 0.01))


def test_clipping_keeps_a_run_finite_where_nesterov_overflows():
    # the deep linear net overflows under Nesterov at a high rate; clipped, the steps stay short
    losses = {}
    for clip in (None, 1.0):
        problem = sample_deep_linear(np.random.default_rng(0), depth=6)
        opt = make_optimizer("nesterov", problem.params, 1.0, clip_grad_norm=clip)
        for _ in range(30):
            loss = problem.loss_and_grad()
            if not np.isfinite(loss):
                break
            opt.step()
        losses[clip] = problem.loss()
    assert not np.isfinite(losses[None]) or losses[None] > 1e6
    assert np.isfinite(losses[1.0])


def test_clipped_optimizers_copy_pickle_restore_and_take_a_closure():
    w = torch.ones(3, requires_grad=True)
    opt = make_optimizer("adamw95_clip", [w], 0.1)
    w.grad = torch.full((3,), 10.0)
    opt.step()
    twin = copy.deepcopy(opt)
    assert type(twin) is ClippedAdamW and twin.max_grad_norm == 1.0
    thawed = pickle.loads(pickle.dumps(opt))
    assert type(thawed) is ClippedAdamW and thawed.max_grad_norm == 1.0
    state = copy.deepcopy(opt.state_dict())
    opt.load_state_dict(state)
    assert opt.max_grad_norm == 1.0

    def closure():
        w.grad = torch.full((3,), 10.0)
        return 7.0

    assert opt.step(closure) == 7.0
    assert w.grad.norm().item() == pytest.approx(1.0, rel=1e-5)


@pytest.mark.parametrize("bad", [0.0, -1.0, float("inf"), float("nan"), "big"])
def test_bad_clip_norm_names_the_optimizer(bad):
    with pytest.raises(ValueError, match="'adam'"):
        make_optimizer("adam", [torch.zeros(1, requires_grad=True)], 0.1, clip_grad_norm=bad)


def test_the_environment_runs_the_new_optimizers_and_clipping_by_keyword():
    env = LearningRateEnv(
        problem="quadratic",
        optimizer=list(NEW),
        optimizer_kwargs={"adam95": {"clip_grad_norm": 1.0}},
        horizon=2,
    )
    for seed in range(6):
        env.reset(seed=seed)
        assert env.optimizer_name in NEW
        if env.optimizer_name == "adam95":
            assert env.optimizer.max_grad_norm == 1.0
        for _ in range(2):
            obs, reward, *_ = env.step(1)
            assert np.isfinite(reward) and env.observation_space.contains(obs)


def test_a_cloned_clipped_run_continues_bit_for_bit():
    from qlr.envs.snapshot import clone_run

    problem = sample_mlp(np.random.default_rng(0), features=3, hidden=8, n=64, batch_size=16)
    opt = make_optimizer("adamw95_clip", problem.params, 0.05, clip_grad_norm=0.1)

    def steps(problem, opt, k):
        losses = []
        for _ in range(k):
            losses.append(problem.loss_and_grad())
            opt.step()
        return losses

    steps(problem, opt, 3)
    twin_problem, twin_opt, _ = clone_run(problem, opt)
    assert type(twin_opt) is ClippedAdamW and twin_opt.max_grad_norm == 0.1
    assert steps(problem, opt, 6) == steps(twin_problem, twin_opt, 6)
