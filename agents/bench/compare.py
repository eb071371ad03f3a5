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
constant rate in hindsight, negative beats it. A divergence scores +12.

A run reaches its target when a loss it measured falls to ``target_factor`` (10) times the
oracle's final loss; the cost to get there is read from the run's trace (gradient evaluations,
gradient + function evaluations, or examples). On minibatch problems the per-step loss is the
minibatch loss, so this reads a noisy estimate.

Seeds are held-out instances: seed ``i`` of problem entry ``j`` is instance
``1_000_003 + 1000 j + i`` (training never draws seeds this high), with its own data,
initialisation and minibatch order.

Outputs in ``--out``: ``runs.csv`` (one row per run), ``summary.md`` and ``summary.json``,
``plots/`` (loss against evaluations and learning-rate trajectories for a few instances; the
distribution of scores) and ``tensorboard/<method>/`` (summary scalars and example curves).
A run that raises is recorded with status ``failed`` and its error, a run whose loss blows up
with status ``diverged``, a method that does not apply to a problem (a line search on
minibatches) with status ``n/a``; the rest of the suite completes either way.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import time
import traceback
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import yaml

from qlr._atomic import atomic_write_bytes
from qlr.agents._checks import check_keys
from qlr.agents.bench.evaluate import DEFAULT_SEED, build_problem
from qlr.agents.bench.report import (
    example_runs,
    format_summary,
    plot_examples,
    plot_scores,
    write_csv,
    write_tensorboard,
)
from qlr.agents.bench.scoring import SCORED, loss_floor, oracle_losses, score
from qlr.agents.bench.workers import run_parallel
from qlr.agents.catalog import CONFIG_DIR, find_config

if TYPE_CHECKING:  # the baselines load qlr.envs (gymnasium): only when a suite runs
    from qlr.agents.bench.baselines import Budget, Method, MethodResult

# The shipped suites: experiments/configs in a checkout, qlr/configs in an installed wheel.
SUITE_DIR = CONFIG_DIR
COUNTS = ("grad", "grad+func", "both", "examples")
BACKENDS = ("local", "ray")
STATUSES = ("ok", "diverged", "failed", "n/a")


# --------------------------------------------------------------------------- suites


@dataclass(frozen=True)
class ProblemEntry:
    """One kind of held-out problem: a family with its sampling kwargs, under a label."""

    label: str
    family: str
    kwargs: tuple  # sorted (key, value) items; (lo, hi) tuples are ranges, lists are choices


@dataclass
class Suite:
    """A benchmark suite, as read from YAML."""

    name: str
    problems: list[ProblemEntry]
    methods: tuple[str, ...]
    """Method names (see `qlr.agents.bench.baselines.METHODS`) or ``policy:PATH``."""
    description: str = ""
    seeds: int = 3
    """Held-out instances per problem entry."""
    optimizers: tuple[str, ...] = ("sgd",)
    initial_lrs: tuple[float, ...] = (1e-5, 1e-4, 1e-3, 1e-2, 1e-1)
    oracle_grid: tuple[float, ...] = tuple(float(x) for x in np.logspace(-6, 1, 15))
    evals: int | None = 300
    """Budget in evaluations (gradient, or gradient + function, per `count`)."""
    examples: int | None = None
    """Budget in data examples; when set, `count` is ``examples`` and `evals` is unused."""
    count: str = "both"
    target_factor: float = 10.0
    """A run reaches its target when its loss falls to this multiple of the oracle's."""
    plot_problems: int = 4
    """Problem entries drawn in the example plots (seed 0 of each)."""

    def counts(self) -> tuple[str, ...]:
        """The budget counts this suite reports, in order."""
        if self.examples is not None:
            return ("examples",)
        return ("grad", "grad+func") if self.count == "both" else (self.count,)

    def budget(self, count: str) -> Budget:
        from qlr.agents.bench.baselines import Budget

        if count == "examples":
            return Budget(examples=self.examples)
        if count == "grad":
            return Budget(grad_evals=self.evals)
        return Budget(total_evals=self.evals)


