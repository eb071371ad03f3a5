"""Known budgets: the progress feature, in the scheduler and in the environment."""

import numpy as np
import pytest
import torch

from qlr import QLRScheduler
from qlr.envs import LearningRateEnv
from qlr.features import FEATURE_NAMES

PROGRESS = ("loss_change_block", "progress", "budget_known")


def _run(scheduler: QLRScheduler, x: torch.Tensor, steps: int) -> list[np.ndarray]:
    optimizer = scheduler.optimizer
    seen = []
    for _ in range(steps):
        optimizer.zero_grad()
        loss = (x**2).sum()
        loss.backward()
        optimizer.step()
        scheduler.step(loss)
        if scheduler.controller.tracker.block_length == 0:
            seen.append(scheduler.last_observation.copy())
    return seen


def test_progress_rises_to_one_and_stays_there_past_the_budget(make_policy):
    x = torch.ones(3, requires_grad=True)
    policy = make_policy(favour=1, interval=5, features=PROGRESS)
    scheduler = QLRScheduler(torch.optim.SGD([x], lr=0.01), policy=policy, total_steps=20)
    seen = _run(scheduler, x, 40)  # twice the budget
    progress = [obs[1] for obs in seen]
    assert progress[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert progress[4:] == [1.0] * 4  # past the budget: still 1, still working
    assert all(obs[2] == 1.0 for obs in seen) and all(np.isfinite(obs).all() for obs in seen)


def test_without_a_budget_progress_reads_zero_and_unknown(make_policy):
    x = torch.ones(3, requires_grad=True)
    policy = make_policy(favour=1, interval=5, features=PROGRESS)
    seen = _run(QLRScheduler(torch.optim.SGD([x], lr=0.01), policy=policy), x, 15)
    assert all(obs[1] == 0.0 and obs[2] == 0.0 for obs in seen)


def test_a_state_dict_round_trip_keeps_the_budget_and_the_progress(make_policy):
    policy = make_policy(favour=1, interval=5, features=PROGRESS)
    x = torch.ones(3, requires_grad=True)
    first = QLRScheduler(torch.optim.SGD([x], lr=0.01), policy=policy, total_steps=50)
    _run(first, x, 12)
    state = first.state_dict()
    y = x.detach().clone().requires_grad_()
    restored = QLRScheduler(torch.optim.SGD([y], lr=0.01), policy=policy)  # no budget given
    restored.load_state_dict(state)
    assert restored.controller.total_steps == 50
    ahead, again = _run(first, x, 8), _run(restored, y, 8)
    assert [obs[1] for obs in again] == [obs[1] for obs in ahead] == [0.3, 0.4]


@pytest.mark.parametrize("bad", [0, -5, 2.5, 100.0, "100", True])
def test_a_budget_that_is_not_a_positive_integer_is_refused(make_policy, bad):
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.ones(1))], lr=0.1)
    with pytest.raises(ValueError, match="total_steps must be a positive integer or None"):
        QLRScheduler(optimizer, policy=make_policy(), total_steps=bad)


def test_older_policies_ignore_a_budget(make_policy):
    """A policy that does not read progress runs as before when a budget is given."""
    policy = make_policy(seed=3, interval=3)  # the version-2 features
    x, y = torch.ones(3, requires_grad=True), torch.ones(3, requires_grad=True)
    with_budget = QLRScheduler(torch.optim.SGD([x], lr=0.05), policy=policy, total_steps=9)
    without = QLRScheduler(torch.optim.SGD([y], lr=0.05), policy=policy)
    _run(with_budget, x, 12)
    _run(without, y, 12)
    assert with_budget.get_last_lr() == without.get_last_lr()


def test_the_env_draws_episode_lengths_and_tells_the_budget_when_asked():
    names = [*FEATURE_NAMES[:8], "progress", "budget_known"]
    env = LearningRateEnv(problem="quadratic", horizon=(5, 500), budget_known=0.5, features=names)
    lengths, known = set(), []
    for seed in range(40):
        obs, info = env.reset(seed=seed)
        lengths.add(info["horizon"])
        known.append(info["total_steps"] is not None)
        assert info["total_steps"] in (None, (info["horizon"] + 1) * 5)
        assert obs[-1] == (1.0 if known[-1] else 0.0)
        if known[-1]:  # the reset's block: one of the episode's horizon + 1
            assert obs[-2] == pytest.approx(1 / (info["horizon"] + 1))
    assert min(lengths) < 20 and max(lengths) > 100  # two orders of magnitude are drawn
    assert 0.2 < np.mean(known) < 0.8
    obs, info = env.reset(seed=0, options={"horizon": 3, "budget_known": True})
    done, steps = False, 0
    while not done:
        obs, _, terminated, truncated, info = env.step(1)
        done, steps = terminated or truncated, steps + 1
    assert truncated and steps == 3 and obs[-2] == 1.0  # the budget is spent at truncation


def test_budget_options_are_checked():
    with pytest.raises(ValueError, match="horizon must be a positive integer or a pair"):
        LearningRateEnv(horizon=(50, 10))
    with pytest.raises(ValueError, match="budget_known must be a probability"):
        LearningRateEnv(budget_known=1.5)


def test_the_env_with_lengths_and_budgets_passes_the_checkers():
    from gymnasium.utils.env_checker import check_env
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    names = [*FEATURE_NAMES[:8], "update_slope", "progress", "budget_known"]
    env = LearningRateEnv(problem="quadratic", horizon=(3, 30), budget_known=0.5, features=names)
    check_env(env, skip_render_check=True)
    sb3_check_env(LearningRateEnv(problem="quadratic", horizon=(3, 30), features=names))
