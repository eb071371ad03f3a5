"""stable-baselines3 callbacks of ``qlr train``: statistics, q-values, checkpoints, evaluation.

TensorBoard tags written here (besides SB3's own ``rollout/ep_rew_mean``, ``train/loss``, ...),
all at global step = transitions so far:

==================================  =============================================================
``rollout/episode_return``          mean return of the episodes finished since the last point
``rollout/loss_ratio``              median final / initial inner loss of those episodes
``rollout/divergence_rate``         fraction of those episodes that ended in a divergence
``rollout/batch_growth``            median final / starting batch size of those episodes
                                    (noise-level mode only)
``rollout/action_freq/<i>``         fraction of transitions that took action i (exploration too)
``train/q_mean/<i>``, ``q_std/<i>`` q-value of action i on a fixed batch of replay observations
``train/q_chosen``                  mean q-value of the greedy action on that batch
``eval/median_log10_vs_oracle``     held-out score (lower is better; 0 = best constant rate)
``eval/median_log10_vs_start``      against the constant rate each run starts from
``eval/divergences``                held-out runs that diverged
``eval/within_2x_of_oracle``        fraction of held-out runs within 2x of the oracle's loss
``eval/family/<family>``            median_log10_vs_oracle per problem family
``eval/best_median_log10_vs_oracle``  best score so far (the model kept as best_policy.qlr)
``eval/lr_trajectories``            figure: learning rate and loss of a few evaluation runs
``hyperparameters``                 text: the resolved config as a Markdown table
==================================  =============================================================

The per-step trajectories ``eval/lr/<episode>`` (x axis: inner step) go to one TensorBoard run
per evaluation, ``<run>/eval_lr/<transitions>``, so that evaluations can be overlaid instead of
drawn on top of each other in one run.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import Logger, TensorBoardOutputFormat

from qlr._atomic import atomic_save
from qlr.agents.bench.evaluate import (
    EvalConfig,
    RunSpec,
    build_problem,
    oracle_specs,
    policy_specs,
    run_specs,
    summarize,
)
from qlr.agents.learn.export import export_model
from qlr.agents.learn.run_files import (
    EVAL_HISTORY_FILE,
    SCORE_KEY,
    Checkpoint,
    checkpoint_paths,  # noqa: F401  re-exported (see "checkpoints" below)
    latest_checkpoint,  # noqa: F401
    list_checkpoints,  # noqa: F401
    prune_checkpoints,
    save_checkpoint,
    write_json,
)
from qlr.envs.optimizers import make_optimizer
from qlr.envs.run import run_policy


# ---------------------------------------------------------------------------------- helpers
def tensorboard_writer(logger: Logger) -> Any | None:
    """The ``SummaryWriter`` behind SB3's logger, so that our tags share its event file."""
    for output in logger.output_formats:
        if isinstance(output, TensorBoardOutputFormat):
            return output.writer
    return None


def _due(previous: int, now: int, every: int) -> bool:
    """True when a multiple of `every` lies in (previous, now]; vec envs advance by n_envs."""
    return every > 0 and now // every > previous // every


@contextlib.contextmanager
def preserved_rng() -> Iterator[None]:
    """Leave the global random states and torch's thread count as they were.

    An evaluation in the middle of training then does not change what training does next:
    the same seed gives the same model whether or how often it is evaluated.
    """
    # SB3 draws exploration and replay batches from numpy's legacy global generator.
    states = random.getstate(), np.random.get_state(), torch.get_rng_state()  # noqa: NPY002
    threads = torch.get_num_threads()
    try:
        yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])  # noqa: NPY002
        torch.set_rng_state(states[2])
        torch.set_num_threads(threads)


def hyperparameter_markdown(config: Mapping[str, Any]) -> str:
    """The config as a two-column Markdown table with dotted keys (as CleanRL logs it)."""
    rows = [f"|{key}|{value}|" for key, value in _flatten(config)]
    return "|param|value|\n|-|-|\n" + "\n".join(rows)