def _method(name: str) -> Method:
    """`qlr.agents.bench.baselines.get_method`, imported on first use."""
    from qlr.agents.bench.baselines import get_method

    return get_method(name)


_SUITE_KEYS = {f.name for f in Suite.__dataclass_fields__.values()} - {"name"}
_ENTRY_KEYS = {"family", "label", "like", "kwargs"}


def suite_path(name: str | os.PathLike) -> Path:
    """The YAML file of suite `name`: a path, or the name of a shipped suite (``qlr.configs``).

    Raises:
        UsageError: (a ValueError) no such file or shipped suite, or a file of another kind (a
            training config); the message lists the shipped suites.
    """
    return find_config(name, "suite")


def load_suite(name: str | os.PathLike) -> Suite:
    """Read and check a suite file; unknown keys fail with the list of valid ones.

    Raises:
        ValueError: on a missing file, an unknown key, family or method, or a bad value.
    """
    path = suite_path(name)
    data = yaml.safe_load(path.read_text()) or {}
    check_keys(str(path), data, _SUITE_KEYS)
    if not data.get("problems") or not data.get("methods"):
        raise ValueError(f"{path}: a suite needs 'problems' and 'methods'")
    values: dict[str, Any] = dict(data)
    values["problems"] = [_entry(path, i, e) for i, e in enumerate(data["problems"])]
    for key in ("methods", "optimizers", "initial_lrs"):
        if key in values:
            values[key] = tuple(values[key])
    values["initial_lrs"] = tuple(float(x) for x in values.get("initial_lrs", Suite.initial_lrs))
    if "oracle_grid" in values:
        values["oracle_grid"] = _grid(values["oracle_grid"])
    suite = Suite(name=path.stem, **values)
    check_suite(suite)
    return suite


def check_suite(suite: Suite) -> None:
    """Fail early on anything that would only break in the middle of a run."""
    from qlr.envs.optimizers import OPTIMIZERS

    for method in suite.methods:
        _method(method)
    bad = [o for o in suite.optimizers if o not in OPTIMIZERS]
    if bad:
        raise ValueError(f"unknown optimizers {bad}; valid: {list(OPTIMIZERS)}")
    if suite.count not in COUNTS:
        raise ValueError(f"count must be one of {COUNTS}, got {suite.count!r}")
    if suite.examples is None and (not suite.evals or suite.count == "examples"):
        raise ValueError("a suite needs a budget: 'evals', or 'examples' for count examples")
    if suite.seeds < 1 or not suite.initial_lrs or not suite.oracle_grid:
        raise ValueError("a suite needs seeds >= 1, initial_lrs and an oracle_grid")
    labels = [p.label for p in suite.problems]
    if len(set(labels)) != len(labels):
        raise ValueError(f"problem labels must be unique, got {labels}")


def _entry(path: Path, index: int, spec: Any) -> ProblemEntry:
    from qlr.envs.distributions import DISTRIBUTIONS, FAMILIES

    if isinstance(spec, str):
        spec = {"family": spec}
    check_keys(f"{path}: problem {index}", spec, _ENTRY_KEYS)
    if "family" not in spec:
        raise ValueError(f"{path}: problem {index} needs 'family' (a family name)")
    family = spec["family"]
    if family not in FAMILIES:
        raise ValueError(f"{path}: unknown family {family!r}; valid: {sorted(FAMILIES)}")
    kwargs: dict[str, Any] = {}
    like = spec.get("like")
    if like is not None:
        dist = DISTRIBUTIONS.get(like)
        if dist is None or family not in dist.families:
            raise ValueError(f"{path}: distribution {like!r} has no family {family!r}")
        kwargs.update(dist.families[family][1])
    kwargs.update({k: _range_spec(v) for k, v in (spec.get("kwargs") or {}).items()})
    label = spec.get("label") or (f"{family}/{like}" if like else family)
    return ProblemEntry(label, family, tuple(sorted(kwargs.items())))


