"""DQfD: demonstrations from the slope rule and the lookahead teacher, kept for the whole run."""

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import RULE_ENV as ENV
from conftest import V4_FEATURES as V4

from qlr.agents.learn.demonstrations import (
    Demonstrations,
    collect,
    demonstration_buffer,
    make_demonstrator,
    nearest_action,
)
from qlr.envs.env import LearningRateEnv


def test_nearest_action_maps_the_rules_factors_onto_the_envs():
    env = LearningRateEnv(**ENV)  # factors 0.5, 0.71, 1, 1.41, 2
    assert [nearest_action(env, f) for f in (0.5, 1.0, 2**0.5, 2.0)] == [0, 2, 3, 4]
    batch = LearningRateEnv(problem="train_stochastic", batch_factors=(1.0, 2.0), features=V4)
    assert nearest_action(batch, 2**0.5) == 2 * 2  # rate factor 1 of (0.5, 1, 2), batch held


def test_the_rule_demonstrator_acts_on_the_observed_slope():
    env = LearningRateEnv(**ENV)
    act = make_demonstrator("rule")
    obs = np.zeros(len(V4), dtype=np.float32)
    slope = V4.index("update_slope")
    obs[slope] = 0.45  # r = 0.9: steps too short
    assert act(env, obs) == 3  # x1.41
    obs[slope] = -0.5  # r = -1: the loss rose along the step
    assert act(env, obs) == 0  # x0.5
    obs[slope] = 0.0
    assert act(env, obs) == 2  # hold


def test_the_rule_demonstrator_needs_the_slope_feature():
    env = LearningRateEnv(problem="quadratic")  # the version-2 features
    with pytest.raises(ValueError, match="reads 'update_slope'"):
        make_demonstrator("rule")(env, np.zeros(11, dtype=np.float32))
    with pytest.raises(ValueError, match="unknown demonstrator 'oracle'"):
        make_demonstrator("oracle")


def test_collection_does_not_depend_on_the_number_of_workers(tmp_path: Path):
    one = collect(ENV, "rule", 4, seed=11, jobs=1)
    two = collect(ENV, "rule", 4, seed=11, jobs=2)
    assert one.episodes == 4 and len(one) == len(two)
    np.testing.assert_array_equal(np.sort(one.rewards), np.sort(two.rewards))
    path = one.save(tmp_path / "demos.npz")
    again = Demonstrations.load(path)
    np.testing.assert_array_equal(again.observations, one.observations)
    assert again.actions.dtype == np.int64 and again.truncated.sum() + again.terminated.sum() == 4


def test_the_teacher_demonstrator_picks_the_lookahead_best():
    env = LearningRateEnv(problem="quadratic", optimizer="sgd", features=V4, horizon=6)
    env.reset(seed=0, options={"lr": 1e-5})  # far too low: every raise pays
    action = make_demonstrator("teacher")(env, np.zeros(len(V4), dtype=np.float32))
    assert env.controller.action_factors[action] == 2.0


def test_n_step_returns_stop_at_the_end_of_each_episode():
    env = LearningRateEnv(**ENV)
    demos = collect(ENV, "rule", 3, seed=5)
    buffer = demonstration_buffer(demos, env.observation_space, env.action_space, 4, 0.9)
    data = buffer._get_samples(np.arange(len(demos)))
    ends = np.flatnonzero(demos.terminated | demos.truncated)
    for end in ends:  # the last transition of an episode: its own reward, one step
        assert data.rewards[end].item() == pytest.approx(float(demos.rewards[end]), abs=1e-6)
        if demos.truncated[end]:
            assert data.dones[end].item() == 0.0  # a truncation bootstraps
    first = 0  # a transition deep inside an episode sums four discounted rewards
    expected = sum(0.9**i * demos.rewards[first + i] for i in range(4))
    assert first + 3 < ends[0]
    assert data.rewards[first].item() == pytest.approx(float(expected), rel=1e-5)
    assert data.discounts[first].item() == pytest.approx(0.9**4)


