"""Train a DQN learning-rate controller from a config (``qlr train``).

Example:
    $ qlr train --config default      # a shipped config by name (experiments/configs/*.yaml)
    $ qlr train --config my.yaml --set env.horizon=20 --seed 3
    $ qlr train --resume runs/default__0__20250101-120000

A run directory holds::

    config.yaml            the resolved config (every default filled in)
    tensorboard/           SB3's scalars and ours (see qlr.agents.learn.callbacks)
    checkpoints/           model_*.zip + replay_buffer_*.pkl + checkpoint_*.json markers
    best_policy.qlr        best Q-network on the periodic held-out evaluation (+ best_model.zip)
    final_policy.qlr       the Q-network at the end of training (+ final_model.zip)
    eval_history.json      every periodic evaluation
    final_eval.json        the end-of-training evaluation of the best and the final policy
    summary.json           wall time, throughput, scores, where the files are
"""

from __future__ import annotations

import argparse
import os
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from tqdm import TqdmExperimentalWarning

from qlr._atomic import atomic_save
from qlr.agents.bench.evaluate import format_summary
from qlr.agents.catalog import names
from qlr.agents.errors import UsageError
from qlr.agents.learn.config import TrainConfig, dqn_model_kwargs, dump_config, load_config
from qlr.agents.learn.demonstrations import Demonstrations, collect, demonstration_buffer
from qlr.agents.learn.export import export_model
from qlr.agents.learn.run_files import (
    CONFIG_FILE,
    EVAL_HISTORY_FILE,
    latest_checkpoint,
    read_history,
    write_json,
)

# gymnasium, stable-baselines3 and the modules that load them at import (the callbacks, DQfD)
# are imported inside the functions that train: `qlr --help` loads this module to list
# `qlr train`, and those take about a second to import.
if TYPE_CHECKING:
    import gymnasium
    from stable_baselines3 import DQN
    from stable_baselines3.common.vec_env import VecEnv

RUNS_DIR = Path("runs")
TB_LOG_NAME = "DQN"


@dataclass
class TrainResult:
    """What a training run produced, as written to summary.json."""

    run_dir: str
    num_timesteps: int
    session_timesteps: int  # learned by this invocation (less than num_timesteps after resume)
    wall_time: float  # the whole invocation, final evaluation included
    learn_time: float  # inside model.learn, periodic evaluations and checkpoints included
    eval_time: float  # periodic evaluations
    checkpoint_time: float
    transitions_per_s: float  # session_timesteps / (learn_time - eval_time - checkpoint_time)
    best_eval: dict | None
    final_eval: dict[str, Any] | None
    files: dict[str, str] = field(default_factory=dict)


# ---------------------------------------------------------------------------------- envs
def env_factory(env_kwargs: dict[str, Any]) -> Callable[[], gymnasium.Env]:
    """A picklable function that builds one `LearningRateEnv` (in a worker process or here)."""

    def make() -> gymnasium.Env:
        import gymnasium

        import qlr.envs

        # Workers share the machine's cores with each other and the learner: one thread each.
        torch.set_num_threads(1)
        # v0, whose defaults are LearningRateEnv's own (as the demonstrations' envs have), under
        # the config's arguments. Made from its spec: made by id, gymnasium warns in every run
        # that v1 supersedes it.
        return gymnasium.make(gymnasium.spec(qlr.envs.ENV_ID), **env_kwargs)

    return make


def make_vec_env(config: TrainConfig) -> VecEnv:
    """`n_envs` environments, in subprocesses when asked and worth it, with episode statistics.

    Seeding happens through the model (``DQN(seed=...)`` seeds env i with ``seed + i``).
    """
    from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecMonitor

    factories = [env_factory(dict(config.env)) for _ in range(config.n_envs)]
    if config.vec_env == "subproc" and config.n_envs > 1:
        return VecMonitor(SubprocVecEnv(factories))
    return VecMonitor(DummyVecEnv(factories))


