"""Policy improvement from paired rollouts: copies of one run per action, a fit of the advantages
over the slope rule, a policy file that defers to the rule below a margin."""

import copy
from pathlib import Path

import numpy as np
import pytest
from conftest import RULE_ENV as ENV
from conftest import V4_FEATURES as V4

from qlr.agents.cli import main
from qlr.agents.learn.config import load_config
from qlr.agents.learn.demonstrations import make_demonstrator
from qlr.agents.learn.rollouts import (
    LABELS_FILE,
    FitSettings,
    RolloutLabels,
    RolloutSettings,
    collect_labels,
    improved_policy,
    labels_for,
    paired_returns,
    rule_actor,
)
from qlr.envs.env import LearningRateEnv
from qlr.policy import config_hash, load_policy, save_policy

FAST = FitSettings(steps=1200)


def _rule(env: LearningRateEnv):
    return rule_actor(tuple(env.feature_names), env.controller.action_factors)


def test_the_rule_actor_is_the_rule_demonstrator():
    env = LearningRateEnv(**ENV)
    demonstrator, actor = make_demonstrator("rule"), _rule(env)
    obs = np.zeros(len(V4), dtype=np.float32)
    for slope in np.linspace(-0.99, 0.99, 41) + 0.003:  # off the rule's two thresholds
        obs[V4.index("update_slope")] = slope
        assert actor(obs) == demonstrator(env, obs)


def test_paired_returns_repeat_exactly_and_leave_the_live_run_alone():
    env = LearningRateEnv(**ENV)
    env.reset(seed=3)
    for _ in range(2):
        env.step(2)
    untouched = copy.deepcopy(env)
    rule = _rule(env)
    first = paired_returns(env, 3, rule)
    assert np.array_equal(first, paired_returns(env, 3, rule))  # same minibatches, same steps
    assert len(np.unique(first)) > 1  # and the actions do differ
    # Each label is what that action followed by the rule earns on the live run itself.
    obs, total, *_ = untouched.step(4)
    for _ in range(2):
        obs, reward, *_ = untouched.step(rule(obs))
        total += reward
    assert first[4] == pytest.approx(total, rel=1e-6)
    after, expected = env.step(1), copy.deepcopy(env)  # the live env went on as if never copied
    assert np.isfinite(after[1]) and expected.decisions == 3


def test_paired_returns_tell_a_run_far_too_slow_to_raise_the_rate():
    env = LearningRateEnv(problem="quadratic", optimizer="sgd", features=V4, action_factors=5)
    env.reset(seed=0, options={"lr": 1e-5})
    returns = paired_returns(env, 4, _rule(env))
    assert list(np.argsort(returns)) == [0, 1, 2, 3, 4]  # x0.5 worst ... x2 best


def test_labels_do_not_depend_on_the_number_of_workers_and_round_trip(tmp_path: Path):
    settings = RolloutSettings(episodes=3, horizon=2, label_fraction=0.3, seed=5)
    one = collect_labels(ENV, settings, jobs=1)
    two = collect_labels(ENV, settings, jobs=2)
    assert len(one) > 3 and one.returns.shape == (len(one), 5)
    np.testing.assert_array_equal(np.sort(one.returns, axis=0), np.sort(two.returns, axis=0))
    advantages = one.advantages()
    assert np.all(advantages[np.arange(len(one)), one.rule_actions] == 0)
    again = RolloutLabels.load(one.save(tmp_path / "labels.npz"))
    np.testing.assert_array_equal(again.observations, one.observations)
    assert again.rule_actions.dtype == np.int64


def test_labels_are_reused_only_when_made_with_the_same_settings(tmp_path: Path):
    settings = RolloutSettings(episodes=1, horizon=2, label_fraction=0.5)
    labels = labels_for(tmp_path, ENV, settings, jobs=1)
    made = (tmp_path / LABELS_FILE).stat().st_mtime_ns
    again = labels_for(tmp_path, ENV, settings, jobs=1)
    assert (tmp_path / LABELS_FILE).stat().st_mtime_ns == made
    np.testing.assert_array_equal(again.returns, labels.returns)
    labels_for(tmp_path, ENV, RolloutSettings(episodes=1, horizon=3, label_fraction=0.5), 1)
    assert (tmp_path / LABELS_FILE).stat().st_mtime_ns != made


def _synthetic_labels(features: tuple[str, ...], n: int = 2000) -> RolloutLabels:
    """Raising x2 beats the rule (which holds: the slope reads 0) by 1 where one feature is
    positive and loses 1 where it is negative; every other action loses 0.5."""
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(n, len(features))).astype(np.float32) * 3 + 1
    obs[:, features.index("update_slope")] = 0.0
    signal = obs[:, features.index("loss_noise")]
    returns = np.full((n, 5), -0.5, dtype=np.float32)
    returns[:, 2] = 0.0
    returns[:, 4] = np.where(signal > 1, 1.0, -1.0)
    return RolloutLabels(obs, returns, np.full(n, 2, dtype=np.int64))


def test_the_fitted_policy_leaves_the_rule_only_where_the_labels_say(tmp_path: Path):
    config = load_config("default").to_dict()
    features = tuple(config["env"]["features"])
    labels = _synthetic_labels(features)
    settings = RolloutSettings(seed=1)
    policy = load_policy(
        save_policy(improved_policy(labels, config, settings, 0.3, FAST), tmp_path / "p.qlr")
    )
    meta = policy.metadata
    assert meta.defer.margin == 0.3 and meta.spike_factor is None and meta.obs_mean is None
    assert (
        meta.extra["learner"] == "paired_rollouts"
        and meta.extra["train_config"]["rollouts"]["seed"] == 1
    )
    assert meta.extra["config_hash"] != config_hash(config)  # not the DQN recipe's
    signal = labels.observations[:, features.index("loss_noise")]
    actions = np.array([policy.act(o) for o in labels.observations])
    clear = np.abs(signal - 1) > 0.5
    assert np.mean(actions[clear & (signal > 1)] == 4) > 0.95
    assert np.mean(actions[clear & (signal < 1)] == 2) > 0.95
    # Above every advantage the labels hold, the margin leaves the rule in charge everywhere.
    strict = improved_policy(labels, config, settings, 2.0, FAST)
    assert {strict.act(o) for o in labels.observations} == {2}


def test_improve_refuses_bad_settings_by_name(capsys):
    with pytest.raises(SystemExit) as raised:
        main(["improve", "/tmp/never", "--margin", "-1"])
    assert raised.value.code == 2 and "margin" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["improve", "/tmp/never", "--label-fraction", "0"])
    assert "label_fraction" in capsys.readouterr().err


def test_a_second_round_follows_a_policy_file_that_reads_what_the_env_observes(tmp_path: Path):
    config = load_config("default").to_dict()
    features = tuple(config["env"]["features"])
    fitted = improved_policy(_synthetic_labels(features, 300), config, RolloutSettings(), 0.3, FAST)
    path = save_policy(fitted, tmp_path / "round1.qlr")
    env = {**ENV, "features": list(features)}
    settings = RolloutSettings(episodes=1, horizon=2, label_fraction=0.5, follow=str(path))
    labels = collect_labels(env, settings)
    assert len(labels) > 0 and np.all(np.isfinite(labels.returns))
    with pytest.raises(ValueError, match="other features"):
        collect_labels({**env, "features": list(reversed(features))}, settings)
