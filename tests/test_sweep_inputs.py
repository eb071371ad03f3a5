"""Bad input to `qlr sweep` and `qlr compare --backend`: clear errors before any Ray starts."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from qlr.agents.bench.runner import run_all
from qlr.agents.cli import main
from qlr.agents.learn.config import parse_yaml
from qlr.agents.learn.search_space import (
    check_against_config,
    load_search,
    search_from_dict,
    trial_config,
    trial_overrides,
)

CONFIGS = Path(__file__).resolve().parent.parent / "experiments" / "configs"
TINY = CONFIGS / "tiny.yaml"


def _base() -> dict:
    data = parse_yaml(TINY.read_text())
    data["name"] = "tiny"
    return data


@pytest.mark.parametrize("name", ["sweep_example", "sweep_tiny"])
def test_shipped_search_files_load_and_fit_their_configs(name: str) -> None:
    search = load_search(CONFIGS / f"{name}.yaml")
    config = "default" if name == "sweep_example" else "tiny"
    base = parse_yaml((CONFIGS / f"{config}.yaml").read_text())
    check_against_config(search, base, [], name)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({}, "search space is empty"),
        ({"space": {}}, "search space is empty"),
        ({"space": {"dqn.learning_rate": []}}, "empty list"),
        ({"space": {"dqn.learning_rate": 0.001}}, "must be a list of values or one of"),
        ({"space": {"dqn.learning_rate": {"normal": [0, 1]}}}, "must be a list of values"),
        ({"space": {"dqn.learning_rate": {"loguniform": [0, 1]}}}, "low > 0"),
        ({"space": {"dqn.learning_rate": {"uniform": [1, 0]}}}, "low < high"),
        ({"space": {"dqn.batch_size": {"randint": [16.5, 64]}}}, "integers"),
        ({"space": {"seed": [0, 1]}}, "list seeds under 'seeds'"),
        ({"space": {"dqn.gamma": [0.9]}, "seeds": [0, 0]}, "seeds repeat"),
        ({"space": {"dqn.gamma": [0.9]}, "sedes": [0]}, "unknown keys \\['sedes'\\]"),
        ({"space": {"dqn.gamma": [0.9]}, "num_samples": 0}, "num_samples"),
        (
            {"space": {"dqn.gamma": [0.9]}, "algorithm": "optuna", "seeds": [0, 1]},
            "give one seed",
        ),
        ({"space": {"dqn.gamma": [0.9]}, "scheduler": "hyperband"}, "scheduler must have"),
        (
            {"space": {"dqn.gamma": [0.9]}, "scheduler": {"name": "asha", "grace": 5}},
            "unknown keys \\['grace'\\]",
        ),
    ],
)
def test_malformed_search_files_fail_with_the_reason(data: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        search_from_dict(data)


def test_unknown_search_keys_are_named_with_the_valid_ones() -> None:
    search = search_from_dict({"space": {"dqn.learnin_rate": [1e-3, 3e-3]}})
    with pytest.raises(ValueError, match="'dqn.learnin_rate'.*unknown key.*learning_rate"):
        check_against_config(search, _base(), [], "search")
    search = search_from_dict({"space": {"envv.horizon": [10]}})
    with pytest.raises(ValueError, match="'envv.horizon'.*unknown key"):
        check_against_config(search, _base(), [], "search")


def test_a_key_set_twice_or_a_config_without_evaluations_is_refused() -> None:
    search = search_from_dict({"space": {"dqn.gamma": [0.9, 0.99]}})
    with pytest.raises(ValueError, match="both by --set and in the search space"):
        check_against_config(search, _base(), ["dqn.gamma=0.5"], "search")
    with pytest.raises(ValueError, match="eval_freq > 0"):
        check_against_config(search, _base(), ["eval_freq=0"], "search")


def test_a_trials_values_become_train_overrides() -> None:
    params = {"seed": 3, "dqn.learning_rate": 1e-05, "dqn.policy_kwargs.net_arch": [8, 8]}
    overrides = trial_overrides(params)
    assert overrides == [
        "dqn.learning_rate=1e-05",
        "dqn.policy_kwargs.net_arch=[8, 8]",
        "seed=3",
    ]
    config = trial_config(_base(), ["total_timesteps=100"], params)
    assert config.seed == 3 and config.total_timesteps == 100
    assert config.dqn["learning_rate"] == pytest.approx(1e-5)
    assert config.dqn["policy_kwargs"]["net_arch"] == [8, 8]


def test_address_without_the_ray_backend_is_refused(tmp_path: Path, capsys) -> None:
    argv = ["compare", "--suite", "compare_tiny", "--address", "127.0.0.1:6379"]
    with pytest.raises(SystemExit, match="^2$"):
        main([*argv, "--out", str(tmp_path)])
    assert "--address is a Ray cluster's; add --backend ray" in capsys.readouterr().err
    with pytest.raises(ValueError, match="backend='ray'"):
        run_all([], backend="local", address="127.0.0.1:6379")
    with pytest.raises(ValueError, match="backend must be one of"):
        run_all([], backend="dask")


def test_sweep_command_needs_a_config_and_a_search(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="give --config and --search"):
        main(["sweep", "--config", str(TINY)])
    with pytest.raises(SystemExit, match="holds no sweep to resume"):
        main(["sweep", "--resume", "--out", str(tmp_path)])
    empty = tmp_path / "empty.yaml"
    empty.write_text("seeds: [0]\n")
    with pytest.raises(SystemExit, match="search space is empty"):
        main(["sweep", "--config", str(TINY), "--search", str(empty)])


def test_without_ray_the_error_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    from qlr.agents.bench.ray_backend import import_ray

    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` meets when it is missing
    with pytest.raises(ImportError, match=r"pip install 'qlr\[ray\]'"):
        import_ray()


def test_the_sweep_scores_what_best_policy_was_kept_for() -> None:
    from qlr.agents.learn import callbacks, sweep

    assert sweep.SCORE_KEY == callbacks.SCORE_KEY
