"""LearningRateEnv: Gymnasium contract, determinism, bounds, divergence, arguments."""

import inspect
import json
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import qlr
import qlr.envs  # noqa: F401  (registers the environment)
from qlr.envs import (
    DISTRIBUTIONS,
    FAMILIES,
    RECIPE_ENV_DEFAULTS,
    RECIPE_ENV_ID,
    RECIPE_V1_ENV_DEFAULTS,
    RECIPE_V1_ENV_ID,
    LearningRateEnv,
)
from qlr.envs.distributions import make_distribution
from qlr.features import FEATURES_V2

ROOT = Path(__file__).resolve().parents[1]

CONFIGS = [
    {},
    {"problem": "test"},
    {"problem": "train_stochastic", "optimizer": "rmsprop"},
    {"problem": "quadratic", "action_factors": 5, "steps_per_decision": 1},
    {"problem": ["rosenbrock", "quartic"], "action_factors": 7, "optimizer": "nesterov"},
    {"problem": "ackley", "optimizer": ["adagrad", "adamw"], "horizon": 10},
    {"problem": "val", "spike_factor": 2.0, "features": ["loss_change_block", "lr_drift"]},
]


@pytest.mark.parametrize("kwargs", CONFIGS)
def test_gymnasium_and_sb3_env_checkers_pass(kwargs):
    env = gym.make("qlr/LearningRate-v0", **kwargs)
    gym_check_env(env.unwrapped, skip_render_check=True)
    sb3_check_env(LearningRateEnv(**kwargs), warn=False)


def test_default_spaces():
    env = gym.make("qlr/LearningRate-v0")
    assert isinstance(env.action_space, gym.spaces.Discrete) and env.action_space.n == 3
    space = env.observation_space
    assert space.shape == (len(FEATURES_V2),) and space.dtype == np.float32
    assert np.all(np.isfinite(space.low)) and np.all(np.isfinite(space.high))


def test_v0_keeps_the_first_designs_defaults():
    assert gym.spec("qlr/LearningRate-v0").kwargs == {}
    env = gym.make("qlr/LearningRate-v0").unwrapped
    controller = env.controller
    assert env.feature_names == FEATURES_V2  # eleven features
    assert controller.action_factors == (0.5, 1.0, 2.0)
    assert controller.spike_factor is None and controller.max_lr_growth is None
    assert controller.batch_factors is None
    assert env.optimizers == ("sgd", "momentum", "adam")
    assert env.horizon_range == (60, 60) and env.budget_known == 0.0
    assert controller.decision_interval == 5


def test_v2_passes_the_gymnasium_checker():
    env = gym.make(RECIPE_ENV_ID)
    gym_check_env(env.unwrapped, skip_render_check=True)


SECOND_DESIGN = "experiments/results/ablation/arms/recipe_seed0.qlr"  # the file v1 trained


@pytest.mark.parametrize(
    ("env_id", "kwargs", "policy"),
    [
        (RECIPE_ENV_ID, RECIPE_ENV_DEFAULTS, "default"),
        (RECIPE_V1_ENV_ID, RECIPE_V1_ENV_DEFAULTS, SECOND_DESIGN),
    ],
)
def test_each_recipe_version_is_the_environment_its_policy_was_trained_on(env_id, kwargs, policy):
    """What a policy file reads and does is what its registered environment gives: the shipped
    default and ``qlr/LearningRate-v2``, the second design's and v1.

    A recipe that trains on another environment registers a new version instead.
    """
    policy = qlr.load_policy(policy if policy == "default" else str(ROOT / policy))
    meta = policy.metadata
    env = gym.make(env_id)
    assert env.observation_space.shape == (policy.obs_dim,)
    assert env.action_space.n == policy.n_actions
    unwrapped = env.unwrapped
    controller = unwrapped.controller
    assert tuple(unwrapped.feature_names) == tuple(meta.feature_names)
    assert controller.action_factors == pytest.approx(meta.action_factors)
    assert controller.spike_factor == 10.0  # trained with the guard; see below for deployment
    assert controller.spike_cut == meta.spike_cut
    assert controller.decision_interval == meta.decision_interval
    assert controller.max_lr == meta.max_lr and controller.max_lr_growth == meta.max_lr_growth
    assert controller.batch_factors is None and meta.batch_factors is None
    # Every argument, against the env section recorded in the policy file at training time.
    defaults = {
        name: p.default for name, p in inspect.signature(LearningRateEnv).parameters.items()
    }
    registered = {**defaults, **gym.spec(env_id).kwargs}
    assert gym.spec(env_id).kwargs == kwargs
    trained = meta.extra["train_config"]["env"]
    # An argument added after the file was trained is not in its record: it must be at the
    # default, which is what the training ran under.
    newer = {name for name in registered if name not in trained}
    assert all(registered[name] == defaults[name] for name in newer)
    recorded = {name: value for name, value in registered.items() if name not in newer}
    assert json.loads(json.dumps(recorded)) == trained