def _flatten(data: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    items: list[tuple[str, Any]] = []
    for key, value in data.items():
        if isinstance(value, Mapping) and value:
            items.extend(_flatten(value, f"{prefix}{key}."))
        else:
            items.append((f"{prefix}{key}", value))
    return items


class HyperparameterCallback(BaseCallback):
    """Logs the resolved config as the TensorBoard text ``hyperparameters``."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        super().__init__()
        self.config = dict(config)

    def _on_training_start(self) -> None:
        writer = tensorboard_writer(self.logger)
        if writer is not None:
            writer.add_text("hyperparameters", hyperparameter_markdown(self.config))

    def _on_step(self) -> bool:
        return True


# ---------------------------------------------------------------------------------- rollouts
class RolloutStatsCallback(BaseCallback):
    """Episode returns, final/initial loss ratios, divergences and action frequencies.

    Args:
        n_actions: size of the discrete action space.
        log_freq: transitions between two TensorBoard points.
    """

    def __init__(self, n_actions: int, log_freq: int = 1000) -> None:
        super().__init__()
        self.n_actions = n_actions
        self.log_freq = log_freq
        self._reset_window()
        self._last_log = 0

    def _reset_window(self) -> None:
        self._returns: list[float] = []
        self._ratios: list[float] = []
        self._growths: list[float] = []
        self._episodes = 0
        self._diverged = 0
        self._action_counts = np.zeros(self.n_actions, dtype=np.int64)

    def _on_training_start(self) -> None:
        self._last_log = self.num_timesteps

    def _on_step(self) -> bool:
        actions = np.asarray(self.locals["actions"]).reshape(-1).astype(np.int64)
        self._action_counts += np.bincount(actions, minlength=self.n_actions)[: self.n_actions]
        for done, info in zip(self.locals["dones"], self.locals["infos"], strict=True):
            if done:
                self._record_episode(info)
        if _due(self._last_log, self.num_timesteps, self.log_freq):
            self._write()
            self._last_log = self.num_timesteps
        return True

    def _record_episode(self, info: Mapping[str, Any]) -> None:
        self._episodes += 1
        if "episode" in info:
            self._returns.append(float(info["episode"]["r"]))
        if info.get("batch_growth") is not None:
            self._growths.append(float(info["batch_growth"]))
        if info.get("diverged"):
            self._diverged += 1
            return
        loss, initial = info.get("objective"), info.get("initial_loss")  # full objectives
        if loss is not None and initial and math.isfinite(loss) and math.isfinite(initial):
            self._ratios.append(float(loss) / float(initial))

    def _write(self) -> None:
        writer = tensorboard_writer(self.logger)
        step = self.num_timesteps
        if writer is not None:
            total = int(self._action_counts.sum())
            for i, count in enumerate(self._action_counts):
                writer.add_scalar(f"rollout/action_freq/{i}", count / max(total, 1), step)
            if self._returns:
                writer.add_scalar("rollout/episode_return", float(np.mean(self._returns)), step)
            if self._ratios:
                writer.add_scalar("rollout/loss_ratio", float(np.median(self._ratios)), step)
            if self._growths:
                writer.add_scalar("rollout/batch_growth", float(np.median(self._growths)), step)
            if self._episodes:
                writer.add_scalar("rollout/divergence_rate", self._diverged / self._episodes, step)
        self._reset_window()


# ---------------------------------------------------------------------------------- q-values
class QValueCallback(BaseCallback):
    """Q-values on a fixed batch of replay observations: the Q-convergence curves.

    The batch is the `batch_size` most recent observations in the replay buffer when learning
    starts, then never changes (as the DQN papers track the average max-Q of held-out states),
    so the curves show the network changing, not the states. With `batch_path` the batch is
    saved and reused by a resumed run.
    """

    def __init__(
        self, log_freq: int = 1000, batch_size: int = 256, batch_path: Path | None = None
    ) -> None:
        super().__init__()
        self.log_freq = log_freq
        self.batch_size = batch_size
        self.batch_path = batch_path
        self.batch: np.ndarray | None = None
        self._last_log = 0

    def _on_training_start(self) -> None:
        self._last_log = self.num_timesteps
        if self.batch is None and self.batch_path is not None and self.batch_path.is_file():
            self.batch = np.load(self.batch_path)

    def _on_step(self) -> bool:
        if not _due(self._last_log, self.num_timesteps, self.log_freq):
            return True
        self._last_log = self.num_timesteps
        if self.batch is None:
            self.batch = self._recent_observations()
            if self.batch is None:
                return True
            if self.batch_path is not None:
                atomic_save(self.batch_path, lambda f: np.save(f, self.batch))
        self._write(self.q_values(self.batch))
        return True

    def _recent_observations(self) -> np.ndarray | None:
        buffer = self.model.replay_buffer
        if self.num_timesteps < self.model.learning_starts or buffer is None:
            return None
        size = buffer.size()  # filled slots; each slot holds one observation per env
        slots = min(size, math.ceil(self.batch_size / buffer.n_envs))
        if slots == 0:
            return None
        index = (buffer.pos - 1 - np.arange(slots)) % buffer.buffer_size
        obs = buffer.observations[index].reshape(-1, buffer.observations.shape[-1])
        return np.array(obs[: self.batch_size], dtype=np.float32)

    @torch.no_grad()
    def q_values(self, obs: np.ndarray) -> np.ndarray:
        """The online network's q-values for a batch of observations, shape [n, n_actions]."""
        q_net = self.model.q_net
        return q_net(torch.as_tensor(obs, device=self.model.device)).cpu().numpy()

    def _write(self, q: np.ndarray) -> None:
        writer = tensorboard_writer(self.logger)
        if writer is None:
            return
        step = self.num_timesteps
        for i in range(q.shape[1]):
            writer.add_scalar(f"train/q_mean/{i}", float(q[:, i].mean()), step)
            writer.add_scalar(f"train/q_std/{i}", float(q[:, i].std()), step)
        writer.add_scalar("train/q_chosen", float(q.max(axis=1).mean()), step)


# ---------------------------------------------------------------------------------- checkpoints
# The checkpoint files themselves are `qlr.agents.learn.run_files`, which export, resume and
# sweeps read without stable-baselines3; the names stay importable from here too, beside the
# callback that writes them.
class CheckpointCallback(BaseCallback):
    """Every `save_freq` transitions, and at the end: model zip + replay buffer + JSON marker.

    A checkpoint is taken at the first rollout boundary at or after each multiple of
    `save_freq` (a rollout is ``train_freq * n_envs`` transitions).

    Unlike SB3's own ``CheckpointCallback`` it counts transitions rather than calls, writes
    atomically (an interrupted save never leaves a file that looks complete) and checkpoints
    the end of training, so resuming a finished run has nothing left to learn.
    """

    def __init__(self, directory: Path, save_freq: int, keep: int = 2) -> None:
        super().__init__()
        self.directory = directory
        self.save_freq = save_freq
        self.keep = keep
        self._last_save = 0
        self.seconds = 0.0

    def _on_training_start(self) -> None:
        self._last_save = self.num_timesteps

    def _on_rollout_start(self) -> None:
        # Between rollouts every collected transition is in the buffer and the gradient steps
        # after it are done: model and buffer agree. (In `_on_step` the step's own transition
        # is not yet stored, so a resumed run would miss it.)
        if _due(self._last_save, self.num_timesteps, self.save_freq):
            self.save()

    def _on_step(self) -> bool:
        return True

    def _on_training_end(self) -> None:
        if self.save_freq > 0 and self._last_save != self.num_timesteps:
            self.save()

    def save(self) -> Checkpoint:
        began = time.perf_counter()
        checkpoint = save_checkpoint(self.model, self.directory)
        prune_checkpoints(self.directory, self.keep)
        self._last_save = self.num_timesteps
        self.seconds += time.perf_counter() - began
        return checkpoint


# ---------------------------------------------------------------------------------- evaluation
class HeldOutEvaluator:
    """Scores policy files on held-out instances, running the reference runs only once.

    The oracle grid and the constant runs at each starting rate do not depend on the policy,
    so they are computed once (and cached in `cache`, for a resumed run); each evaluation then
    runs only the policy's own runs.

    Args:
        config: which instances, optimizers, starting rates and budget.
        jobs: worker processes for the reference runs.
        cache: a JSON file for the reference rows, reused when its config matches.
    """

    def __init__(self, config: EvalConfig, jobs: int = 1, cache: Path | None = None) -> None:
        self.config = config
        self.jobs = jobs
        self.cache = cache
        self._reference: list[dict] | None = None

    def reference_specs(self) -> list[RunSpec]:
        constants = [s for s in policy_specs(self.config, "-") if s.method == "constant"]
        return oracle_specs(self.config) + constants

    def reference_rows(self) -> list[dict]:
        """Oracle-grid and starting-rate constant runs (computed or read from the cache once)."""
        if self._reference is None:
            key = json.loads(json.dumps(asdict(self.config)))
            if self.cache is not None and self.cache.is_file():
                cached = json.loads(self.cache.read_text())
                if cached.get("config") == key:
                    self._reference = cached["rows"]
            if self._reference is None:
                self._reference = run_specs(self.reference_specs(), self.jobs)
                if self.cache is not None:
                    write_json(self.cache, {"config": key, "rows": self._reference})
        return self._reference

    def policy_rows(self, policy: str | os.PathLike, jobs: int = 1) -> list[dict]:
        specs = [s for s in policy_specs(self.config, os.fspath(policy)) if s.method != "constant"]
        return run_specs(specs, jobs)

    def evaluate(self, policy: str | os.PathLike, jobs: int = 1) -> dict[str, Any]:
        """The `summarize` dict (overall and per family) of `policy` on these instances."""
        return summarize(self.policy_rows(policy, jobs), self.reference_rows())

    def trajectories(self, policy: str | os.PathLike, count: int = 2) -> list[tuple[str, Any]]:
        """(name, `RunResult` with per-step rates and losses) of `count` evaluation runs."""
        specs = [s for s in policy_specs(self.config, "-") if s.method != "constant"]
        picked = [specs[i * len(specs) // count] for i in range(min(count, len(specs)))]
        results = []
        for spec in picked:
            problem = build_problem(spec.family, dict(spec.family_kwargs), spec.instance_seed)
            optimizer = make_optimizer(spec.optimizer, problem.params, spec.lr)
            result = run_policy(problem, optimizer, os.fspath(policy), spec.steps)
            results.append((f"{spec.family}-{spec.optimizer}-lr{spec.lr:.0e}", result))
        return results


class HeldOutEvalCallback(BaseCallback):
    """Every `eval_freq` transitions (and at the end): score the current Q-network, keep the best.

    Evaluations happen at the first rollout boundary at or after each multiple of `eval_freq`.

    The network is exported to a policy file and run through `QLRScheduler`, the deployment
    path, on held-out instances. The best model by ``median_log10_vs_oracle`` (lower is
    better) is kept as ``best_policy.qlr`` and ``best_model.zip``; every evaluation is appended
    to ``eval_history.json``.

    Args:
        evaluator: the held-out instances, with their reference rows.
        eval_freq: transitions between evaluations.
        run_dir: where the policy files and the history go.
        train_config: the resolved config, recorded in the exported policy files.
        history: earlier evaluations of a resumed run.
        trajectories: evaluation runs whose learning-rate trajectory is logged.
    """

    def __init__(
        self,
        evaluator: HeldOutEvaluator,
        eval_freq: int,
        run_dir: Path,
        train_config: Mapping[str, Any],
        history: Sequence[dict] = (),
        trajectories: int = 2,
    ) -> None:
        super().__init__()
        self.evaluator = evaluator
        self.eval_freq = eval_freq
        self.run_dir = run_dir
        self.train_config = dict(train_config)
        self.history = list(history)
        self.trajectories = trajectories
        self.best_score = min((h.get(SCORE_KEY, math.inf) for h in self.history), default=math.inf)
        self.seconds = 0.0
        self._last_eval = 0

    def _on_training_start(self) -> None:
        self._last_eval = self.num_timesteps

    def _on_rollout_start(self) -> None:
        # Between rollouts, as checkpoints: the model evaluated has learned from every transition
        # counted in its step.
        if _due(self._last_eval, self.num_timesteps, self.eval_freq):
            self.evaluate()

    def _on_step(self) -> bool:
        return True

    def _on_training_end(self) -> None:
        if self.eval_freq > 0 and self._last_eval != self.num_timesteps:
            self.evaluate()

    def evaluate(self) -> dict:
        """Evaluate the current model now; returns its history entry."""
        began = time.perf_counter()
        self._last_eval = self.num_timesteps
        tmp = self.run_dir / ".eval_policy.qlr"
        try:
            export_model(self.model, tmp, self.train_config, extra={"source": "periodic eval"})
        except ValueError as err:  # a diverged network: record it, let training go on
            return self._record({"num_timesteps": int(self.num_timesteps), "error": str(err)})
        try:
            with preserved_rng():
                summary = self.evaluator.evaluate(tmp)
                runs = self.evaluator.trajectories(tmp, self.trajectories)
            overall = summary["overall"]
            entry = {
                "num_timesteps": int(self.num_timesteps),
                **overall,
                "families": {f: s[SCORE_KEY] for f, s in summary["families"].items()},
                "best": overall[SCORE_KEY] < self.best_score,
            }
            if entry["best"]:
                self.best_score = overall[SCORE_KEY]
                os.replace(tmp, self.run_dir / "best_policy.qlr")
                atomic_save(self.run_dir / "best_model.zip", self.model.save)
        finally:
            tmp.unlink(missing_ok=True)  # gone already when it became best_policy.qlr
        entry["seconds"] = time.perf_counter() - began
        self._record(entry)
        self._log(entry, runs)
        self.seconds += time.perf_counter() - began
        return entry

    def _record(self, entry: dict) -> dict:
        entry.setdefault("best", False)
        self.history.append(entry)
        write_json(self.run_dir / EVAL_HISTORY_FILE, self.history)
        if "error" in entry:
            warnings.warn(f"evaluation at {entry['num_timesteps']}: {entry['error']}", stacklevel=2)
        return entry

    def _log(self, entry: dict, runs: list[tuple[str, Any]]) -> None:
        writer = tensorboard_writer(self.logger)
        if writer is None:
            return
        step = self.num_timesteps
        for key in (SCORE_KEY, "median_log10_vs_start", "divergences", "within_2x_of_oracle"):
            writer.add_scalar(f"eval/{key}", entry[key], step)
        writer.add_scalar(f"eval/best_{SCORE_KEY}", self.best_score, step)
        for family, score in entry["families"].items():
            writer.add_scalar(f"eval/family/{family}", score, step)
        if runs:
            writer.add_figure("eval/lr_trajectories", trajectory_figure(runs, step), step)
            self._log_trajectories(writer, runs, step)
        writer.flush()

    def _log_trajectories(self, writer: Any, runs: list[tuple[str, Any]], step: int) -> None:
        # Only when a figure run is written: torch.utils.tensorboard loads TensorBoard itself.
        from torch.utils.tensorboard import SummaryWriter

        with SummaryWriter(os.path.join(writer.log_dir, "eval_lr", f"{step:09d}")) as sub:
            for name, result in runs:
                for i, lr in enumerate(result.lrs):
                    sub.add_scalar(f"eval/lr/{name}", lr, i)


def trajectory_figure(runs: list[tuple[str, Any]], step: int) -> Any:
    """Learning rate and loss per inner step of a few evaluation runs (log scales)."""
    from matplotlib.figure import Figure  # no pyplot: leaves the global backend alone

    fig = Figure(figsize=(8, 3.2), layout="constrained")
    ax_lr, ax_loss = fig.subplots(1, 2)
    for name, result in runs:
        ax_lr.plot(result.lrs, label=name)
        ax_loss.plot(np.maximum(np.asarray(result.losses, dtype=float), 1e-30), label=name)
    ax_lr.set(yscale="log", xlabel="inner step", ylabel="learning rate")
    ax_loss.set(yscale="log", xlabel="inner step", ylabel="loss")
    ax_lr.legend(fontsize="small")
    fig.suptitle(f"held-out runs after {step:,} transitions")
    return fig
