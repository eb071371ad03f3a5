"""Resident memory over long runs: does a deployment loop or an env rollout leak?

(a) 100,000 optimizer steps of a Linear 20->1 model on fixed data with SGD and `QLRScheduler`
(the shipped default policy: loss and update features); (b) 100,000 transitions of
``LearningRateEnv(problem="quadratic", steps_per_decision=1, horizon=1000)`` reading the shipped
default policy's features, with a fixed action, resetting at the end of each episode. RSS
(VmRSS) is read after a warm-up of 1,000 steps and at 10 %, 50 % and 100 % of each loop: a leak
shows as growth between the 10 % and 100 % columns.

    python experiments/bench_memory.py  # writes experiments/results/bench_memory.md
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Callable
from pathlib import Path

import torch

from qlr import QLRScheduler, load_policy
from qlr._atomic import atomic_write_bytes
from qlr.envs import LearningRateEnv

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "experiments" / "results" / "bench_memory.md"
WARMUP = 1_000
CHECKPOINTS = (0.1, 0.5, 1.0)


def rss_mib() -> float:
    """Current resident set size (not the peak that `resource` reports)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def scheduler_loop() -> Callable[[], None]:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(256, 20, generator=gen)
    y = x @ torch.randn(20, 1, generator=gen)
    model = torch.nn.Linear(20, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    scheduler = QLRScheduler(optimizer)

    def step() -> None:
        optimizer.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        optimizer.step()
        scheduler.step(loss)

    return step


def env_loop() -> Callable[[], None]:
    features = load_policy("default").metadata.feature_names  # as the shipped recipe trains
    env = LearningRateEnv(
        problem="quadratic", steps_per_decision=1, horizon=1000, features=features
    )
    env.reset(seed=0)
    hold = 1  # the middle factor: keep the rate

    def step() -> None:
        _, _, terminated, truncated, _ = env.step(hold)
        if terminated or truncated:
            env.reset()

    return step


def measure(step: Callable[[], None], total: int) -> dict[str, float]:
    for _ in range(WARMUP):
        step()
    row = {"after warm-up": rss_mib()}
    marks = {round(total * f): f"{f:.0%}" for f in CHECKPOINTS}
    began = time.perf_counter()
    for i in range(1, total + 1):
        step()
        if i in marks:
            row[marks[i]] = rss_mib()
    row["seconds"] = time.perf_counter() - began
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(1)  # the loops are tiny; threads would only add noise

    start = rss_mib()
    rows = {
        f"QLRScheduler, Linear 20->1, SGD ({args.steps:,} steps)": measure(
            scheduler_loop(), args.steps
        ),
        f"LearningRateEnv quadratic, default features, fixed action ({args.steps:,} "
        "transitions)": measure(env_loop(), args.steps),
    }
    columns = ["after warm-up", *(f"{f:.0%}" for f in CHECKPOINTS)]
    command = "python experiments/bench_memory.py"
    if args.steps != 100_000:
        command += f" --steps {args.steps}"
    lines = [
        "# Resident memory over long loops",
        "",
        f"    {command}",
        "",
        f"torch {torch.__version__}, Python {platform.python_version()}, one thread. "
        f"RSS in MiB (VmRSS); {start:.1f} MiB after imports. Warm-up: {WARMUP:,} steps.",
        "",
        "| loop | " + " | ".join(columns) + " | growth 10%->100% | seconds |",
        "|---|" + "---:|" * (len(columns) + 2),
    ]
    for name, row in rows.items():
        cells = [f"{row[c]:.1f}" for c in columns]
        growth = row["100%"] - row["10%"]
        lines.append(
            f"| {name} | " + " | ".join(cells) + f" | {growth:+.1f} | {row['seconds']:.0f} |"
        )
    table = "\n".join(lines) + "\n"
    print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(args.out, table.encode())


if __name__ == "__main__":
    main()
