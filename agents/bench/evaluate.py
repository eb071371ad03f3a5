"""Score a policy on held-out problems against constant learning rates (``qlr evaluate``).

For every held-out instance and inner optimizer the policy starts from several initial learning
rates spread over orders of magnitude and runs as `QLRScheduler` (the deployment path) for a
fixed budget of gradient evaluations. It is compared with

* the constant rate it starts from (what a user gets without any schedule), and
* the oracle constant: the best final loss over a grid of constant rates, chosen in hindsight
  per instance and optimizer. It is a reference line, not a method anyone could run.

The main score is the median of log10(final loss / oracle final loss): 0 means as good as the
best constant rate in hindsight, negative means better.

Divergences are split in two. A scheduler acts after `optimizer.step()`, so the first two steps
of a run always use the user's starting rate: when the constant run at that rate has already
blown up within those two steps, no controller of this kind could have saved it ("unavoidable").
Every other divergence is the controller's doing.

``qlr evaluate`` is a preset over the machinery of ``qlr compare``, not a harness of its own:
every run names its method as a suite does (``constant``, ``policy:PATH``,
``policy_budget:PATH``, ``slope_rule``, ``teacher:H``, read by
`qlr.agents.bench.baselines.get_method`), runs it with the same `Method.run` on the same
held-out instances (`qlr.agents.bench.runs.build_problem`) and scores it with the same
`qlr.agents.bench.scoring`. What the preset sets: the instances (every family of a named
distribution), the budget of a run (`run_budget`: `EvalConfig.steps` gradient evaluations; on a
minibatch problem also the examples those steps take at its starting batch, which is what binds
a policy that grows the batch), and the summary (per family and optimizer, with the
unavoidable divergences).
"""

from __future__ import annotations

import argparse
import json
import math
import os
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from qlr._atomic import atomic_write_bytes
from qlr.agents.bench.budget import Budget
from qlr.agents.bench.runs import DEFAULT_SEED, build_problem
from qlr.agents.bench.scoring import oracle_losses, score
from qlr.agents.bench.workers import run_parallel
from qlr.agents.errors import UsageError

if TYPE_CHECKING:
    from qlr.envs.problems import Problem

__all__ = [
    "DEFAULT_SEED",
    "REFERENCES",
    "EvalConfig",
    "EvalReport",
    "RunSpec",
    "build_problem",
    "check_reference",
    "evaluate_policy",
    "execute",
    "format_summary",
    "instances",
    "oracle_specs",
    "policy_specs",
    "run_budget",
    "run_specs",
    "summarize",
]

UNAVOIDABLE_STEPS = 2  # a start rate that diverges within this many steps cannot be saved
POLICY = "policy"  # the method column of the evaluated policy's rows, whatever its file


@dataclass
class EvalConfig:
    """What a held-out evaluation covers."""

    distribution: str = "test"
    """Named problem distribution; every family in it is evaluated."""
    instances: int = 2
    """Instances per family."""
    optimizers: tuple[str, ...] = ("sgd", "momentum", "adam")
    """Inner optimizers."""
    initial_lrs: tuple[float, ...] = (1e-5, 1e-4, 1e-3, 1e-2, 1e-1)
    """Starting rates of the policy runs (five orders of magnitude)."""
    oracle_grid: tuple[float, ...] = tuple(float(x) for x in np.logspace(-6, 1, 15))
    """Constant rates the oracle chooses from (half-decade steps)."""
    steps: int = 300
    """Gradient evaluations per run."""
    seed: int = DEFAULT_SEED
    """Seed of the first held-out instance."""
    families: tuple[str, ...] | None = None
    """Restrict to these families of the distribution (default: all)."""
    tell_budget: bool = False
    """Tell the policy the run's budget (``QLRScheduler(total_steps=steps)``)."""


@dataclass(frozen=True)
class RunSpec:
    """One inner run, picklable so that worker processes can execute it."""

    family: str
    family_kwargs: tuple  # sorted (key, value) items
    instance_seed: int
    optimizer: str
    lr: float
    steps: int
    method: str  # a method name as `get_method` reads it: "constant", "policy:<path>", ...
    label: str | None = None  # the rows' method column when not `method` (`POLICY`)


