"""Environment throughput and the feature tracker's share of a training step.

Measures, on one CPU thread, with the feature set of the shipped ``default`` policy (the loss
and update features, which the shipped recipe trains on):
  1. LearningRateEnv transitions per second on a 100-dimensional quadratic with k = 1
     (target: at least 2,000/s) and on the digits MLP (k = 1 and k = 5);
  2. the time of FeatureTracker.update, given the loss, the gradients and the parameters (the
     update chain reads them), against a plain SGD training step of an MLP with about one
     million parameters (target: under 25 % of the step); also with the shipped ``noise``
     policy's feature set, which reads the gradients on every step as well.
Each figure is the median of several repetitions. Writes experiments/results/bench_env.md.

    python experiments/bench_env.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch

from qlr import load_policy
from qlr._atomic import atomic_write_bytes
from qlr.envs import LearningRateEnv, ProblemDistribution
from qlr.features import FeatureTracker

RESULTS = Path(__file__).parent / "results" / "bench_env.md"


def shipped_features(name: str) -> tuple[str, ...]:
    """The feature names a shipped policy reads."""
    return tuple(load_policy(name).metadata.feature_names)


def env_rate(family: str, kwargs: dict, k: int, transitions: int, repeats: int) -> float:
    """Median transitions/s of the env under a fixed 'hold' policy (the agent costs nothing)."""
    dist = ProblemDistribution({family: (1.0, kwargs)})
    env = LearningRateEnv(
        problem=dist,
        optimizer="sgd",
        steps_per_decision=k,
        initial_lr_range=(1e-3, 1e-3),
        horizon=10**9,
        features=shipped_features("default"),
    )
    rates = []
    for r in range(repeats):
        env.reset(seed=r)
        began = time.perf_counter()
        for _ in range(transitions):
            env.step(1)
        rates.append(transitions / (time.perf_counter() - began))
    return statistics.median(rates)


def feature_share(
    width: int, steps: int, repeats: int, interval: int, policy: str
) -> tuple[int, float, float]:
    """(parameters, median ms of a training step, median ms of tracker.update), the tracker
    reading the features of the shipped `policy` as `qlr.LRController` sets it up."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(256, width),
        torch.nn.ReLU(),
        torch.nn.Linear(width, width),
        torch.nn.ReLU(),
        torch.nn.Linear(width, 10),
    )
    n_params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    x, y = torch.randn(64, 256), torch.randint(0, 10, (64,))
    features = shipped_features(policy)
    tracker = FeatureTracker(interval=interval, dense="grad_noise" in features, features=features)
    params = list(model.parameters())
    step_ms, feat_ms = [], []
    for _ in range(repeats):
        t_step = t_feat = 0.0
        for _ in range(steps):
            t0 = time.perf_counter()
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            value = loss.item()
            t1 = time.perf_counter()
            tracker.update(value, [p.grad for p in params], params)
            t2 = time.perf_counter()
            t_step += t1 - t0
            t_feat += t2 - t1
            if tracker.block_length == interval:
                tracker.observation()
        step_ms.append(1e3 * t_step / steps)
        feat_ms.append(1e3 * t_feat / steps)
    return n_params, statistics.median(step_ms), statistics.median(feat_ms)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--transitions", type=int, default=2000)
    args = parser.parse_args()
    repeats = args.repeats
    torch.set_num_threads(1)
    load = os.getloadavg()
    command_args = "" if repeats == 5 else f" --repeats {repeats}"
    if args.transitions != 2000:
        command_args += f" --transitions {args.transitions}"

    quad = {"dim": (100, 100), "cond": (100.0, 100.0)}
    rows = [
        (
            "quadratic, dim 100, k = 1",
            env_rate("quadratic", quad, 1, args.transitions, args.repeats),
        ),
        ("digits MLP, full batch, k = 1", env_rate("digits_mlp", {}, 1, 300, repeats)),
        ("digits MLP, full batch, k = 5", env_rate("digits_mlp", {}, 5, 100, repeats)),
    ]
    shares = [
        (policy, k, *feature_share(1000, 30, repeats, k, policy))
        for policy, k in (("default", 5), ("default", 1), ("noise", 5))
    ]

    lines = [
        f"# Environment throughput (one CPU thread, medians of {repeats} runs)",
        "",
        f"Produced by `python experiments/bench_env.py{command_args}`; torch {torch.__version__}, "
        f"{os.cpu_count()} cores, load average before the runs {load[0]:.2f} (after: "
        f"{os.getloadavg()[0]:.2f}). The environment and the tracker read the features of the "
        "shipped `default` policy (loss and update features); the last row the shipped "
        "`noise` policy's (loss, gradient and update features, gradients read on every step).",
        "",
        "| environment | transitions / s |",
        "|---|---|",
        *[f"| {name} | {rate:,.0f} |" for name, rate in rows],
        "",
        "Feature cost against a plain SGD step (batch 64) of an MLP 256-1000-1000-10: "
        "`tracker.update(loss, grads, params)` after the step (target: under 25 % of it):",
        "",
        "| features of | steps per decision | parameters | training step (ms) | "
        "tracker update (ms) | share |",
        "|---|---|---|---|---|---|",
        *[
            f"| `{policy}` | {k} | {n:,} | {step:.2f} | {feat:.3f} | {feat / step:.1%} |"
            for policy, k, n, step, feat in shares
        ],
        "",
    ]
    text = "\n".join(lines)
    print(text)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(RESULTS, text.encode())


if __name__ == "__main__":
    main()