# ---------------------------------------------------------------------------------- run dirs
def default_run_dir(config: TrainConfig, now: float | None = None) -> Path:
    """``runs/{name}__{seed}__{YYYYmmdd-HHMMSS}``, as CleanRL names its runs."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
    return RUNS_DIR / f"{config.name}__{config.seed}__{stamp}"


# ---------------------------------------------------------------------------------- training
def train(
    config: TrainConfig,
    run_dir: str | os.PathLike,
    *,
    resume: bool = False,
    progress_bar: bool = True,
    echo: Callable[[str], None] = print,
) -> TrainResult:
    """Train a DQN controller into `run_dir`, or continue the run there (`resume=True`).

    A resumed run loads the latest checkpoint (model and replay buffer) and learns only the
    transitions left to `config.total_timesteps`.

    Raises:
        FileExistsError: `run_dir` already holds a run and `resume` is False.
        FileNotFoundError: `resume` is True and `run_dir` holds no checkpoint.
    """
    began = time.perf_counter()
    run_dir = Path(run_dir)
    threads = torch.get_num_threads()
    # The learner's network is tiny: a second thread only fights the env workers for the cores
    # (measured: 62 instead of 486 transitions/s with two subprocess envs on two cores).
    torch.set_num_threads(1)
    try:
        return _train(config, run_dir, resume, progress_bar, echo, began)
    finally:
        torch.set_num_threads(threads)


def _train(
    config: TrainConfig,
    run_dir: Path,
    resume: bool,
    progress_bar: bool,
    echo: Callable[[str], None],
    began: float,
) -> TrainResult:
    from stable_baselines3.common.callbacks import CallbackList

    from qlr.agents.learn.callbacks import (
        CheckpointCallback,
        HeldOutEvalCallback,
        HeldOutEvaluator,
        HyperparameterCallback,
        QValueCallback,
        RolloutStatsCallback,
    )

    checkpoints = run_dir / "checkpoints"
    if not resume:
        if (run_dir / CONFIG_FILE).exists():
            raise FileExistsError(f"{run_dir} already holds a run; continue it with --resume")
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_save(run_dir / CONFIG_FILE, lambda f: f.write(dump_config(config).encode()))
    config_dict = config.to_dict()

    venv = make_vec_env(config)
    try:
        model = (
            _resume_model(config, run_dir, venv)
            if resume
            else _new_model(config, run_dir, venv, echo)
        )
        start_steps = int(model.num_timesteps)
        if resume:
            echo(f"resuming {run_dir} at {start_steps:,} of {config.total_timesteps:,} transitions")
        checkpoint_callback = CheckpointCallback(
            checkpoints, config.checkpoint_freq, config.keep_checkpoints
        )
        callbacks: list[Any] = [
            HyperparameterCallback(config_dict),
            RolloutStatsCallback(int(venv.action_space.n), config.log_freq),
            QValueCallback(config.log_freq, batch_path=run_dir / "q_batch.npy"),
            checkpoint_callback,
        ]
        eval_callback = None
        if config.eval_freq > 0:
            evaluator = HeldOutEvaluator(
                config.eval_config(), config.eval_jobs, run_dir / "eval_reference.json"
            )
            n_ref = len(evaluator.reference_specs())
            echo(f"periodic evaluation: {n_ref} reference runs, computed once (cached in run dir)")
            evaluator.reference_rows()
            eval_callback = HeldOutEvalCallback(
                evaluator, config.eval_freq, run_dir, config_dict, read_history(run_dir)
            )
            callbacks.append(eval_callback)
        learn_began = time.perf_counter()
        remaining = config.total_timesteps - start_steps
        if remaining > 0:
            with warnings.catch_warnings():
                # SB3's progress bar is tqdm.rich, which warns on every run that it is experimental.
                warnings.filterwarnings("ignore", category=TqdmExperimentalWarning)
                model.learn(
                    total_timesteps=remaining,
                    callback=CallbackList(callbacks),
                    log_interval=max(1, round(config.log_freq / _typical_episode(config))),
                    tb_log_name=TB_LOG_NAME,
                    reset_num_timesteps=start_steps == 0,
                    progress_bar=progress_bar,
                )
        learn_time = time.perf_counter() - learn_began
    finally:
        venv.close()  # before the final evaluation, which wants the cores for its own workers

    files, final_eval = _finish(config, run_dir, model, echo)
    session = int(model.num_timesteps) - start_steps
    eval_time = eval_callback.seconds if eval_callback is not None else 0.0
    net_time = learn_time - eval_time - checkpoint_callback.seconds
    result = TrainResult(
        run_dir=str(run_dir),
        num_timesteps=int(model.num_timesteps),
        session_timesteps=session,
        wall_time=0.0,
        learn_time=learn_time,
        eval_time=eval_time,
        checkpoint_time=checkpoint_callback.seconds,
        transitions_per_s=session / net_time if session and net_time > 0 else 0.0,
        best_eval=_best_entry(read_history(run_dir)),
        final_eval=final_eval,
        files=files,
    )
    result.wall_time = time.perf_counter() - began
    write_json(run_dir / "summary.json", asdict(result))
    echo(format_result(result))
    return result


def _typical_episode(config: TrainConfig) -> float:
    """Decisions in a typical episode: the horizon, or the geometric mean of a drawn range."""
    horizon = config.env["horizon"]
    low, high = (horizon, horizon) if isinstance(horizon, int) else horizon
    return float((low * high) ** 0.5)


def _best_entry(history: list[dict]) -> dict | None:
    """The history entry of the model kept as best_policy.qlr (the last one marked best)."""
    best = [entry for entry in history if entry.get("best")]
    return best[-1] if best else None


DEMONSTRATIONS_FILE = "demonstrations.npz"
DEMONSTRATION_SEED = 500_000  # demonstration episodes are seeded from seed + this, not seed + i


def _demonstration_buffer(
    config: TrainConfig, run_dir: Path, venv: VecEnv, echo: Callable[[str], None]
) -> Any:
    """DQfD's demonstrations: collected once (saved in the run directory), then as a buffer."""
    demo = config.demonstrations
    path = run_dir / DEMONSTRATIONS_FILE
    if path.is_file():
        demos = Demonstrations.load(path)
    else:
        began = time.perf_counter()
        demos = collect(
            config.env,
            demo["source"],
            demo["episodes"],
            config.seed + DEMONSTRATION_SEED,
            demo["options"],
            demo["jobs"],
        )
        demos.save(path)
        echo(
            f"collected {len(demos):,} {demo['source']} transitions ({demos.episodes} episodes) "
            f"in {time.perf_counter() - began:.0f} s"
        )
    n_steps = int(config.dqn.get("n_steps") or 1)
    gamma = float(config.dqn.get("gamma", 0.99))
    return demonstration_buffer(demos, venv.observation_space, venv.action_space, n_steps, gamma)


