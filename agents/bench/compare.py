"""Benchmark suites: methods x held-out problems x seeds at equal budgets (``qlr compare``).

A suite is a YAML file in ``experiments/configs/`` (see ``hansen.yaml`` for every key). For each
problem entry, seed, inner optimizer and initial learning rate, every method runs on a freshly
built held-out instance under the same budget:

* ``grad``: the same number of gradient evaluations (a line search's trial points are free);
* ``grad+func``: the same number of gradient plus function evaluations (they are not);
* ``both`` (default): each method under each of the two, reported separately. Methods that
  never evaluate trial points spend the same either way, so they run once;
* ``examples``: the same number of data examples processed (the graduated-optimisation suite,
  where a schedule that grows the batch takes fewer, larger steps).

Every run is scored against the oracle constant: the lowest final loss over a grid of constant
rates, chosen in hindsight for that instance and inner optimizer (for methods that bring their
own update, such as the line searches, the lowest over all inner optimizers). It is a reference
line, not a method. The score is log10(final loss / oracle final loss): 0 matches the best
constant rate in hindsight, negative beats it. A divergence scores +12. A run reaches its target
when a loss it measured falls to ``target_factor`` (10) times the oracle's final loss.

Seeds are held-out instances: seed ``i`` of problem entry ``j`` is instance
``1_000_003 + 1000 j + i`` (training never draws seeds this high), with its own data,
initialisation and minibatch order.

Outputs in ``--out``: ``runs.csv`` (one row per run), ``summary.md`` and ``summary.json``,
``plots/`` (loss against evaluations and learning-rate trajectories for a few instances; the
distribution of scores) and ``tensorboard/<method>/`` (summary scalars and example curves).
A run that raises is recorded with status ``failed`` and its error, a run whose loss blows up
with status ``diverged``, a method that does not apply to a problem (a line search on
minibatches) with status ``n/a``; the rest of the suite completes either way.

This module is the front end: `compare` runs a suite end to end and the ``qlr compare`` command
line. The pieces are modules of their own: suite files (`qlr.agents.bench.suites`), the runs and
their backends (`qlr.agents.bench.runner`, `qlr.agents.bench.ray_backend`), the scores
(`qlr.agents.bench.scoring`) and the output files (`qlr.agents.bench.report`).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from qlr._atomic import atomic_write_bytes
from qlr.agents.bench.report import (
    example_runs,
    format_summary,
    plot_examples,
    plot_scores,
    write_csv,
    write_tensorboard,
)
from qlr.agents.bench.runs import BACKENDS
from qlr.agents.bench.scoring import score_rows, summarize
from qlr.agents.bench.suites import COUNTS, Suite, check_suite, load_suite
from qlr.agents.errors import UsageError

__all__ = ["CompareReport", "command_line", "compare", "configure", "run", "suite_from_args"]


@dataclass
class CompareReport:
    """What `compare` produced."""

    suite: Suite
    rows: list[dict]
    summary: dict[str, Any]
    wall_time: float
    files: list[Path] = field(default_factory=list)


def compare(
    suite: Suite,
    out: Path,
    jobs: int = 1,
    progress: bool = True,
    command: str = "",
    backend: str = "local",
    address: str | None = None,
) -> CompareReport:
    """Run `suite` and write every output into `out`.

    `backend` and `address`: see `qlr.agents.bench.runner.run_all`.
    """
    # The runner and the registry load qlr.envs (gymnasium): only when a suite runs, not when
    # the command line starts.
    from qlr.agents.bench.baselines import get_method
    from qlr.agents.bench.runner import make_specs, run_all

    began = time.perf_counter()
    methods = [get_method(m) for m in suite.methods]
    specs, skipped = make_specs(suite)
    results = run_all(specs, jobs, progress, backend, address)
    rows: list[dict] = []
    curves: list[dict | None] = []
    for spec_rows, curve in results:
        rows += spec_rows
        curves += [curve] * len(spec_rows)
    rows += skipped
    curves += [None] * len(skipped)
    score_rows(rows, curves, suite)
    summary = summarize(rows, suite, methods)
    wall = time.perf_counter() - began
    out.mkdir(parents=True, exist_ok=True)
    write_csv(rows, out / "runs.csv")
    markdown = format_summary(summary, suite, command, wall)
    atomic_write_bytes(out / "summary.md", markdown.encode())
    record = {"suite": _suite_dict(suite), "command": command, "wall_time": wall, **summary}
    atomic_write_bytes(out / "summary.json", json.dumps(record, indent=1, default=str).encode())
    examples = example_runs(rows, curves, suite, methods)
    files = [out / "runs.csv", out / "summary.md", out / "summary.json"]
    files += plot_examples(examples, suite, out / "plots")
    files.append(plot_scores(rows, suite, out / "plots"))
    write_tensorboard(summary, examples, suite, out / "tensorboard", methods)
    files.append(out / "tensorboard")
    return CompareReport(suite, rows, summary, wall, files)


def _suite_dict(suite: Suite) -> dict:
    data = asdict(suite)
    data["problems"] = [
        {"label": p.label, "family": p.family, "kwargs": dict(p.kwargs)} for p in suite.problems
    ]
    return data


# --------------------------------------------------------------------------- CLI


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--suite", required=True, help="suite name in experiments/configs, or a YAML path"
    )
    parser.add_argument("--methods", nargs="+", default=None, help="replace the suite's methods")
    parser.add_argument("--exclude", nargs="+", default=(), help="drop these methods")
    parser.add_argument("--seeds", type=int, default=None, help="held-out instances per problem")
    parser.add_argument("--optimizers", nargs="+", default=None)
    parser.add_argument("--budget", choices=COUNTS, default=None, help="what the budget counts")
    parser.add_argument("--evals", type=int, default=None, help="budget in evaluations")
    parser.add_argument("--examples", type=int, default=None, help="budget in examples")
    parser.add_argument(
        "--jobs", type=int, default=os.cpu_count() or 1, help="worker processes (Ray: its CPUs)"
    )
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default="local",
        help="local worker processes, or Ray tasks (needs: pip install 'qlr[ray]')",
    )
    parser.add_argument(
        "--address",
        default=None,
        metavar="HOST:PORT",
        help="with --backend ray: join this running cluster instead of starting Ray here",
    )
    parser.add_argument("--out", type=Path, default=None, help="default: runs/compare_<suite>")
    parser.add_argument("--no-progress-bar", dest="progress", action="store_false")


def suite_from_args(args: argparse.Namespace) -> Suite:
    """The suite file with the command line's overrides applied."""
    suite = load_suite(args.suite)
    changes: dict[str, Any] = {}
    if args.methods:
        changes["methods"] = tuple(args.methods)
    if args.exclude:
        changes["methods"] = tuple(
            m for m in changes.get("methods", suite.methods) if m not in args.exclude
        )
    if args.seeds is not None:
        changes["seeds"] = args.seeds
    if args.optimizers:
        changes["optimizers"] = tuple(args.optimizers)
    if args.budget is not None:
        if args.budget == "examples" and not (args.examples or suite.examples):
            raise ValueError("--budget examples needs --examples N (or 'examples' in the suite)")
        changes["count"] = args.budget
        if args.budget != "examples":
            changes["examples"] = None
    if args.evals is not None:
        changes["evals"] = args.evals
    if args.examples is not None:
        changes["examples"] = args.examples
    suite = replace(suite, **changes)
    check_suite(suite)
    return suite


