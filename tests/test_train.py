"""Tests for `qlr train`: tiny runs, determinism, resume, checkpoints, TensorBoard tags."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from qlr._atomic import atomic_save
from qlr.agents.cli import main
from qlr.agents.learn.callbacks import (
    checkpoint_paths,
    latest_checkpoint,
    list_checkpoints,
    save_checkpoint,
)
from qlr.agents.learn.config import load_config
from qlr.agents.learn.train import default_run_dir, train
from qlr.features import FEATURES_V2
from qlr.policy import load_policy

OBS_DIM = len(FEATURES_V2)  # the rate-only default observation

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "experiments" / "configs" / "tiny.yaml"
OBS = np.random.default_rng(123).uniform(-1, 1, size=(256, OBS_DIM)).astype(np.float32)
QUIET = {"progress_bar": False, "echo": lambda _: None}


def tiny(*overrides: str):
    return load_config(TINY, list(overrides))


def temp_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.startswith(".") or p.suffix == ".tmp"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tiny training run through the command line, shared by the tests that read it."""
    run_dir = tmp_path_factory.mktemp("runs") / "tiny"
    assert main(["train", "--config", str(TINY), "--out", str(run_dir)]) == 0
    return run_dir


# ---------------------------------------------------------------------------------- a tiny run
def test_tiny_run_writes_every_file_and_a_loadable_policy(tiny_run: Path) -> None:
    for name in (
        "config.yaml",
        "final_policy.qlr",
        "final_model.zip",
        "best_policy.qlr",
        "best_model.zip",
        "eval_history.json",
        "final_eval.json",
        "summary.json",
    ):
        assert (tiny_run / name).is_file(), name
    config = tiny()
    policy = load_policy(tiny_run / "final_policy.qlr")
    assert policy.n_actions == 3 and policy.obs_dim == OBS_DIM
    assert policy.decision_interval == config.env["steps_per_decision"]
    assert policy.metadata.hidden_sizes == (16, 16)
    assert load_config(tiny_run / "config.yaml").to_dict() == config.to_dict()

    summary = json.loads((tiny_run / "summary.json").read_text())
    assert summary["num_timesteps"] >= config.total_timesteps
    assert summary["transitions_per_s"] > 0
    assert set(summary["final_eval"]) == {"best", "final"}
    history = json.loads((tiny_run / "eval_history.json").read_text())
    # At the first rollout boundary (8 transitions) after each multiple of eval_freq; the end.
    assert [h["num_timesteps"] for h in history] == [152, 304]
    assert sum(h["best"] for h in history) >= 1
    assert summary["best_eval"]["median_log10_vs_oracle"] == min(
        h["median_log10_vs_oracle"] for h in history
    )