def _new_model(
    config: TrainConfig, run_dir: Path, venv: VecEnv, echo: Callable[[str], None] = print
) -> DQN:
    from stable_baselines3 import DQN

    common = {
        "seed": config.seed,
        "tensorboard_log": str((run_dir / "tensorboard").resolve()),
        **dqn_model_kwargs(config),
    }
    # DQN seeds python, numpy, torch, the action space and the envs (env i: seed + i) itself.
    if config.demonstrations["source"] is None:
        return DQN("MlpPolicy", venv, **common)
    from qlr.agents.learn.dqfd import DQfD

    demo = config.demonstrations
    model = DQfD(
        "MlpPolicy",
        venv,
        demonstrations=_demonstration_buffer(config, run_dir, venv, echo),
        margin=demo["margin"],
        margin_weight=demo["margin_weight"],
        demo_batch_size=demo["demo_batch_size"],
        **common,
    )
    began = time.perf_counter()
    stats = model.pretrain(demo["pretrain_steps"])
    if stats:
        echo(
            f"pretrained on the demonstrations for {demo['pretrain_steps']:,} gradient steps in "
            f"{time.perf_counter() - began:.0f} s: agrees with the demonstrator on "
            f"{stats['agreement']:.0%} of them (margin loss {stats['margin_loss']:.3f})"
        )
    return model