def test_the_shipped_default_runs_without_the_spike_guard_it_was_trained_with():
    """The third design's ablation chose it (experiments/results/ablation/arms_table.md): with
    the rollback guard undoing real divergences, the guard's x0.1 cuts cost more than they
    saved."""
    assert qlr.load_policy("default").metadata.spike_factor is None
    assert qlr.load_policy(str(ROOT / SECOND_DESIGN)).metadata.spike_factor == 10.0


def _rollout(env, seed, actions):
    obs, info = env.reset(seed=seed)
    trace = [obs]
    for a in actions:
        obs, reward, terminated, truncated, info = env.step(a)
        trace.append(np.append(obs, [reward, info["lr"], info["loss"]]))
        if terminated or truncated:
            break
    return trace


def test_same_seed_same_rollout_different_seed_differs():
    actions = np.random.default_rng(0).integers(0, 3, 40)
    a = _rollout(LearningRateEnv(), 7, actions)
    b = _rollout(LearningRateEnv(), 7, actions)
    c = _rollout(LearningRateEnv(), 8, actions)
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=False))


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_random_rollouts_stay_in_the_observation_space(family):
    env = LearningRateEnv(problem=family, optimizer=["sgd", "adam"], horizon=15)
    rng = np.random.default_rng(1)
    for episode in range(2):
        obs, _ = env.reset(seed=episode)
        assert env.observation_space.contains(obs)
        done = False
        while not done:
            obs, reward, terminated, truncated, info = env.step(int(rng.integers(3)))
            assert env.observation_space.contains(obs), (family, obs)
            assert np.isfinite(reward) and abs(reward) <= max(
                env.reward_clip, env.divergence_penalty
            )
            done = terminated or truncated


@pytest.mark.parametrize("name", sorted(DISTRIBUTIONS))
def test_every_named_distribution_builds_an_env(name):
    env = LearningRateEnv(problem=name, horizon=2)
    obs, info = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    assert info["problem"] in DISTRIBUTIONS[name].families  # drawn from that distribution
    if name.endswith("_stochastic"):
        assert env.problem.stochastic, f"{name} drew the full-batch {info['problem']}"
    for step in (1, 2):  # a whole episode: the horizon truncates it
        obs, reward, terminated, truncated, info = env.step(1)
        assert env.observation_space.contains(obs), (name, obs)
        assert np.isfinite(reward) and abs(reward) <= env.reward_clip
        assert info["decisions"] == step and not terminated
    assert truncated


def test_divergence_terminates_with_the_penalty():
    env = LearningRateEnv(
        problem="quadratic",
        optimizer="sgd",
        lr_bounds=(1e-8, 1e6),
        initial_lr_range=(1e-3, 1e-3),
        horizon=60,
    )
    env.reset(seed=0)
    for _ in range(60):  # keep doubling the rate until the run blows up
        obs, reward, terminated, truncated, info = env.step(2)
        if terminated:
            break
    assert terminated and not truncated
    assert reward == -env.divergence_penalty and info["diverged"]
    assert np.all(np.isfinite(obs))


def test_horizon_truncates():
    env = LearningRateEnv(problem="quadratic", horizon=4)
    env.reset(seed=0)
    flags = [env.step(1)[3] for _ in range(4)]
    assert flags == [False, False, False, True]


def test_reward_telescopes_to_the_log_loss_ratio():
    env = LearningRateEnv(problem="quadratic", optimizer="sgd", horizon=10, reward_clip=100.0)
    _, info = env.reset(seed=3)
    start = info["loss"]
    total = 0.0
    for _ in range(10):
        _, reward, terminated, truncated, info = env.step(1)
        total += reward
    assert total == pytest.approx(np.log(start / info["loss"]), rel=1e-5)


