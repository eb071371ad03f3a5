"""`qlr compare` wall time on the local backend and on Ray, with one and two workers.

The same grid (by default the ``nn`` suite with one seed and four methods: 344 runs, roughly
a minute and a half in one process) runs four ways: local with ``--jobs 1`` (in this process)
and ``--jobs 2`` (a spawned pool), and as Ray tasks on a local Ray instance with 1 and 2 CPUs.
Each measurement runs in a fresh Python process, so none inherits another's warm caches or
Ray instance; the settings take turns within each repeat, so that a change in the machine's
load hits them alike. The table reports the median over the repeats of

* total: what ``qlr compare`` waits for, Ray's start and stop included (not Python's imports,
  nor building the specs, which both backends share);
* start-up: Ray's share of it (start plus shutdown of the local instance);
* speed-up: local ``--jobs 1`` total / this total.

    python experiments/bench_backends.py       # writes experiments/results/bench_backends.md
    python experiments/bench_backends.py --repeats 1 --out /tmp/bench.md \\
        -- --suite compare_tiny --methods constant     # a quick look; after -- the grid
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

from qlr._atomic import atomic_write_bytes

ROOT = Path(__file__).resolve().parent.parent
SETTINGS = (("local", 1), ("local", 2), ("ray", 1), ("ray", 2))
DEFAULT_GRID = ["--suite", "nn", "--seeds", "1", "--methods", "constant", "cosine", "armijo"]
DEFAULT_GRID += ["default"]
DEFAULT_REPEATS = 3


def measure(grid: list[str], backend: str, workers: int) -> dict[str, float]:
    """One run of the grid in this process: seconds in all, and Ray's start-up share."""
    import torch

    from qlr.agents.bench.compare import configure, suite_from_args
    from qlr.agents.bench.runner import make_specs, run_all

    parser = argparse.ArgumentParser()
    configure(parser)
    specs, _ = make_specs(suite_from_args(parser.parse_args(grid)))
    torch.set_num_threads(1)  # as `qlr compare` does
    startup = 0.0
    began = time.perf_counter()
    if backend == "ray":
        from qlr.agents.bench import ray_backend

        ray = ray_backend.start_local(workers)
        startup = time.perf_counter() - began
        run_all(specs, workers, progress=False, backend="ray")  # uses the instance just started
        stopping = time.perf_counter()
        ray.shutdown()
        startup += time.perf_counter() - stopping
    else:
        run_all(specs, workers, progress=False)
    return {"total": time.perf_counter() - began, "startup": startup, "runs": len(specs)}


def measure_in_fresh_process(grid: list[str], backend: str, workers: int) -> dict[str, float]:
    command = [sys.executable, __file__, "--measure", backend, str(workers), "--", *grid]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"{backend} x{workers} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def markdown(results: dict[tuple[str, int], list[dict]], args: argparse.Namespace) -> str:
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    baseline = statistics.median(r["total"] for r in results[("local", 1)])
    runs = results[("local", 1)][0]["runs"]
    lines = [
        "# `qlr compare`: local backend and Ray",
        "",
        f"`{args.command}`",
        "",
        f"Grid: `qlr compare {shlex.join(args.grid)}` ({runs} runs). Machine: {os.cpu_count()} "
        f"cores, {platform.processor() or platform.machine()}, Python "
        f"{platform.python_version()}; load average before the runs {args.load[0]:.2f} "
        f"(after: {load[0]:.2f}). Each measurement in a fresh process; {args.repeats} repeats"
        f"{'' if args.repeats == DEFAULT_REPEATS else f' (the default is {DEFAULT_REPEATS})'}, "
        "settings taking turns.",
        "",
        "| backend | workers | totals (s) | median total (s) | median Ray start-up (s) | "
        "speed-up |",
        "|---|---|---|---|---|---|",
    ]
    for (backend, workers), measured in results.items():
        totals = [r["total"] for r in measured]
        median = statistics.median(totals)
        startup = statistics.median(r["startup"] for r in measured) if backend == "ray" else None
        lines.append(
            f"| {backend} | {workers} | {', '.join(f'{t:.1f}' for t in totals)} | "
            f"**{median:.1f}** | {'—' if startup is None else f'{startup:.1f}'} | "
            f"{baseline / median:.2f}× |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        usage="%(prog)s [--repeats N] [--out PATH] [-- QLR COMPARE OPTIONS]",
    )
    parser.add_argument("--repeats", type=int, default=DEFAULT_REPEATS)
    parser.add_argument("--out", type=Path, default=ROOT / "experiments/results/bench_backends.md")
    parser.add_argument("--measure", nargs=2, help=argparse.SUPPRESS)  # one run, in a child
    parser.add_argument(
        "grid",
        nargs="*",
        help=f"qlr compare options after -- (default: {shlex.join(DEFAULT_GRID)})",
    )
    args = parser.parse_args()
    args.grid = args.grid or DEFAULT_GRID
    if args.measure:
        backend, workers = args.measure[0], int(args.measure[1])
        print(json.dumps(measure(args.grid, backend, workers)))
        return
    args.command = "python experiments/bench_backends.py " + shlex.join(
        ["--repeats", str(args.repeats), "--", *args.grid]
    )
    args.load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    results: dict[tuple[str, int], list[dict]] = {setting: [] for setting in SETTINGS}
    for repeat in range(args.repeats):
        for backend, workers in SETTINGS:
            measured = measure_in_fresh_process(args.grid, backend, workers)
            results[(backend, workers)].append(measured)
            print(f"repeat {repeat + 1}: {backend} x{workers}: {measured['total']:.1f} s")
    text = markdown(results, args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(args.out, text.encode())
    print(text)
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