def _remove_interrupted_writes(run_dir: Path) -> None:
    """Delete the temporary files of saves a killed run never finished (never a real file)."""
    for leftover in run_dir.rglob(".*.tmp"):
        leftover.unlink(missing_ok=True)
    (run_dir / ".eval_policy.qlr").unlink(missing_ok=True)


def _resume_model(config: TrainConfig, run_dir: Path, venv: VecEnv) -> DQN:
    from stable_baselines3 import DQN

    _remove_interrupted_writes(run_dir)
    checkpoint = latest_checkpoint(run_dir / "checkpoints")
    if checkpoint is None:
        raise FileNotFoundError(f"{run_dir / 'checkpoints'} holds no complete checkpoint")
    kind = DQN
    if config.demonstrations["source"] is not None:
        from qlr.agents.learn.dqfd import DQfD

        kind = DQfD
    with warnings.catch_warnings():
        # A saved n-step model records its NStepReplayBuffer class (with n_steps and gamma), and
        # SB3 warns that n_steps "is ignored" beside it: the buffer it rebuilds is the n-step one.
        warnings.filterwarnings("ignore", message=".*n_steps=.* is ignored", category=UserWarning)
        model = kind.load(
            checkpoint.model,
            env=venv,
            device=config.dqn.get("device", "auto"),
            tensorboard_log=str((run_dir / "tensorboard").resolve()),
        )
    if config.demonstrations["source"] is not None:
        model.demonstrations = _demonstration_buffer(config, run_dir, venv, print)
    model.load_replay_buffer(checkpoint.replay_buffer)
    # A new seed for the continuation: deterministic, and unlike the first segment's episodes.
    model.set_random_seed(config.seed + checkpoint.num_timesteps)
    return model


def _finish(
    config: TrainConfig, run_dir: Path, model: DQN, echo: Callable[[str], None]
) -> tuple[dict[str, str], dict[str, Any] | None]:
    """Final model and policy, then the final evaluation of the best and the final policy."""
    from qlr.agents.learn.callbacks import HeldOutEvaluator

    config_dict = config.to_dict()
    files = {"run_dir": str(run_dir), "config": str(run_dir / CONFIG_FILE)}
    atomic_save(run_dir / "final_model.zip", model.save)
    files["final_model"] = str(run_dir / "final_model.zip")
    try:
        export_model(model, run_dir / "final_policy.qlr", config_dict, extra={"source": "final"})
        files["final_policy"] = str(run_dir / "final_policy.qlr")
    except ValueError as err:  # a diverged network; the best policy may still be sound
        echo(f"no final_policy.qlr: {err}")
    files["tensorboard"] = str(run_dir / "tensorboard")
    files["checkpoints"] = str(run_dir / "checkpoints")
    if (run_dir / "best_policy.qlr").is_file():
        files["best_policy"] = str(run_dir / "best_policy.qlr")
        files["eval_history"] = str(run_dir / EVAL_HISTORY_FILE)
    final_config = config.final_eval_config()
    if final_config is None:
        return files, None
    evaluator = HeldOutEvaluator(final_config, config.eval_jobs, run_dir / "final_eval_ref.json")
    policies = {
        name: Path(files[f"{name}_policy"])
        for name in ("best", "final")
        if f"{name}_policy" in files
    }
    if not policies:
        return files, None
    echo(f"final evaluation of {', '.join(policies)} on held-out {final_config.distribution!r}")
    summaries = {}
    for name, path in policies.items():
        summaries[name] = evaluator.evaluate(path, jobs=config.eval_jobs)
        echo(f"\n{name}_policy.qlr:\n{format_summary(summaries[name])}")
    write_json(run_dir / "final_eval.json", {"config": asdict(final_config), **summaries})
    files["final_eval"] = str(run_dir / "final_eval.json")
    return files, {name: s["overall"] for name, s in summaries.items()}