def test_actions_change_the_learning_rate_by_their_factor():
    env = LearningRateEnv(problem="quadratic", action_factors=(0.25, 1.0, 3.0))
    _, info = env.reset(seed=0, options={"lr": 1e-3})
    assert info["lr"] == pytest.approx(1e-3)
    _, _, _, _, info = env.step(2)
    assert info["lr"] == pytest.approx(3e-3)
    _, _, _, _, info = env.step(0)
    assert info["lr"] == pytest.approx(0.75e-3)


def test_info_counts_evaluations():
    env = LearningRateEnv(problem="logistic", steps_per_decision=4)
    _, info = env.reset(seed=0)
    before = info["grad_evals"]
    _, _, _, _, info = env.step(1)
    assert info["grad_evals"] - before == 4
    for key in ("lr", "loss", "func_evals", "examples_seen", "problem", "optimizer"):
        assert key in info


def test_fixed_instance_restarts_from_the_same_point():
    problem = make_distribution("quadratic").sample(np.random.default_rng(0))
    env = LearningRateEnv(problem=problem)
    _, first = env.reset(seed=0, options={"lr": 1e-2, "optimizer": "sgd"})
    env.step(2)
    _, again = env.reset(seed=0, options={"lr": 1e-2, "optimizer": "sgd"})
    assert again["loss"] == first["loss"]


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"problem": "no_such_family"}, "valid"),
        ({"optimizer": "lbfgs"}, "sgd"),
        ({"steps_per_decision": 0}, "decision_interval"),
        ({"action_factors": 4}, "[3, 5, 7]"),
        ({"action_factors": (1.0, -2.0)}, "positive"),
        ({"lr_bounds": (1.0, 0.1)}, "lr_bounds"),
        ({"initial_lr_range": (1e-9, 1.0), "lr_bounds": (1e-6, 1.0)}, "inside lr_bounds"),
        ({"horizon": 0}, "horizon"),
        ({"horizon": 2.5}, "horizon"),
        ({"reward_clip": -1}, "reward_clip"),
        ({"divergence_factor": 0.5}, "divergence_factor"),
        ({"optimizer_kwargs": {"adam": {}}, "optimizer": "sgd"}, "optimizer_kwargs"),
        ({"spike_factor": 0.9}, "spike_factor"),
        ({"features": ["loss_rank", "grad_curvature"]}, "unknown"),
    ],
)
def test_invalid_arguments_name_the_problem(kwargs, fragment):
    with pytest.raises(ValueError, match=fragment.replace("[", r"\[").replace("]", r"\]")):
        LearningRateEnv(**kwargs)


def test_spike_guard_keeps_a_too_large_rate_from_diverging():
    """SGD above a quadratic's stable rate: without the guard the run blows up in its first
    decisions; with it, each spike halves the rate at once and the episode goes on."""
    kwargs = {"problem": "quadratic", "optimizer": "sgd", "horizon": 10, "divergence_factor": 1e3}
    outcomes = {}
    for guard in (None, 2.0):
        env = LearningRateEnv(spike_factor=guard, **kwargs)
        obs, info = env.reset(seed=0, options={"lr": 2.5})
        start = info["lr"]
        terminated = truncated = False
        while not (terminated or truncated):
            obs, _, terminated, truncated, info = env.step(1)  # always "hold"
        outcomes[guard] = (start, terminated, info["lr"], info["loss"] / info["initial_loss"])
    assert outcomes[None][:2] == (2.5, True)  # the first block survives, then it diverges
    start, terminated, lr, loss_ratio = outcomes[2.0]
    assert start == 2.5 and not terminated and lr < start and loss_ratio < 0.01


def test_invalid_reset_option_and_action():
    env = LearningRateEnv()
    with pytest.raises(ValueError, match="unknown reset options"):
        env.reset(options={"lrr": 1})
    env.reset(seed=0)
    with pytest.raises(ValueError, match="action"):
        env.step(3)


def test_works_under_subproc_vec_env():
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import SubprocVecEnv

    vec = make_vec_env(
        LearningRateEnv, n_envs=2, seed=0, vec_env_cls=SubprocVecEnv, env_kwargs={"horizon": 5}
    )
    try:
        obs = vec.reset()
        assert obs.shape == (2, len(FEATURES_V2))
        obs, rewards, dones, infos = vec.step(np.array([0, 2]))
        assert np.all(np.isfinite(obs)) and np.all(np.isfinite(rewards))
    finally:
        vec.close()