def _range_spec(value: Any) -> Any:
    """YAML to a sampling spec: ``[lo, hi]`` is a range, ``{choices: [...]}`` a choice."""
    if isinstance(value, dict):
        if set(value) != {"choices"}:
            raise ValueError(f"a mapping in kwargs must be {{choices: [...]}}, got {value}")
        return [_range_spec(v) for v in value["choices"]]
    if isinstance(value, list):
        if len(value) != 2:
            raise ValueError(f"a range is [lo, hi], got {value}; use {{choices: [...]}}")
        return tuple(value)
    return value


def _grid(value: Any) -> tuple[float, ...]:
    """A list of rates, or ``{logspace: [start, stop, num]}`` (decimal exponents)."""
    if isinstance(value, dict) and set(value) == {"logspace"}:
        start, stop, num = value["logspace"]
        return tuple(float(x) for x in np.logspace(start, stop, int(num)))
    return tuple(float(x) for x in value)


# --------------------------------------------------------------------------- runs


@dataclass(frozen=True)
class CompareSpec:
    """One run, picklable for worker processes."""

    suite: str
    problem: str
    family: str
    kwargs: tuple
    seed: int
    instance: int
    optimizer: str | None
    lr: float | None
    method: str
    budget: Budget
    counts: tuple[str, ...]  # budget counts this run stands for (identical runs are shared)
    role: str  # "method", or "oracle" for grid rates that are not initial rates


def _same(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9)


def make_specs(suite: Suite) -> tuple[list[CompareSpec], list[dict]]:
    """Runs to execute, and the rows of runs that do not apply (status n/a).

    Each instance is built once here to ask every method whether it applies.
    """
    specs: list[CompareSpec] = []
    skipped: list[dict] = []
    methods = [_method(m) for m in suite.methods]
    if "constant" not in suite.methods:  # the oracle grid runs whatever the methods are
        methods.append(_method("constant"))
    for j, entry in enumerate(suite.problems):
        for i in range(suite.seeds):
            instance = DEFAULT_SEED + 1000 * j + i
            problem = build_problem(entry.family, dict(entry.kwargs), instance)
            for method in methods:
                for optimizer in suite.optimizers if method.uses_optimizer else (None,):
                    why = method.not_applicable(problem, optimizer)
                    for lr, role in _rates(method, suite):
                        for counts in _count_groups(method, suite):
                            spec = CompareSpec(
                                suite=suite.name,
                                problem=entry.label,
                                family=entry.family,
                                kwargs=entry.kwargs,
                                seed=i,
                                instance=instance,
                                optimizer=optimizer,
                                lr=lr,
                                method=method.name,
                                budget=suite.budget(counts[0]),
                                counts=counts,
                                role=role,
                            )
                            if why is None:
                                specs.append(spec)
                            else:
                                skipped.extend(_rows(spec, problem.info(), "n/a", why, None))
    return specs, skipped


def _rates(method: Method, suite: Suite) -> list[tuple[float | None, str]]:
    """(initial rate, role) pairs; the constant method also runs the rest of the oracle grid.

    Constant runs at initial rates are the ``constant`` method's (when the suite lists it) and
    feed the oracle when they lie on its grid; the other grid rates are ``oracle`` runs only.
    """
    if not method.uses_lr:
        return [(None, "method")]
    if method.name != "constant":
        return [(lr, "method") for lr in suite.initial_lrs]
    rates: list[tuple[float | None, str]] = []
    if "constant" in suite.methods:
        rates += [(lr, "method") for lr in suite.initial_lrs]
    taken = [lr for lr, _ in rates]
    rates += [(lr, "oracle") for lr in suite.oracle_grid if not any(_same(lr, x) for x in taken)]
    return rates


def _count_groups(method: Method, suite: Suite) -> list[tuple[str, ...]]:
    """Budget counts per run: a method that never pays for trials runs once for all of them."""
    counts = suite.counts()
    return [counts] if not method.charges_trials else [(c,) for c in counts]


