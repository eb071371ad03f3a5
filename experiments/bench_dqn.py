"""DQN training throughput (transitions/s) with 1 and 2 environments.

One environment runs in this process (DummyVecEnv), two in subprocesses (SubprocVecEnv) and,
for comparison, in this process.

Runs stable-baselines3's DQN with a config's settings (default: the shipped controller's) for a
short budget, three times per setting, and reports the median transitions per second of
``model.learn`` (env steps, gradient steps and qlr's logging callbacks; no evaluation, no
checkpoints, no process start-up). Learning starts after one batch, so every run is in the
steady state of a long training run rather than in its gradient-free warm-up.

    python experiments/bench_dqn.py                      # writes experiments/results/bench_dqn.md
    python experiments/bench_dqn.py --timesteps 1000 --repeats 1 --out /tmp/bench.md
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

from qlr._atomic import atomic_write_bytes

ROOT = Path(__file__).resolve().parent.parent
# (n_envs, vec_env). Two envs in this process as well: SB3 steps its envs in lockstep, so
# subprocesses only pay off when envs cost alike, which inner problems of mixed sizes do not.
SETTINGS = ((1, "dummy"), (2, "subproc"), (2, "dummy"))


def measure(config_path: Path, n_envs: int, vec_env: str, timesteps: int, seed: int) -> float:
    """Transitions per second of one short `learn` with the given number of environments."""
    import torch
    from stable_baselines3 import DQN
    from stable_baselines3.common.callbacks import CallbackList

    from qlr.agents.learn.callbacks import QValueCallback, RolloutStatsCallback
    from qlr.agents.learn.config import dqn_model_kwargs, load_config
    from qlr.agents.learn.train import make_vec_env

    torch.set_num_threads(1)  # as `qlr train` does
    overrides = [f"n_envs={n_envs}", f"vec_env={vec_env}", f"seed={seed}"]
    config = load_config(config_path, overrides)
    kwargs = dqn_model_kwargs(config)
    kwargs["learning_starts"] = kwargs["batch_size"]
    venv = make_vec_env(config)
    try:
        model = DQN("MlpPolicy", venv, seed=seed, **kwargs)
        callbacks = CallbackList(
            [RolloutStatsCallback(int(venv.action_space.n)), QValueCallback(config.log_freq)]
        )
        began = time.perf_counter()
        model.learn(timesteps, callback=callbacks)
        return model.num_timesteps / (time.perf_counter() - began)
    finally:
        venv.close()


def markdown(results: dict[tuple[int, str], list[float]], args: argparse.Namespace) -> str:
    load = os.getloadavg() if hasattr(os, "getloadavg") else ("?",) * 3
    lines = [
        "# DQN training throughput",
        "",
        f"`python experiments/bench_dqn.py --config {args.config.relative_to(ROOT)} "
        f"--timesteps {args.timesteps} --repeats {args.repeats}`",
        "",
        f"Machine: {os.cpu_count()} cores, {platform.processor() or platform.machine()}, "
        f"Python {platform.python_version()}; load average before the runs "
        f"{args.load[0]:.2f} (after: {load[0]:.2f}). Other work on the machine lowers these "
        "figures.",
        "",
        "Transitions/s of `model.learn` (env steps + gradient steps + qlr's logging callbacks; "
        "no evaluation, checkpoints or start-up), learning from the first batch on:",
        "",
        "| envs | vec env | runs (transitions/s) | median |",
        "|---|---|---|---|",
    ]
    for (n_envs, vec_env), rates in results.items():
        runs = ", ".join(f"{r:.0f}" for r in rates)
        lines.append(f"| {n_envs} | {vec_env} | {runs} | **{statistics.median(rates):.0f}** |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=ROOT / "experiments/configs/default.yaml")
    parser.add_argument("--timesteps", type=int, default=3000, help="transitions per run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "experiments/results/bench_dqn.md")
    args = parser.parse_args()
    args.config = args.config.resolve()
    args.load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    results: dict[tuple[int, str], list[float]] = {}
    for n_envs, vec_env in SETTINGS:
        rates = [
            measure(args.config, n_envs, vec_env, args.timesteps, seed)
            for seed in range(args.repeats)
        ]
        results[(n_envs, vec_env)] = rates
        print(f"{n_envs} env(s), {vec_env}: median {statistics.median(rates):.0f} transitions/s")
    text = markdown(results, args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(args.out, text.encode())
    print(text)
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
