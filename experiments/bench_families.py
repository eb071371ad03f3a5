"""Cost of one inner step of each model family, at train, val and test sizes.

Measures, on one CPU thread and after warm-up:
  1. the median time of ``Problem.loss_and_grad()`` and of the full objective ``Problem.loss()``
     for instances drawn with the sampling ranges of the named distributions, full-batch and
     with the middle minibatch size of the distribution (targets at train sizes: at most about
     1.5 ms and 3 ms);
  2. LearningRateEnv decisions per second (k = 5, Adam, the 'hold' action) on each family at
     train sizes, and on the whole ``train`` distribution with and without the model
     families, from which the share of the env's time each family takes in ``train`` follows.
Other processes on the machine inflate single timings, so every figure is the lowest of
``--rounds`` medians. Writes experiments/results/bench_families.md.

    python experiments/bench_families.py [--instances 3] [--calls 30] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from qlr._atomic import atomic_write_bytes
from qlr.envs import DISTRIBUTIONS, LearningRateEnv, ProblemDistribution
from qlr.envs.distributions import MODEL_WEIGHT
from qlr.envs.problems import FAMILIES

RESULTS = Path(__file__).parent / "results" / "bench_families.md"
MODELS = ("lm_transformer", "gru_seq", "digits_cnn", "cancer_mlp", "wine_softmax", "lstm_lm")
REFERENCES = ("quadratic", "mlp", "digits_mlp")  # older families, for comparison


def median_ms(call, calls: int, rounds: int) -> float:
    """Lowest over `rounds` of the median time of `calls` calls, in milliseconds."""
    for _ in range(5):
        call()
    medians = []
    for _ in range(rounds):
        times = []
        for _ in range(calls):
            began = time.perf_counter()
            call()
            times.append(time.perf_counter() - began)
        medians.append(statistics.median(times))
    return 1e3 * min(medians)


def step_costs(family: str, kwargs: dict, instances: int, calls: int, rounds: int) -> tuple:
    """(median parameters, ms per loss_and_grad, ms per loss) over `instances` draws."""
    dims, grads, losses = [], [], []
    for seed in range(instances):
        problem = FAMILIES[family](np.random.default_rng(seed), **kwargs)
        dims.append(problem.dim)
        grads.append(median_ms(problem.loss_and_grad, calls, rounds))
        losses.append(median_ms(problem.loss, max(5, calls // 3), rounds))
    return statistics.median(dims), statistics.median(grads), statistics.median(losses)


def decisions_per_second(problem, decisions: int, episodes: int, rounds: int) -> float:
    """Env decisions per second under the 'hold' action (the agent costs nothing)."""
    env = LearningRateEnv(
        problem=problem,
        optimizer="adam",
        steps_per_decision=5,
        initial_lr_range=(1e-3, 1e-3),
        horizon=decisions,
    )
    rates = []
    for r in range(rounds):
        elapsed, count = 0.0, 0
        for episode in range(episodes):
            env.reset(seed=1000 * r + episode)
            began = time.perf_counter()
            done = False
            while not done:
                _, _, terminated, truncated, _ = env.step(1)
                count += 1
                done = terminated or truncated
            elapsed += time.perf_counter() - began
        rates.append(count / elapsed)
    return max(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=3)
    parser.add_argument("--calls", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--mix-episodes", type=int, default=60)
    args = parser.parse_args()
    torch.set_num_threads(1)

    step_rows = []
    for family in (*MODELS, *REFERENCES):
        for split in ("train", "val", "test"):
            if family not in DISTRIBUTIONS[split].families:
                continue
            base = DISTRIBUTIONS[split].families[family][1]
            sizes = sorted(b for b in base.get("batch_size", []) if b is not None)
            middle = [sizes[len(sizes) // 2]] if sizes else []  # analytic families have none
            for batch in (None, *middle):
                kwargs = {**base, "scale": 1.0}
                if "batch_size" in base:
                    kwargs["batch_size"] = batch
                dim, grad, loss = step_costs(
                    family, kwargs, args.instances, args.calls, args.rounds
                )
                step_rows.append((family, split, batch or "full", dim, grad, loss))
                print(step_rows[-1], flush=True)

    train = DISTRIBUTIONS["train"].families
    env_rows = []
    for family, (_, kwargs) in train.items():
        dist = ProblemDistribution({family: (1.0, kwargs)})
        env_rows.append((family, decisions_per_second(dist, 20, 6, args.rounds)))
        print(env_rows[-1], flush=True)
    old = ProblemDistribution({f: wk for f, wk in train.items() if f not in MODELS})
    mix_rows = [
        ("train", decisions_per_second("train", 20, args.mix_episodes, args.rounds)),
        (
            "train without the model families",
            decisions_per_second(old, 20, args.mix_episodes, args.rounds),
        ),
    ]
    print(mix_rows, flush=True)

    # Expected share of the env's time spent on each family of `train`: a family's episodes
    # come in proportion to its weight and each decision takes 1 / (decisions per second).
    rate = dict(env_rows)
    cost = {f: w / rate[f] for f, (w, _) in train.items()}
    total = sum(cost.values())
    weights = sum(w for w, _ in train.values())

    lines = [
        "# Cost of the model families (one CPU thread)",
        "",
        "Produced by `python experiments/bench_families.py`. Milliseconds per call, median "
        f"over {args.instances} instances of the lowest of {args.rounds} medians of "
        f"{args.calls} calls each, after warm-up; instances drawn with each named "
        "distribution's ranges, loss scale 1. `loss()` is the full objective (the env "
        "calls it once per decision on minibatch problems).",
        "",
        "| family | split | batch | parameters | `loss_and_grad()` ms | `loss()` ms |",
        "|---|---|---|---|---|---|",
        *[
            f"| {family} | {split} | {batch} | {dim:,.0f} | {grad:.2f} | {loss:.2f} |"
            for family, split, batch, dim, grad, loss in step_rows
        ],
        "",
        "LearningRateEnv at train sizes (k = 5 inner steps per decision, Adam, full-batch and "
        "minibatch instances as the `train` distribution draws them):",
        "",
        "| problems | decisions / s | weight in `train` | share of the env's time in `train` |",
        "|---|---|---|---|",
        *[
            f"| {family} | {r:,.0f} | {train[family][0]:g} | {cost[family] / total:.0%} |"
            for family, r in env_rows
        ],
        *[f"| {name} | {r:,.0f} | | |" for name, r in mix_rows],
        "",
        f"Model families (lm_transformer, gru_seq, digits_cnn) weigh {MODEL_WEIGHT:g} each "
        f"against 1 for each other data family and 2 for quadratics: {3 * MODEL_WEIGHT:g} of "
        f"{weights:g}, i.e. {3 * MODEL_WEIGHT / weights:.0%} of `train` episodes.",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(RESULTS, text.encode())


if __name__ == "__main__":
    main()