def execute(spec: CompareSpec) -> tuple[list[dict], dict | None]:
    """Run one spec in a fresh instance: its rows (one per budget count) and its curve."""
    import torch

    torch.manual_seed(spec.instance)  # for any method that draws from torch's global RNG
    problem = build_problem(spec.family, dict(spec.kwargs), spec.instance)
    info = problem.info()
    method: Method = _method(spec.method)
    try:
        result = method.run(problem, spec.optimizer, spec.lr, spec.budget)
    except Exception as err:  # a failing method is an outcome to record, not a crash
        lines = traceback.format_exception_only(type(err), err)
        return _rows(spec, info, "failed", lines[-1].strip()[:300], None), None
    status = "diverged" if result.diverged else "ok"
    return _rows(spec, info, status, "", result), _curve(result)


def _rows(
    spec: CompareSpec, info: dict, status: str, error: str, result: MethodResult | None
) -> list[dict]:
    row: dict[str, Any] = {
        "suite": spec.suite,
        "problem": spec.problem,
        "family": spec.family,
        "seed": spec.seed,
        "instance": spec.instance,
        "dim": info.get("dim"),
        "stochastic": info.get("stochastic"),
        "optimizer": spec.optimizer,
        "lr": spec.lr,
        "method": spec.method,
        "role": spec.role,
        "status": status,
        "error": error,
    }
    if result is not None:
        row.update(
            initial_loss=result.initial_loss,
            final_loss=result.final_loss,
            grad_evals=result.grad_evals,
            func_evals=result.func_evals,
            total_evals=result.grad_evals + result.func_evals,
            examples=result.examples_seen,
            final_lr=next((x for x in reversed(result.lrs) if math.isfinite(x)), None),
            wall_time=result.wall_time,
            # A reference line's own look at the future (the teacher), never charged to it.
            extra_grad_evals=result.extra.get("lookahead_grad_evals", 0),
        )
    return [{**row, "budget": count} for count in spec.counts]


def _curve(result: MethodResult) -> dict[str, np.ndarray]:
    return {
        "loss": np.asarray(result.losses, dtype=np.float64),
        "lr": np.asarray(result.lrs, dtype=np.float64),
        "grad": np.asarray(result.grad_trace, dtype=np.int64),
        "total": np.asarray(result.grad_trace, dtype=np.int64)
        + np.asarray(result.func_trace, dtype=np.int64),
        "examples": np.asarray(result.example_trace, dtype=np.int64),
    }