@dataclass
class EvalReport:
    """Per-run rows and the summary scores."""

    config: dict
    rows: list[dict] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)


def instances(config: EvalConfig) -> list[tuple[str, dict, int]]:
    """(family, sampling kwargs, seed) for every held-out instance of the evaluation."""
    # qlr.envs loads gymnasium: only when an evaluation runs, not when the command line starts.
    from qlr.envs.distributions import make_distribution

    dist = make_distribution(config.distribution)
    families = config.families or tuple(dist.families)
    unknown = [f for f in families if f not in dist.families]
    if unknown:
        raise ValueError(
            f"families {unknown} are not in distribution {config.distribution!r}: "
            f"{sorted(dist.families)}"
        )
    out = []
    for f_index, family in enumerate(families):
        kwargs = dist.families[family][1]
        for i in range(config.instances):
            out.append((family, kwargs, config.seed + 1000 * f_index + i))
    return out


def run_budget(problem: Problem, steps: int) -> Budget:
    """The budget of one run: `steps` gradient evaluations, and on a minibatch problem the
    examples those steps take at its starting batch (what binds a policy that grows the batch;
    a method that keeps its batch takes `steps` steps either way)."""
    # qlr.envs loads gymnasium: only when a run runs (see `execute`).
    from qlr.envs.run import example_budget

    return Budget(grad_evals=steps, examples=example_budget(problem, steps))


def execute(spec: RunSpec) -> dict:
    """Run one spec and return its row (module level, so worker processes can call it)."""
    # The registry loads qlr.envs (gymnasium): only when runs run, not when the command line
    # starts (nor when a training config reads `EvalConfig`).
    from qlr.agents.bench.baselines import get_method

    problem = build_problem(spec.family, dict(spec.family_kwargs), spec.instance_seed)
    budget = run_budget(problem, spec.steps)
    result = get_method(spec.method).run(problem, spec.optimizer, spec.lr, budget)
    return {
        "family": spec.family,
        "instance": spec.instance_seed,
        "optimizer": spec.optimizer,
        "lr": spec.lr,
        "method": spec.label or spec.method,
        # A reference line's own look at the future (the teacher), never charged to it.
        "extra_grad_evals": result.extra.get("lookahead_grad_evals", 0),
        "initial_loss": result.initial_loss,
        "final_loss": result.final_loss,
        "diverged": result.diverged,
        "steps_taken": result.steps_taken,
        "grad_evals": result.grad_evals,
        "examples": result.examples_seen,
        "wall_time": result.wall_time,
    }


REFERENCES = ("teacher", "slope_rule")
"""Lines `qlr evaluate --references` adds beside the policy: the lookahead teacher (``teacher``,
or ``teacher:H`` looking H steps ahead; a reference, like the oracle constant) and the slope
rule (`qlr.rules.slope_rule`, the hand rule a learned controller must beat)."""


def check_reference(name: str) -> str:
    """`name` if it names one of `REFERENCES` (``teacher:H`` with H a positive integer).

    Raises:
        ValueError: `name` is another method, or a ``teacher:H`` that `get_method` refuses.
    """
    if name not in REFERENCES and not name.startswith("teacher:"):
        raise ValueError(f"unknown reference {name!r}; valid: teacher, teacher:H, slope_rule")
    # The registry loads qlr.envs: see `execute`.
    from qlr.agents.bench.baselines import get_method

    get_method(name)  # the one parser of method names says what is wrong with a bad H
    return name


def run_specs(specs: Sequence[RunSpec], jobs: int = 1) -> list[dict]:
    """Execute specs, in `jobs` worker processes when more than one."""
    return run_parallel(execute, specs, jobs)


def oracle_specs(config: EvalConfig) -> list[RunSpec]:
    return _specs(config, config.oracle_grid, "constant")


