"""Tests for building the inner optimisers by name."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from qlr.envs.optimizers import OPTIMIZERS, make_optimizer
from qlr.envs.problems import sample_mlp, sample_quadratic

EXPECTED_CLASSES = {
    "sgd": torch.optim.SGD,
    "momentum": torch.optim.SGD,
    "nesterov": torch.optim.SGD,
    "adagrad": torch.optim.Adagrad,
    "rmsprop": torch.optim.RMSprop,
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
}


def test_names_are_the_documented_ones():
    assert OPTIMIZERS == ("sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "adamw")


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