def run_all(
    specs: Sequence[CompareSpec],
    jobs: int = 1,
    progress: bool = True,
    backend: str = "local",
    address: str | None = None,
) -> list[tuple[list[dict], dict | None]]:
    """Execute specs with a progress bar, in `jobs` spawned worker processes when > 1.

    With ``backend="ray"`` every spec is a Ray task instead (`qlr.agents.bench.ray_backend`), on a
    Ray instance started here with `jobs` CPUs or on the cluster at `address`.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if address is not None and backend != "ray":
        raise ValueError("an address is a Ray cluster's: it needs backend='ray'")
    if backend == "ray":
        from qlr.agents.bench import ray_backend

        return ray_backend.run_all(specs, jobs, progress, address)
    return run_parallel(execute, specs, jobs, progress=progress, desc="qlr compare")


# --------------------------------------------------------------------------- scoring


def _key(row: dict) -> tuple:
    return (row["budget"], row["problem"], row["instance"])


def _floor(row: dict) -> float:
    return loss_floor(row.get("initial_loss"))


def score_rows(rows: list[dict], curves: list[dict | None], suite: Suite) -> None:
    """Add the oracle loss, the score and the evaluations to reach the target to every row."""
    oracle = oracle_losses(
        rows,
        key=lambda row: (*_key(row), row["optimizer"]),
        on_grid=lambda lr: any(_same(lr, x) for x in suite.oracle_grid),
    )
    # The constant rate each run started from: what the user had without any schedule.
    start = {
        (*_key(row), row["optimizer"], _rate_key(row["lr"])): row["final_loss"]
        for row in rows
        if row["method"] == "constant" and row["status"] in SCORED
    }
    for row, curve in zip(rows, curves, strict=True):
        if row["status"] not in SCORED:
            continue
        reference = start.get((*_key(row), row["optimizer"], _rate_key(row["lr"])))
        row["log10_vs_start"] = (
            None if reference is None else score(row["final_loss"], reference, row["initial_loss"])
        )
        if row["optimizer"] is None:  # brings its own update: the best constant of any optimizer
            best = min(oracle[(*_key(row), o)] for o in suite.optimizers)
        else:
            best = oracle[(*_key(row), row["optimizer"])]
        row["oracle_loss"] = best
        row["log10_vs_oracle"] = score(row["final_loss"], best, row.get("initial_loss"))
        target = suite.target_factor * max(best, _floor(row))
        reached = _first_reached(row, curve, target)
        for unit in ("grad", "total", "examples"):
            row[f"{unit}_to_target"] = None if reached is None else reached[unit]


def _rate_key(lr: float | None) -> float | None:
    return None if lr is None else round(math.log10(lr), 6)


def _first_reached(row: dict, curve: dict | None, target: float) -> dict | None:
    """Costs at which the run first measured a loss at or below `target`, or None."""
    if curve is not None and len(curve["loss"]):
        hits = np.flatnonzero(curve["loss"] <= target)
        if hits.size:
            i = int(hits[0])
            return {u: int(curve[u][i]) for u in ("grad", "total", "examples")}
    if row["status"] == "ok" and row["final_loss"] <= target:
        return {"grad": row["grad_evals"], "total": row["total_evals"], "examples": row["examples"]}
    return None


_COST = {"grad": "grad_to_target", "grad+func": "total_to_target", "examples": "examples_to_target"}


def summarize(rows: list[dict], suite: Suite) -> dict[str, Any]:
    """Per budget count: per-method scores, per-problem medians, pairwise win rates, failures."""
    methods = [_method(m) for m in suite.methods]
    out: dict[str, Any] = {}
    for count in suite.counts():
        mine = [r for r in rows if r["budget"] == count and r["role"] == "method"]
        by_method: dict[str, list[dict]] = defaultdict(list)
        for row in mine:
            by_method[row["method"]].append(row)
        table = {m.name: _method_scores(by_method[m.name], count) for m in methods}
        per_problem = {
            m.name: {
                p.label: _median(
                    [r.get("log10_vs_oracle") for r in by_method[m.name] if r["problem"] == p.label]
                )
                for p in suite.problems
            }
            for m in methods
        }
        out[count] = {
            "methods": table,
            "per_problem": per_problem,
            "win_rates": win_rates(mine, methods, suite),
        }
    out["failures"] = _reasons(rows, "failed")
    out["not_applicable"] = _reasons(rows, "n/a")
    return out


def _median(values: list[float]) -> float | None:
    values = [v for v in values if v is not None and not math.isnan(v)]
    return float(np.median(values)) if values else None


def _method_scores(rows: list[dict], count: str) -> dict[str, Any]:
    ran = [r for r in rows if r["status"] in ("ok", "diverged")]
    scores = np.array([r["log10_vs_oracle"] for r in ran], dtype=np.float64)
    costs = [r.get(_COST[count]) for r in ran]
    # Runs that never reach the target count as infinitely slow: the median stays honest.
    cost_values = np.array([math.inf if c is None else c for c in costs], dtype=np.float64)
    vs_start = [r["log10_vs_start"] for r in ran if r.get("log10_vs_start") is not None]
    return {
        "runs": len(ran),
        "failed": sum(r["status"] == "failed" for r in rows),
        "not_applicable": sum(r["status"] == "n/a" for r in rows),
        "diverged": sum(r["status"] == "diverged" for r in rows),
        "median_log10_vs_oracle": float(np.median(scores)) if ran else None,
        "mean_log10_vs_oracle": float(np.mean(scores)) if ran else None,
        "within_2x_of_oracle": float(np.mean(scores <= math.log10(2))) if ran else None,
        # Do no harm: the run ends above twice the loss of the constant rate it started from.
        "harmed": float(np.mean(np.array(vs_start) > math.log10(2))) if vs_start else None,
        "median_extra_grad_evals": (
            float(np.median([r.get("extra_grad_evals", 0) for r in ran])) if ran else None
        ),
        "reached_target": float(np.mean(np.isfinite(cost_values))) if ran else None,
        "median_cost_to_target": float(np.median(cost_values)) if ran else None,
        "median_wall_time": float(np.median([r["wall_time"] for r in ran])) if ran else None,
    }


def win_rates(rows: list[dict], methods: list[Method], suite: Suite) -> dict[str, dict]:
    """Fraction of shared slots where the row method ends lower than the column method.

    A slot is (problem, instance, optimizer, initial lr); a method that ignores the optimizer
    or the initial rate uses its one run for every slot. Ties (equal losses, both diverged)
    count half; failed and n/a runs are left out.
    """
    index: dict[tuple, dict] = {}
    for row in rows:
        if row["status"] in ("ok", "diverged"):
            lr = None if row["lr"] is None else round(math.log10(row["lr"]), 6)
            index[(row["method"], row["problem"], row["instance"], row["optimizer"], lr)] = row
    slots = {(r["problem"], r["instance"]) for r in rows}
    result: dict[str, dict] = {}
    for a in methods:
        result[a.name] = {}
        for b in methods:
            if a.name == b.name:
                continue
            score, pairs = 0.0, 0
            for problem, instance in slots:
                for opt in suite.optimizers:
                    for lr in suite.initial_lrs:
                        ra = index.get(_slot(a, problem, instance, opt, lr))
                        rb = index.get(_slot(b, problem, instance, opt, lr))
                        if ra is None or rb is None:
                            continue
                        pairs += 1
                        score += _win(ra, rb)
            result[a.name][b.name] = {"rate": score / pairs if pairs else None, "pairs": pairs}
    return result


def _slot(method: Method, problem: str, instance: int, opt: str, lr: float) -> tuple:
    return (
        method.name,
        problem,
        instance,
        opt if method.uses_optimizer else None,
        round(math.log10(lr), 6) if method.uses_lr else None,
    )


def _win(a: dict, b: dict) -> float:
    floor = max(_floor(a), _floor(b))
    fa, fb = max(a["final_loss"], floor), max(b["final_loss"], floor)
    if fa == fb or (math.isfinite(fa) and math.isclose(fa, fb, rel_tol=1e-9)):
        return 0.5
    return 1.0 if fa < fb else 0.0


def _reasons(rows: list[dict], status: str) -> dict[str, dict[str, int]]:
    """method -> {error or reason: runs}, each run counted once whatever the budget counts."""
    seen = set()
    out: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for r in rows:
        run = (r["method"], r["problem"], r["instance"], r["optimizer"], r["lr"], r["error"])
        if r["status"] != status or run in seen:
            continue
        seen.add(run)
        out[r["method"]][r["error"]] += 1
    return {m: dict(v) for m, v in out.items()}


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
    """Run `suite` and write every output into `out` (`backend`, `address`: see `run_all`)."""
    began = time.perf_counter()
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
    summary = summarize(rows, suite)
    wall = time.perf_counter() - began
    out.mkdir(parents=True, exist_ok=True)
    write_csv(rows, out / "runs.csv")
    markdown = format_summary(summary, suite, command, wall)
    atomic_write_bytes(out / "summary.md", markdown.encode())
    record = {"suite": _suite_dict(suite), "command": command, "wall_time": wall, **summary}
    atomic_write_bytes(out / "summary.json", json.dumps(record, indent=1, default=str).encode())
    examples = example_runs(rows, curves, suite)
    files = [out / "runs.csv", out / "summary.md", out / "summary.json"]
    files += plot_examples(examples, suite, out / "plots")
    files.append(plot_scores(rows, suite, out / "plots"))
    write_tensorboard(summary, examples, suite, out / "tensorboard")
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
    import torch

    from qlr.agents.errors import UsageError

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