def policy_specs(config: EvalConfig, policy: str, constants: bool = True) -> list[RunSpec]:
    """The policy's runs, and (`constants`) the constant rates it starts from: leave them out
    when the oracle rows already hold them (the initial rates on the oracle grid).

    The policy runs as the method ``policy:<policy>``, or ``policy_budget:<policy>`` when
    `config` tells it the budget; its rows read `POLICY` in their method column.
    """
    method = f"{'policy_budget' if config.tell_budget else 'policy'}:{policy}"
    specs = _specs(config, config.initial_lrs, method, label=POLICY)
    return specs + (_specs(config, config.initial_lrs, "constant") if constants else [])


def _specs(
    config: EvalConfig, lrs: Iterable[float], method: str, label: str | None = None
) -> list[RunSpec]:
    return [
        RunSpec(
            family,
            tuple(sorted(kwargs.items())),
            seed,
            opt,
            float(lr),
            config.steps,
            method,
            label,
        )
        for family, kwargs, seed in instances(config)
        for opt in config.optimizers
        for lr in lrs
    ]


def summarize(
    policy_rows: list[dict], oracle_rows: list[dict], method: str = POLICY
) -> dict[str, Any]:
    """Median log10 ratios against the oracle and the starting constant, per family and overall.

    Scores the rows of `method` (the policy, or a reference line such as ``teacher``).
    """
    rows = oracle_rows + policy_rows
    oracle = oracle_losses(rows, key=lambda row: (row["family"], row["instance"], row["optimizer"]))
    start: dict[tuple, float] = {}
    doomed: set[tuple] = set()  # starts whose constant run blew up before any control could act
    for row in rows:
        if row["method"] == "constant":
            key = (row["family"], row["instance"], row["optimizer"], row["lr"])
            start[key] = row["final_loss"]
            if row["diverged"] and row.get("steps_taken", math.inf) <= UNAVOIDABLE_STEPS:
                doomed.add(key)
    per_family: dict[str, list[tuple[float, float, bool, bool]]] = defaultdict(list)
    per_optimizer: dict[str, list[tuple[float, float, bool, bool]]] = defaultdict(list)
    for row in policy_rows:
        if row["method"] != method:
            continue
        key = (row["family"], row["instance"], row["optimizer"])
        final, initial = row["final_loss"], row["initial_loss"]
        vs_oracle = score(final, oracle[key], initial)
        vs_start = score(final, start.get((*key, row["lr"]), math.inf), initial)
        avoidable = row["diverged"] and (*key, row["lr"]) not in doomed
        scored = (vs_oracle, vs_start, row["diverged"], avoidable)
        per_family[row["family"]].append(scored)
        per_optimizer[row["optimizer"]].append(scored)
    everything = [r for rows in per_family.values() for r in rows]
    summary = {"overall": _score(everything)}
    summary["families"] = {f: _score(rows) for f, rows in sorted(per_family.items())}
    summary["optimizers"] = {o: _score(rows) for o, rows in sorted(per_optimizer.items())}
    return summary


def _score(rows: list[tuple[float, float, bool, bool]]) -> dict[str, float]:
    if not rows:
        return {}
    vs_oracle = np.array([r[0] for r in rows])
    vs_start = np.array([r[1] for r in rows])
    return {
        "runs": len(rows),
        "median_log10_vs_oracle": float(np.median(vs_oracle)),
        "mean_log10_vs_oracle": float(np.mean(vs_oracle)),
        "within_2x_of_oracle": float(np.mean(vs_oracle <= math.log10(2))),
        "median_log10_vs_start": float(np.median(vs_start)),
        "beats_start_rate": float(np.mean(vs_start < 0)),
        # Do no harm: ends above twice the loss of the constant rate it started from.
        "harmed": float(np.mean(vs_start > math.log10(2))),
        "divergences": int(sum(r[2] for r in rows)),
        "avoidable_divergences": int(sum(r[3] for r in rows)),
    }