def format_result(result: TrainResult) -> str:
    """The few lines printed at the end of training."""
    lines = [
        f"trained {result.session_timesteps:,} transitions ({result.num_timesteps:,} in all) "
        f"in {result.wall_time:.0f} s: {result.transitions_per_s:.0f} transitions/s of learning "
        f"(+{result.eval_time:.0f} s periodic evaluation, {result.checkpoint_time:.0f} s "
        "checkpoints)",
    ]
    if result.best_eval is not None:
        best = result.best_eval
        lines.append(
            f"best held-out eval: median log10(final/oracle) {best['median_log10_vs_oracle']:+.2f}"
            f" at {best['num_timesteps']:,} transitions (vs start rate "
            f"{best['median_log10_vs_start']:+.2f}, {best['divergences']} divergences)"
        )
    for name, overall in (result.final_eval or {}).items():
        lines.append(
            f"final eval, {name} policy: median log10(final/oracle) "
            f"{overall['median_log10_vs_oracle']:+.2f}, within 2x of oracle "
            f"{overall['within_2x_of_oracle']:.0%}, divergences {overall['divergences']}"
        )
    lines.append(f"files in {result.run_dir}: " + ", ".join(_short(result.files)))
    return "\n".join(lines)


def _short(files: dict[str, str]) -> list[str]:
    return [Path(path).name for key, path in files.items() if key != "run_dir"]


# ---------------------------------------------------------------------------------- CLI
def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", help="a YAML config, or a shipped one's name (default, noise, tiny, ...)"
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set env.horizon=40 (repeatable)",
    )
    parser.add_argument("--out", type=Path, default=None, help="the run directory to create")
    parser.add_argument("--seed", type=int, default=None, help="override the config's seed")
    parser.add_argument(
        "--resume", type=Path, default=None, metavar="RUN_DIR", help="continue this run"
    )
    parser.add_argument("--no-progress-bar", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    progress = not args.no_progress_bar
    if args.resume is not None:
        if args.config is not None or args.overrides or args.seed is not None:
            raise UsageError("--resume takes the run's own config; drop --config, --set and --seed")
        if not (args.resume / CONFIG_FILE).is_file():
            raise UsageError(f"{args.resume} holds no run to resume (no {CONFIG_FILE})")
        config = _load_config(args.resume / CONFIG_FILE, [])
        train(config, args.resume, resume=True, progress_bar=progress)
        return 0
    if args.config is None:
        shipped = ", ".join(names("train"))
        raise UsageError(f"give --config NAME or PATH (shipped: {shipped}), or --resume RUN_DIR")
    overrides: Sequence[str] = list(args.overrides)
    if args.seed is not None:
        overrides = [*overrides, f"seed={args.seed}"]
    config = _load_config(args.config, overrides)
    run_dir = args.out if args.out is not None else default_run_dir(config)
    train(config, run_dir, progress_bar=progress)
    return 0


def _load_config(path: str | os.PathLike[str], overrides: Sequence[str]) -> TrainConfig:
    """`load_config`, whose ValueErrors all describe the user's file or ``--set`` values.

    They become `UsageError`s, so the command line answers with one line instead of a traceback.
    """
    try:
        return load_config(path, overrides)
    except UsageError:
        raise
    except ValueError as err:
        where = os.fspath(path)
        message = str(err) if str(err).startswith(where) else f"{where}: {err}"
        raise UsageError(message) from err