def test_final_policy_is_the_final_model(tiny_run: Path) -> None:
    import torch
    from stable_baselines3 import DQN

    model = DQN.load(tiny_run / "final_model.zip", device="cpu")
    with torch.no_grad():
        expected = model.q_net(torch.as_tensor(OBS)).numpy()
    got = load_policy(tiny_run / "final_policy.qlr").q_values(OBS)
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_tensorboard_has_the_documented_tags(tiny_run: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    folder = tiny_run / "tensorboard" / "DQN_1"
    events = EventAccumulator(str(folder))
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    expected = {
        "rollout/episode_return",
        "rollout/loss_ratio",
        "rollout/action_freq/0",
        "rollout/action_freq/2",
        "train/q_mean/1",
        "train/q_std/1",
        "train/q_chosen",
        "train/loss",
        "eval/median_log10_vs_oracle",
        "eval/median_log10_vs_start",
        "eval/divergences",
    }
    assert expected <= scalars
    assert "eval/lr_trajectories" in events.Tags()["images"]
    assert any(t.startswith("hyperparameters") for t in events.Tags()["tensors"])
    freqs = [events.Scalars(f"rollout/action_freq/{i}")[-1].value for i in range(3)]
    assert sum(freqs) == pytest.approx(1.0)
    # One TensorBoard run per evaluation holds the learning-rate trajectories.
    trajectory_runs = sorted((folder / "eval_lr").iterdir())
    assert [p.name for p in trajectory_runs] == ["000000152", "000000304"]
    lr_events = EventAccumulator(str(trajectory_runs[0]))
    lr_events.Reload()
    lr_tags = [t for t in lr_events.Tags()["scalars"] if t.startswith("eval/lr/")]
    assert len(lr_tags) == 2
    assert len(lr_events.Scalars(lr_tags[0])) == tiny().eval["steps"]


def test_q_convergence_plot_reads_the_run(tiny_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "q.png"
    script = ROOT / "experiments" / "plot_q_convergence.py"
    done = subprocess.run(
        [sys.executable, str(script), str(tiny_run), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_no_temporary_files_are_left_behind(tiny_run: Path) -> None:
    assert temp_files(tiny_run) == []
    checkpoints = list_checkpoints(tiny_run / "checkpoints")
    assert len(checkpoints) == tiny().keep_checkpoints
    assert (
        checkpoints[-1].num_timesteps
        == json.loads((tiny_run / "summary.json").read_text())["num_timesteps"]
    )


def test_a_second_run_into_the_same_dir_is_refused(tiny_run: Path) -> None:
    with pytest.raises(FileExistsError, match="--resume"):
        train(tiny(), tiny_run, **QUIET)


# ---------------------------------------------------------------------------------- determinism
def test_same_seed_same_q_values_and_evaluation_does_not_change_training(
    tiny_run: Path, tmp_path: Path
) -> None:
    reference = load_policy(tiny_run / "final_policy.qlr").q_values(OBS)
    train(tiny(), tmp_path / "again", **QUIET)
    again = load_policy(tmp_path / "again" / "final_policy.qlr").q_values(OBS)
    np.testing.assert_array_equal(again, reference)

    quiet = tiny("eval_freq=0", "checkpoint_freq=0", "final_eval=null")
    train(quiet, tmp_path / "no_eval", **QUIET)
    no_eval = load_policy(tmp_path / "no_eval" / "final_policy.qlr").q_values(OBS)
    np.testing.assert_array_equal(no_eval, reference)


def test_another_seed_gives_other_q_values(tiny_run: Path, tmp_path: Path) -> None:
    config = tiny("seed=1", "eval_freq=0", "checkpoint_freq=0", "final_eval=null")
    train(config, tmp_path / "seed1", **QUIET)
    other = load_policy(tmp_path / "seed1" / "final_policy.qlr").q_values(OBS)
    assert not np.allclose(other, load_policy(tiny_run / "final_policy.qlr").q_values(OBS))


# ---------------------------------------------------------------------------------- resume
def test_resume_continues_from_the_checkpoint_to_the_same_total(tmp_path: Path) -> None:
    from stable_baselines3.common.save_util import load_from_pkl

    config = tiny("keep_checkpoints=5", "final_eval=null")
    run_dir = tmp_path / "run"
    train(config, run_dir, **QUIET)
    # Simulate a crash right after the first checkpoint: later files never existed.
    first = list_checkpoints(run_dir / "checkpoints")[0].num_timesteps
    assert first == 152  # the first rollout boundary after checkpoint_freq=150
    for checkpoint in list_checkpoints(run_dir / "checkpoints"):
        if checkpoint.num_timesteps > first:
            for path in (checkpoint.marker, checkpoint.model, checkpoint.replay_buffer):
                path.unlink()
    for name in ("final_model.zip", "final_policy.qlr", "summary.json"):
        (run_dir / name).unlink()
    assert latest_checkpoint(run_dir / "checkpoints").num_timesteps == first

    assert main(["train", "--resume", str(run_dir), "--no-progress-bar"]) == 0
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["num_timesteps"] >= config.total_timesteps
    assert summary["session_timesteps"] == summary["num_timesteps"] - first
    last = latest_checkpoint(run_dir / "checkpoints")
    assert last.num_timesteps == summary["num_timesteps"]
    # The replay buffer came back: it holds the first segment's transitions and the second's.
    buffer = load_from_pkl(last.replay_buffer)
    assert buffer.pos * buffer.n_envs == summary["num_timesteps"]
    assert (
        load_policy(run_dir / "final_policy.qlr").metadata.extra["num_timesteps"]
        == (summary["num_timesteps"])
    )
    assert temp_files(run_dir) == []

    # Resuming a finished run learns nothing more.
    train(load_config(run_dir / "config.yaml"), run_dir, resume=True, **QUIET)
    again = json.loads((run_dir / "summary.json").read_text())
    assert again["session_timesteps"] == 0 and again["num_timesteps"] == summary["num_timesteps"]


def test_resume_without_a_checkpoint_fails_clearly(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="checkpoint"):
        train(tiny(), tmp_path / "empty", resume=True, **QUIET)


# ---------------------------------------------------------------------------------- atomic files
def test_an_interrupted_save_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "model.zip"
    target.write_bytes(b"old complete file")

    def fails_halfway(f) -> None:
        f.write(b"half of a new")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_save(target, fails_halfway)
    assert target.read_bytes() == b"old complete file"
    assert temp_files(tmp_path) == []


def test_a_checkpoint_without_its_marker_is_not_resumed_from(tmp_path: Path) -> None:
    from stable_baselines3 import DQN

    from qlr.envs import LearningRateEnv

    model = DQN("MlpPolicy", LearningRateEnv(problem="quadratic"), device="cpu")
    folder = tmp_path / "checkpoints"
    first = save_checkpoint(model, folder)
    assert latest_checkpoint(folder) == first
    # A crash after the model and buffer of a later checkpoint, before its marker.
    model.num_timesteps = 500
    later = checkpoint_paths(folder, 500)
    atomic_save(later.model, model.save)
    atomic_save(later.replay_buffer, model.save_replay_buffer)
    assert latest_checkpoint(folder) == first
    assert json.loads(first.marker.read_text())["num_timesteps"] == 0


# ---------------------------------------------------------------------------------- the rest
def test_subprocess_envs_train(tmp_path: Path) -> None:
    config = tiny(
        "vec_env=subproc", "total_timesteps=120", "eval_freq=0", "checkpoint_freq=0",
        "final_eval=null",
    )  # fmt: skip
    result = train(config, tmp_path / "subproc", **QUIET)
    assert result.num_timesteps >= 120
    assert load_policy(tmp_path / "subproc" / "final_policy.qlr").n_actions == 3


def test_default_run_dir_names_config_seed_and_time() -> None:
    path = default_run_dir(tiny("seed=4"), now=0.0)
    assert path.parent == Path("runs")
    name, seed, stamp = path.name.split("__")
    assert (name, seed, len(stamp)) == ("tiny", "4", len("YYYYmmdd-HHMMSS"))


def test_cli_refuses_resume_with_a_config(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit, match="^2$"):  # a usage error: status 2, the reason on stderr
        main(["train", "--resume", str(tmp_path), "--config", str(TINY)])
    assert "--resume takes the run's own config" in capsys.readouterr().err


@pytest.fixture(autouse=True, scope="module")
def _cleanup_runs_dir():
    """No test may leave a runs/ folder in the working directory."""
    existed = Path("runs").exists()
    yield
    if not existed and Path("runs").exists():
        shutil.rmtree("runs")


def test_a_diverged_network_is_recorded_and_training_goes_on(tmp_path: Path) -> None:
    import torch
    from stable_baselines3 import DQN

    from qlr.agents.learn.callbacks import HeldOutEvalCallback, HeldOutEvaluator
    from qlr.envs import LearningRateEnv

    model = DQN("MlpPolicy", LearningRateEnv(problem="quadratic"), device="cpu")
    with torch.no_grad():
        next(model.q_net.parameters()).fill_(float("nan"))
    config = tiny()
    callback = HeldOutEvalCallback(
        HeldOutEvaluator(config.eval_config()), 100, tmp_path, config.to_dict()
    )
    callback.init_callback(model)
    with pytest.warns(UserWarning, match="NaN"):
        entry = callback.evaluate()
    assert "NaN" in entry["error"] and entry["best"] is False
    assert json.loads((tmp_path / "eval_history.json").read_text()) == [entry]
    assert not (tmp_path / "best_policy.qlr").exists()
    assert temp_files(tmp_path) == []
