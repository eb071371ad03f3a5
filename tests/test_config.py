"""Tests for the training config: YAML floats, unknown keys, overrides, the shipped configs."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from qlr.agents.learn.config import (
    PERIODIC_EVAL_DEFAULTS,
    TrainConfig,
    config_from_dict,
    dump_config,
    load_config,
    parse_yaml,
)

CONFIGS = Path(__file__).resolve().parent.parent / "experiments" / "configs"


def write(tmp_path: Path, text: str, name: str = "cfg.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# ---------------------------------------------------------------------------------- YAML floats
@pytest.mark.parametrize(
    ("text", "value"),
    [("1e-4", 1e-4), ("3e5", 3e5), ("-2E+3", -2e3), ("1.5e-3", 1.5e-3), ("2.5", 2.5), (".5", 0.5)],
)
def test_exponent_numbers_load_as_floats(text: str, value: float) -> None:
    loaded = parse_yaml(f"x: {text}")["x"]
    assert isinstance(loaded, float)
    assert loaded == value


@pytest.mark.parametrize(("text", "value"), [("3", 3), ("100_000", 100000), ("1e-4x", "1e-4x")])
def test_other_scalars_keep_their_type(text: str, value: object) -> None:
    loaded = parse_yaml(f"x: {text}")["x"]
    assert loaded == value
    assert type(loaded) is type(value)


def test_global_safe_loader_is_left_alone() -> None:
    # The float fix lives in a subclass; PyYAML's own SafeLoader keeps the YAML 1.1 rule.
    parse_yaml("x: 1e-4")
    assert yaml.safe_load("x: 1e-4")["x"] == "1e-4"


def test_learning_rate_in_a_file_is_a_float_and_counts_are_ints(tmp_path: Path) -> None:
    path = write(
        tmp_path, "dqn:\n  learning_rate: 1e-4\n  buffer_size: 1e5\ntotal_timesteps: 3e5\n"
    )
    config = load_config(path)
    assert config.dqn["learning_rate"] == pytest.approx(1e-4)
    assert isinstance(config.dqn["learning_rate"], float)
    assert config.dqn["buffer_size"] == 100_000 and isinstance(config.dqn["buffer_size"], int)
    assert config.total_timesteps == 300_000 and isinstance(config.total_timesteps, int)


# ---------------------------------------------------------------------------------- bad keys
@pytest.mark.parametrize(
    ("text", "bad", "a_valid_key"),
    [
        ("total_timestep: 10\n", "total_timestep", "total_timesteps"),
        ("env:\n  horizn: 10\n", "horizn", "horizon"),
        ("env:\n  lr: 0.1\n", "lr", "initial_lr_range"),
        ("dqn:\n  lr: 0.001\n", "lr", "learning_rate"),
        ("dqn:\n  target_update_freq: 10\n", "target_update_freq", "target_update_interval"),
        ("eval:\n  step: 10\n", "step", "steps"),
        ("final_eval:\n  instance: 1\n", "instance", "instances"),
        ("dqn:\n  policy_kwargs:\n    netarch: [8]\n", "netarch", "net_arch"),
    ],
)
def test_unknown_keys_name_the_key_and_list_valid_ones(
    tmp_path: Path, text: str, bad: str, a_valid_key: str
) -> None:
    with pytest.raises(ValueError, match=r"unknown keys \[.*\]; valid: \[") as err:
        load_config(write(tmp_path, text))
    unknown, valid = str(err.value).split("; valid: ")
    assert repr(bad) in unknown
    assert repr(a_valid_key) in valid


def test_env_keys_come_from_the_env_signature(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"env: unknown keys \['nope'\]") as err:
        load_config(write(tmp_path, "env:\n  nope: 1\n"))
    for key in ("problem", "optimizer", "steps_per_decision", "action_factors", "horizon"):
        assert repr(key) in str(err.value)


def test_dqn_keys_come_from_the_sb3_signature_without_policy_and_env(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"dqn: unknown keys \['nope'\]") as err:
        load_config(write(tmp_path, "dqn:\n  nope: 1\n"))
    valid = str(err.value).split("valid: ")[1]
    for key in ("buffer_size", "gradient_steps", "exploration_fraction", "policy_kwargs"):
        assert repr(key) in valid
    assert "'policy'" not in valid and "'env'" not in valid


@pytest.mark.parametrize("key", ["seed", "tensorboard_log", "policy", "env"])
def test_dqn_keys_set_by_qlr_train_are_refused(tmp_path: Path, key: str) -> None:
    with pytest.raises(ValueError, match=f"dqn.{key} cannot be set"):
        load_config(write(tmp_path, f"dqn:\n  {key}: 1\n"))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("vec_env: threads\n", "vec_env must be one of \\['subproc', 'dummy'\\], got 'threads'"),
        ("n_envs: 0\n", "n_envs must be an integer >= 1, got 0"),
        ("total_timesteps: 1.5\n", "total_timesteps must be an integer >= 1, got 1.5"),
        ("env: 3\n", "env must be a mapping of keyword arguments, got 3"),
        (
            "dqn:\n  policy_kwargs:\n    activation_fn: gelu\n",
            "activation_fn must be one of \\['relu', 'tanh'\\].*got 'gelu'",
        ),
    ],
)
def test_bad_values_raise(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_config(write(tmp_path, text))


# ---------------------------------------------------------------------------------- overrides
def test_overrides_are_yaml_scalars_and_reach_into_sections(tmp_path: Path) -> None:
    path = write(tmp_path, "env:\n  horizon: 60\n")
    config = load_config(
        path,
        [
            "env.horizon=40",
            "dqn.learning_rate=1e-4",
            "env.optimizer=[sgd, adam]",
            "dqn.policy_kwargs.net_arch=[32, 32]",
            "final_eval=null",
            "seed=7",
        ],
    )
    assert config.env["horizon"] == 40
    assert isinstance(config.dqn["learning_rate"], float) and config.dqn["learning_rate"] == 1e-4
    assert config.env["optimizer"] == ["sgd", "adam"]
    assert config.dqn["policy_kwargs"]["net_arch"] == [32, 32]
    assert config.final_eval is None and config.final_eval_config() is None
    assert config.seed == 7


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("horizon", "'horizon' is not of the form key=value"),
        ("=3", "'=3' is not of the form key=value"),
        ("env.horizon.x=3", "'env.horizon' is not a section"),
    ],
)
def test_malformed_overrides_raise(tmp_path: Path, override: str, message: str) -> None:
    path = write(tmp_path, "env:\n  horizon: 60\n")
    with pytest.raises(ValueError, match=message):
        load_config(path, [override])


def test_unknown_override_key_raises(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="'horizn'"):
        load_config(write(tmp_path, "{}\n"), ["env.horizn=3"])


# ---------------------------------------------------------------------------------- resolving
def test_resolved_config_fills_defaults_and_round_trips(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "env:\n  horizon: 30\n", name="mine.yaml"))
    assert config.name == "mine"
    assert config.env["steps_per_decision"] == 5  # LearningRateEnv's default, written out
    assert config.dqn["gamma"] == 0.99  # SB3's default, written out
    assert config.eval["instances"] == PERIODIC_EVAL_DEFAULTS["instances"]
    again = load_config(write(tmp_path, dump_config(config), name="again.yaml"))
    assert again.to_dict() == config.to_dict()


def test_periodic_eval_defaults_are_small_and_final_eval_defaults_are_evaluates() -> None:
    config = config_from_dict({})
    small, final = config.eval_config(), config.final_eval_config()
    assert small.instances == 1 and small.steps == 100 and len(small.initial_lrs) == 2
    assert small.seed != final.seed  # the model picked on one is scored on the other
    assert final == type(final)()


def test_default_dataclass_equals_resolved_empty_config() -> None:
    assert config_from_dict({"name": "run"}).total_timesteps == TrainConfig().total_timesteps


# ---------------------------------------------------------------------------------- shipped
@pytest.mark.parametrize("name", ["default", "tiny"])
def test_shipped_configs_load_and_build_an_env(name: str) -> None:
    from qlr.envs import LearningRateEnv

    config = load_config(CONFIGS / f"{name}.yaml")
    assert config.name == name
    env = LearningRateEnv(**config.env)
    obs, _ = env.reset(seed=0)
    assert env.observation_space.contains(obs)


def test_default_config_trains_the_shipped_controller_settings() -> None:
    config = load_config(CONFIGS / "default.yaml")
    assert {"sgd", "momentum", "adam"} <= set(config.env["optimizer"])
    assert config.env["problem"] == "train"
    dqn = config.dqn
    assert 1e-4 <= dqn["learning_rate"] <= 3e-3
    assert 64 <= dqn["batch_size"] <= 256 and dqn["buffer_size"] == 100_000
    assert dqn["target_update_interval"] < 10_000 and dqn["gradient_steps"] > 1
    assert dqn["policy_kwargs"]["net_arch"] == [64, 64]
    assert config.n_envs == 2