def evaluate_policy(
    policy: str | os.PathLike,
    config: EvalConfig | None = None,
    jobs: int = 1,
    oracle_rows: list[dict] | None = None,
    references: Sequence[str] = (),
) -> EvalReport:
    """Score `policy` (a file path or ``"default"``) on the held-out instances of `config`.

    `oracle_rows` may be passed in to reuse the constant-grid runs, which do not depend on the
    policy (the training callback computes them once). Each of `references` (see `REFERENCES`)
    runs from the same starts and is scored the same way, in ``summary["references"]``.
    """
    config = config or EvalConfig()
    policy = os.fspath(policy)
    references = [check_reference(r) for r in references]
    if oracle_rows is None:
        oracle_rows = run_specs(oracle_specs(config), jobs)
    specs = policy_specs(config, policy)
    for name in references:
        specs += _specs(config, config.initial_lrs, name)
    rows = run_specs(specs, jobs)
    report = EvalReport(config=asdict(config), rows=rows + oracle_rows)
    report.summary = summarize(rows, oracle_rows)
    if references:
        report.summary["references"] = {}
        for name in references:
            scored = summarize(rows, oracle_rows, method=name)
            extra = [r["extra_grad_evals"] for r in rows if r["method"] == name]
            scored["overall"]["median_extra_grad_evals"] = float(np.median(extra))
            report.summary["references"][name] = scored
    return report


def format_summary(summary: dict[str, Any]) -> str:
    """The summary as a Markdown table, one line per family."""
    head = (
        "| family | runs | median log10(final/oracle) | within 2x of oracle | "
        "median log10(final/start const) | beats start const | divergences (avoidable) |"
    )
    lines = [head, "|" + "---|" * 7]
    items = [*summary["families"].items(), ("**all**", summary["overall"])]
    for name, reference in summary.get("references", {}).items():
        extra = reference["overall"].get("median_extra_grad_evals") or 0
        note = f", +{extra:,.0f} lookahead grad evals" if extra else ""
        items.append((f"**{name}** (reference{note})", reference["overall"]))
    for name, s in items:
        lines.append(
            f"| {name} | {s['runs']} | {s['median_log10_vs_oracle']:+.2f} | "
            f"{s['within_2x_of_oracle']:.0%} | {s['median_log10_vs_start']:+.2f} | "
            f"{s['beats_start_rate']:.0%} | {s['divergences']} "
            f"({s.get('avoidable_divergences', '?')}) |"
        )
    return "\n".join(lines)


# ---------------------------------------------------------------------------------- CLI
def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("policy", help='a policy file, or "default" for the shipped one')
    parser.add_argument("--distribution", default=EvalConfig.distribution)
    parser.add_argument("--instances", type=int, default=EvalConfig.instances)
    parser.add_argument("--steps", type=int, default=EvalConfig.steps)
    parser.add_argument("--optimizers", nargs="+", default=list(EvalConfig.optimizers))
    parser.add_argument("--families", nargs="+", default=None)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument(
        "--tell-budget",
        action="store_true",
        help="tell the policy each run's budget (QLRScheduler(total_steps=--steps))",
    )
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", type=Path, default=None, help="write the report as JSON here")
    parser.add_argument(
        "--references",
        nargs="+",
        default=(),
        metavar="NAME",
        help="lines scored beside the policy: teacher (the lookahead teacher, a reference; "
        "teacher:H looks H steps ahead), slope_rule (the hand rule)",
    )


def run(args: argparse.Namespace) -> int:
    config = EvalConfig(
        distribution=args.distribution,
        instances=args.instances,
        optimizers=tuple(args.optimizers),
        steps=args.steps,
        seed=args.seed,
        families=tuple(args.families) if args.families else None,
        tell_budget=args.tell_budget,
    )
    try:
        references = [check_reference(r) for r in args.references]
    except ValueError as err:
        raise UsageError(str(err)) from None
    report = evaluate_policy(args.policy, config, jobs=args.jobs, references=references)
    print(format_summary(report.summary))
    if args.out is not None:
        atomic_write_bytes(args.out, json.dumps(asdict(report), indent=1).encode())
        print(f"report written to {args.out}")
    return 0