def test_pretraining_makes_the_network_act_like_the_demonstrator():
    from stable_baselines3.common.vec_env import DummyVecEnv

    from qlr.agents.learn.dqfd import DQfD

    env = DummyVecEnv([lambda: LearningRateEnv(**ENV)])
    demos = collect(ENV, "rule", 6, seed=1)
    buffer = demonstration_buffer(demos, env.observation_space, env.action_space, 3, 0.9)
    model = DQfD(
        "MlpPolicy",
        env,
        demonstrations=buffer,
        learning_rate=3e-3,
        batch_size=64,
        policy_kwargs={"net_arch": [32, 32]},
        seed=0,
        device="cpu",
    )
    obs = torch.as_tensor(demos.observations)
    before = (model.q_net(obs).argmax(dim=1).numpy() == demos.actions).mean()
    stats = model.pretrain(1500)
    after = (model.q_net(obs).argmax(dim=1).numpy() == demos.actions).mean()
    assert after > 0.9 > before
    assert stats["agreement"] > 0.9 and stats["margin_loss"] < 0.2
    # Interaction keeps the demonstrations: the margin loss is logged on every training call.
    model.learning_starts = 10
    model.learn(60)
    assert model.logger.name_to_value["train/demo_agreement"] > 0.5
    assert "train/margin_loss" in model.logger.name_to_value


def test_a_config_with_demonstrations_trains_resumes_and_exports(tmp_path: Path):
    from qlr.agents.learn.config import load_config
    from qlr.agents.learn.train import DEMONSTRATIONS_FILE, train
    from qlr.policy import load_policy

    overrides = [
        "env.features=[" + ",".join(V4) + "]",
        "demonstrations.source=rule",
        "demonstrations.episodes=4",
        "demonstrations.pretrain_steps=50",
        "demonstrations.jobs=1",
        "dqn.n_steps=3",
        "total_timesteps=160",
        "checkpoint_freq=80",
        "eval_freq=0",
        "final_eval=null",
    ]
    config = load_config("tiny", overrides)
    run = tmp_path / "run"
    lines: list[str] = []
    train(config, run, progress_bar=False, echo=lines.append)
    assert (run / DEMONSTRATIONS_FILE).is_file()
    assert any("rule transitions" in line for line in lines)
    assert any("pretrained on the demonstrations" in line for line in lines)
    policy = load_policy(run / "final_policy.qlr")
    assert policy.metadata.feature_names == tuple(V4)
    longer = load_config(run / "config.yaml", ["total_timesteps=240"])
    stamp = (run / DEMONSTRATIONS_FILE).stat().st_mtime_ns
    result = train(longer, run, resume=True, progress_bar=False, echo=lines.append)
    assert result.num_timesteps == 240
    assert (run / DEMONSTRATIONS_FILE).stat().st_mtime_ns == stamp  # reused, not collected again


def test_bad_demonstration_settings_fail_with_the_key():
    from qlr.agents.learn.config import load_config

    with pytest.raises(ValueError, match="demonstrations.source must be one of"):
        load_config("tiny", ["demonstrations.source=expert"])
    with pytest.raises(ValueError, match="demonstrations: unknown keys \\['episodez'\\]"):
        load_config("tiny", ["demonstrations.episodez=3"])
    with pytest.raises(ValueError, match="demonstrations.margin must be a number >= 0"):
        load_config("tiny", ["demonstrations.margin=-1"])


def test_the_rule_demonstrator_grows_the_batch_when_noise_dominates_and_it_holds():
    names = [*V4, "grad_noise", "batch_growth"]
    env = LearningRateEnv(
        problem="train_stochastic", batch_factors=(1.0, 2.0), action_factors=5, features=names
    )
    act = make_demonstrator("rule", {"grow_batch_above": 0.4})
    obs = np.zeros(len(names), dtype=np.float32)
    noise, slope = names.index("grad_noise"), names.index("update_slope")
    obs[noise] = 0.45  # gradients mostly noise, the slope in the dead band: hold, double
    assert env.controller.action(act(env, obs)) == (1.0, 2.0)
    obs[noise] = 0.1  # little noise: hold the batch too
    assert env.controller.action(act(env, obs)) == (1.0, 1.0)
    obs[noise], obs[slope] = 0.45, 0.45  # r = 0.9: raise the rate, keep the batch
    assert env.controller.action(act(env, obs)) == (2**0.5, 1.0)