def command_line(args: argparse.Namespace, suite: str) -> str:
    """The ``qlr compare`` command that reproduces this run, for the summary's header."""
    parts = ["qlr", "compare", "--suite", suite]
    for flag, value in (
        ("--methods", args.methods),
        ("--exclude", args.exclude),
        ("--seeds", args.seeds),
        ("--optimizers", args.optimizers),
        ("--budget", args.budget),
        ("--evals", args.evals),
        ("--examples", args.examples),
        ("--jobs", args.jobs),
        ("--backend", None if args.backend == "local" else args.backend),
        ("--address", args.address),
        ("--out", args.out),
    ):
        if value is None or value == () or value == []:
            continue
        values = value if isinstance(value, (list, tuple)) else [value]
        parts += [flag, *(str(v) for v in values)]
    return " ".join(shlex.quote(p) for p in parts)


def run(args: argparse.Namespace) -> int:
    if args.address is not None and args.backend != "ray":
        raise UsageError("--address is a Ray cluster's; add --backend ray")
    try:
        suite = suite_from_args(args)
    except UsageError:
        raise
    except ValueError as err:  # an unknown method, family or key: the user's suite or flags
        raise UsageError(str(err)) from None
    out = args.out or Path("runs") / f"compare_{suite.name}"
    command = command_line(args, suite.name)
    # Runs are tiny: parallelism comes from --jobs; torch's own threads would only contend.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        report = compare(
            suite,
            out,
            jobs=args.jobs,
            progress=args.progress,
            command=command,
            backend=args.backend,
            address=args.address,
        )
    finally:
        torch.set_num_threads(threads)
    print(format_summary(report.summary, suite, command, report.wall_time))
    print(f"outputs in {out}: runs.csv, summary.md, summary.json, plots/, tensorboard/")
    return 0
