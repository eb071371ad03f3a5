"""Tests for exporting an SB3 DQN Q-network to a qlr policy file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from stable_baselines3 import DQN

from qlr.agents.cli import main
from qlr.agents.learn.config import config_from_dict, dqn_model_kwargs, dump_config
from qlr.agents.learn.export import export_file, export_model, policy_from_model, q_network_layers
from qlr.control import ACTION_SETS
from qlr.envs import LearningRateEnv
from qlr.features import FEATURES_V2
from qlr.policy import config_hash, load_policy

OBS_DIM = len(FEATURES_V2)  # the rate-only default observation


def make_model(env_section: dict, policy_kwargs: dict, seed: int = 0):
    """An untrained DQN (random weights are as good as trained ones for an exact copy)."""
    config = config_from_dict(
        {
            "env": {"problem": "quadratic", **env_section},
            "dqn": {"policy_kwargs": policy_kwargs, "device": "cpu"},
        }
    )
    env = LearningRateEnv(**config.env)
    model = DQN("MlpPolicy", env, seed=seed, **dqn_model_kwargs(config))
    with torch.no_grad():  # non-zero biases, so a dropped bias would show
        for p in model.q_net.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model, config


def sb3_q_values(model, obs: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model.q_net(torch.as_tensor(obs)).numpy()


@pytest.mark.parametrize(
    ("net_arch", "activation"), [([64, 64], "relu"), ([32, 16, 8], "tanh"), ([], "relu")]
)
def test_exported_q_values_equal_the_sb3_network(
    tmp_path: Path, net_arch: list[int], activation: str
) -> None:
    model, config = make_model({}, {"net_arch": net_arch, "activation_fn": activation})
    path = export_model(model, tmp_path / "p.qlr", config.to_dict())
    policy = load_policy(path)
    obs = np.random.default_rng(0).uniform(-1, 1, size=(512, OBS_DIM)).astype(np.float32)
    expected = sb3_q_values(model, obs)
    np.testing.assert_allclose(policy.q_values(obs), expected, rtol=0, atol=1e-6)
    assert [policy.act(o) for o in obs[:64]] == list(expected[:64].argmax(axis=1))
    assert policy.metadata.hidden_sizes == tuple(net_arch)
    assert policy.metadata.activation == activation


def test_metadata_comes_from_the_training_env_config(tmp_path: Path) -> None:
    model, config = make_model({"action_factors": 5, "steps_per_decision": 3}, {"net_arch": [8]})
    policy = load_policy(export_model(model, tmp_path / "p.qlr", config.to_dict()))
    assert policy.action_factors == ACTION_SETS[5]
    assert policy.decision_interval == 3
    extra = policy.metadata.extra
    assert extra["config_hash"] == config_hash(config.to_dict())
    assert extra["train_config"]["env"]["action_factors"] == 5
    assert extra["num_timesteps"] == 0


def test_factors_that_do_not_match_the_network_are_refused() -> None:
    model, config = make_model({}, {"net_arch": [8]})  # 3 actions
    wrong = config.to_dict()
    wrong["env"]["action_factors"] = 5
    with pytest.raises(ValueError, match="5|outputs"):
        policy_from_model(model, wrong)


def test_unsupported_activation_is_refused() -> None:
    env = LearningRateEnv(problem="quadratic")
    model = DQN("MlpPolicy", env, policy_kwargs={"activation_fn": torch.nn.ELU}, device="cpu")
    with pytest.raises(ValueError, match="ELU"):
        q_network_layers(model.q_net)


def test_cli_exports_a_run_dir_and_a_checkpoint_zip(tmp_path: Path) -> None:
    model, config = make_model({"steps_per_decision": 4}, {"net_arch": [16, 16]})
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "config.yaml").write_text(dump_config(config))
    model.save(run_dir / "final_model.zip")
    model.save(run_dir / "checkpoints" / "model_000000100.zip")
    obs = np.random.default_rng(1).uniform(-1, 1, size=(64, OBS_DIM)).astype(np.float32)

    assert main(["export", str(run_dir), str(tmp_path / "a.qlr")]) == 0
    from_run = load_policy(tmp_path / "a.qlr")
    np.testing.assert_allclose(from_run.q_values(obs), sb3_q_values(model, obs), atol=1e-6)
    assert from_run.decision_interval == 4

    # A zip inside the run finds the run's config.yaml in a parent folder.
    export_file(run_dir / "checkpoints" / "model_000000100.zip", tmp_path / "b.qlr")
    assert load_policy(tmp_path / "b.qlr").metadata.extra["source"] == "model_000000100.zip"


def test_export_without_a_config_says_what_is_missing(tmp_path: Path) -> None:
    model, _ = make_model({}, {"net_arch": [8]})
    (tmp_path / "alone").mkdir()
    model.save(tmp_path / "alone" / "model.zip")
    with pytest.raises(FileNotFoundError, match="config"):
        export_file(tmp_path / "alone" / "model.zip", tmp_path / "x.qlr")


def test_a_diverged_network_is_refused(tmp_path: Path) -> None:
    model, config = make_model({}, {"net_arch": [8]})
    with torch.no_grad():
        next(model.q_net.parameters())[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        export_model(model, tmp_path / "p.qlr", config.to_dict())
    assert not (tmp_path / "p.qlr").exists()
