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

``qlr evaluate POLICY --held-out`` is the leave-families-out report: the same runs and scores,
on the families of the held-out folds that neither the policy's training nor its selection
touched (`qlr.agents.bench.heldout` decides which), with each family's own inner optimizers,
the references a user would compare with (the starting constant, the slope rule, Prodigy) and
the summary per fold, written as JSON and Markdown with the command line in the header.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from qlr._atomic import atomic_write_bytes
from qlr.agents.bench import heldout
from qlr.agents.bench.budget import Budget
from qlr.agents.bench.runs import DEFAULT_SEED, build_problem
from qlr.agents.bench.scoring import oracle_losses, score
from qlr.agents.bench.suites import same_rate
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
    "command_line",
    "evaluate_held_out",
    "evaluate_policy",
    "held_out_config",
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
    optimizers_by_family: dict[str, tuple[str, ...]] | None = None
    """Inner optimizers of the families it names, in place of `optimizers` (the held-out
    report's `qlr.agents.bench.heldout.FAMILY_OPTIMIZERS`)."""

    def optimizers_for(self, family: str) -> tuple[str, ...]:
        """The inner optimizers `family` runs with."""
        return tuple((self.optimizers_by_family or {}).get(family, self.optimizers))


@dataclass(frozen=True)
class RunSpec:
    """One inner run, picklable so that worker processes can execute it."""

    family: str
    family_kwargs: tuple  # sorted (key, value) items
    instance_seed: int
    optimizer: str | None  # None: the method brings its own update (Prodigy)
    lr: float | None  # None: the method sets its own rate
    steps: int
    method: str  # a method name as `get_method` reads it: "constant", "policy:<path>", ...
    label: str | None = None  # the rows' method column when not `method` (`POLICY`)


@dataclass
class EvalReport:
    """Per-run rows and the summary scores."""

    config: dict
    rows: list[dict] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    command: str = ""
    """The command line that made it, when it came from one."""
    held_out: dict[str, Any] | None = None
    """The held-out report's plan (`qlr.agents.bench.heldout.HeldOutPlan.to_dict`)."""


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
    # On the folds a family's instances are seeded by its place among every fold family, so
    # that a family held out of two policies trained on different folds is scored on the same
    # instances in both; elsewhere by its place in the evaluation, as always.
    from qlr.envs.distributions import FOLD_OF

    order = list(FOLD_OF) if dist.name.startswith("folds:") else list(families)
    out = []
    for family in families:
        kwargs = dist.families[family][1]
        for i in range(config.instances):
            out.append((family, kwargs, config.seed + 1000 * order.index(family) + i))
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


REFERENCES = ("teacher", "slope_rule", "constant", "prodigy")
"""Lines `qlr evaluate --references` adds beside the policy: the lookahead teacher (``teacher``,
or ``teacher:H`` looking H steps ahead; a reference, like the oracle constant), the slope rule
(`qlr.rules.slope_rule`, the hand rule a learned controller must beat; ``slope_rule:KEY=VALUE``
with other thresholds), another policy file (``policy:PATH``, e.g. an ablation's arms), the
constant rate each run starts from (its runs are the oracle grid's
or the starting constants', so it costs nothing) and Prodigy (the ``lrfree`` extra; one run per
instance, scored against the best constant of any of the instance's optimizers)."""


def check_reference(name: str) -> str:
    """`name` if it names one of `REFERENCES` (``teacher:H`` with H a positive integer).

    Raises:
        ValueError: `name` is another method, a ``teacher:H`` that `get_method` refuses, or a
            method whose optional package is not installed.
    """
    if name not in REFERENCES and not name.startswith(("teacher:", "slope_rule:", "policy:")):
        raise ValueError(
            f"unknown reference {name!r}; valid: teacher, teacher:H, slope_rule, "
            "slope_rule:KEY=VALUE,..., constant, prodigy, policy:PATH"
        )
    if name.startswith("policy:"):  # another controller scored beside this one: it must load
        from qlr.policy import load_policy

        load_policy(name.split(":", 1)[1])
    # The registry loads qlr.envs: see `execute`.
    from qlr.agents.bench.baselines import get_method, missing_package

    get_method(name)  # the one parser of method names says what is wrong with a bad H
    why = missing_package(name)
    if why is not None:
        raise ValueError(f"reference {name!r} {why}")
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
    """One run per instance, inner optimizer and rate of `lrs`; a method that brings its own
    update (Prodigy) runs once per instance, one that sets its own rate once per optimizer."""
    # The registry loads qlr.envs: see `execute`.
    from qlr.agents.bench.baselines import get_method

    found = get_method(method)
    rates = [float(lr) for lr in lrs] if found.uses_lr else [None]
    return [
        RunSpec(
            family,
            tuple(sorted(kwargs.items())),
            seed,
            opt,
            lr,
            config.steps,
            method,
            label,
        )
        for family, kwargs, seed in instances(config)
        for opt in (config.optimizers_for(family) if found.uses_optimizer else (None,))
        for lr in rates
    ]


def summarize(
    policy_rows: list[dict],
    oracle_rows: list[dict],
    method: str = POLICY,
    fold_of: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Median log10 ratios against the oracle and the starting constant, per family and overall.

    Scores the rows of `method` (the policy, or a reference line such as ``teacher``). A row
    without an inner optimizer (a method that brings its own update) is scored against the best
    constant of any optimizer on its instance, and one without a starting rate has no starting
    constant (no harm, no score against the start; any divergence is its own). With `fold_of`
    (family -> fold) the summary has a ``folds`` entry too, in the order of `fold_of`.
    """
    rows = oracle_rows + policy_rows
    oracle = oracle_losses(rows, key=lambda row: (row["family"], row["instance"], row["optimizer"]))
    any_optimizer = oracle_losses(rows, key=lambda row: (row["family"], row["instance"], None))
    start: dict[tuple, float] = {}
    doomed: set[tuple] = set()  # starts whose constant run blew up before any control could act
    for row in rows:
        if row["method"] == "constant":
            key = (row["family"], row["instance"], row["optimizer"], row["lr"])
            start[key] = row["final_loss"]
            if row["diverged"] and row.get("steps_taken", math.inf) <= UNAVOIDABLE_STEPS:
                doomed.add(key)
    Scored = tuple[float, float | None, bool, bool]
    per_family: dict[str, list[Scored]] = defaultdict(list)
    per_optimizer: dict[str, list[Scored]] = defaultdict(list)
    for row in policy_rows:
        if row["method"] != method:
            continue
        key = (row["family"], row["instance"], row["optimizer"])
        final, initial = row["final_loss"], row["initial_loss"]
        best = any_optimizer[key] if row["optimizer"] is None else oracle[key]
        vs_oracle = score(final, best, initial)
        vs_start = None
        if row["lr"] is not None:
            vs_start = score(final, start.get((*key, row["lr"]), math.inf), initial)
        avoidable = row["diverged"] and (*key, row["lr"]) not in doomed
        scored = (vs_oracle, vs_start, row["diverged"], avoidable)
        per_family[row["family"]].append(scored)
        per_optimizer[str(row["optimizer"])].append(scored)
    everything = [r for rows in per_family.values() for r in rows]
    summary: dict[str, Any] = {"overall": _score(everything)}
    summary["families"] = {f: _score(rows) for f, rows in sorted(per_family.items())}
    summary["optimizers"] = {o: _score(rows) for o, rows in sorted(per_optimizer.items())}
    if fold_of is not None:
        per_fold: dict[str, list[Scored]] = {fold: [] for fold in dict.fromkeys(fold_of.values())}
        for family, scored_rows in per_family.items():
            if family in fold_of:
                per_fold[fold_of[family]] += scored_rows
        summary["folds"] = {fold: _score(rows) for fold, rows in per_fold.items()}
    return summary


def _score(rows: list[tuple[float, float | None, bool, bool]]) -> dict[str, Any]:
    if not rows:
        return {}
    vs_oracle = np.array([r[0] for r in rows])
    # Runs with a starting constant only (a method that sets its own rate has none).
    vs_start = np.array([r[1] for r in rows if r[1] is not None])
    started = vs_start.size > 0
    divergences = int(sum(r[2] for r in rows))
    avoidable = int(sum(r[3] for r in rows))
    return {
        "runs": len(rows),
        "median_log10_vs_oracle": float(np.median(vs_oracle)),
        "mean_log10_vs_oracle": float(np.mean(vs_oracle)),
        "within_2x_of_oracle": float(np.mean(vs_oracle <= math.log10(2))),
        "median_log10_vs_start": float(np.median(vs_start)) if started else None,
        "beats_start_rate": float(np.mean(vs_start < 0)) if started else None,
        # Do no harm: ends above twice the loss of the constant rate it started from.
        "harmed": float(np.mean(vs_start > math.log10(2))) if started else None,
        "divergences": divergences,
        "avoidable_divergences": avoidable,
        "unavoidable_divergences": divergences - avoidable,
    }


def evaluate_policy(
    policy: str | os.PathLike,
    config: EvalConfig | None = None,
    jobs: int = 1,
    oracle_rows: list[dict] | None = None,
    references: Sequence[str] = (),
    fold_of: Mapping[str, str] | None = None,
) -> EvalReport:
    """Score `policy` (a file path or ``"default"``) on the held-out instances of `config`.

    `oracle_rows` may be passed in to reuse the constant-grid runs, which do not depend on the
    policy (the training callback computes them once). Each of `references` (see `REFERENCES`)
    runs from the same starts and is scored the same way, in ``summary["references"]``. With
    `fold_of` (family -> fold) every summary has a ``folds`` entry (see `summarize`).
    """
    config = config or EvalConfig()
    policy = os.fspath(policy)
    references = [check_reference(r) for r in references]
    if oracle_rows is None:
        oracle_rows = run_specs(oracle_specs(config), jobs)
    # The constant runs at the starting rates: the oracle grid's where it has the rate.
    off_grid = [
        lr for lr in config.initial_lrs if not any(same_rate(lr, x) for x in config.oracle_grid)
    ]
    specs = policy_specs(config, policy, constants=False) + _specs(config, off_grid, "constant")
    for name in references:
        if name != "constant":
            specs += _specs(config, config.initial_lrs, name)
    rows = run_specs(specs, jobs)
    report = EvalReport(config=asdict(config), rows=rows + oracle_rows)
    report.summary = summarize(rows, oracle_rows, fold_of=fold_of)
    if references:
        report.summary["references"] = {}
        starts = _start_rows(rows + oracle_rows, config.initial_lrs)
        for name in references:
            mine = starts if name == "constant" else rows
            scored = summarize(mine, oracle_rows, method=name, fold_of=fold_of)
            extra = [r["extra_grad_evals"] for r in mine if r["method"] == name]
            scored["overall"]["median_extra_grad_evals"] = float(np.median(extra))
            report.summary["references"][name] = scored
    return report


def _start_rows(rows: Iterable[dict], lrs: Sequence[float]) -> list[dict]:
    """The constant runs at the starting rates `lrs`, each once: the ``constant`` line."""
    seen: dict[tuple, dict] = {}
    for row in rows:
        if row["method"] == "constant" and any(same_rate(row["lr"], lr) for lr in lrs):
            seen.setdefault((row["family"], row["instance"], row["optimizer"], row["lr"]), row)
    return list(seen.values())


def evaluate_held_out(
    plan: heldout.HeldOutPlan,
    config: EvalConfig,
    jobs: int = 1,
    references: Sequence[str] = heldout.HELD_OUT_REFERENCES,
    command: str = "",
) -> EvalReport:
    """The leave-families-out report: `plan`'s policy on `plan`'s held-out families.

    `config` says how many instances, which starts, steps and optimizers; its distribution and
    families are `plan`'s (`held_out_config` makes one).
    """
    report = evaluate_policy(
        plan.policy, config, jobs=jobs, references=references, fold_of=plan.fold_of()
    )
    report.command = command
    report.held_out = plan.to_dict()
    return report


def held_out_config(
    plan: heldout.HeldOutPlan,
    instances: int = EvalConfig.instances,
    steps: int = EvalConfig.steps,
    initial_lrs: Sequence[float] = heldout.HELD_OUT_STARTS,
    optimizers: Sequence[str] | None = None,
    seed: int = heldout.HELD_OUT_SEED,
    tell_budget: bool = False,
) -> EvalConfig:
    """The `EvalConfig` of `plan`'s report: its families at the folds' ``test`` sizes, each
    with `heldout.FAMILY_OPTIMIZERS`' optimizers unless `optimizers` names them for all."""
    by_family = None if optimizers else heldout.family_optimizers(plan.families)
    return EvalConfig(
        distribution=plan.distribution,
        instances=instances,
        optimizers=tuple(optimizers or ("sgd", "adam")),
        initial_lrs=tuple(float(lr) for lr in initial_lrs),
        steps=steps,
        seed=seed,
        families=plan.families,
        tell_budget=tell_budget,
        optimizers_by_family=by_family,
    )


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
        # A method that sets its own rate (Prodigy) has no starting constant to compare with.
        start = s.get("median_log10_vs_start")
        beats = s.get("beats_start_rate")
        lines.append(
            f"| {name} | {s['runs']} | {s['median_log10_vs_oracle']:+.2f} | "
            f"{s['within_2x_of_oracle']:.0%} | {'—' if start is None else f'{start:+.2f}'} | "
            f"{'—' if beats is None else f'{beats:.0%}'} | {s['divergences']} "
            f"({s.get('avoidable_divergences', '?')}) |"
        )
    return "\n".join(lines)


# ---------------------------------------------------------------------------------- CLI
def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("policy", help='a policy file, or "default" for the shipped one')
    parser.add_argument("--distribution", default=None, help=f"default: {EvalConfig.distribution}")
    parser.add_argument("--instances", type=int, default=EvalConfig.instances)
    parser.add_argument("--steps", type=int, default=EvalConfig.steps)
    parser.add_argument(
        "--optimizers",
        nargs="+",
        default=None,
        help=f"default: {' '.join(EvalConfig.optimizers)}; with --held-out each family's own "
        "(qlr.agents.bench.heldout.FAMILY_OPTIMIZERS)",
    )
    parser.add_argument("--families", nargs="+", default=None)
    parser.add_argument(
        "--initial-lrs",
        nargs="+",
        type=float,
        default=None,
        metavar="LR",
        help="starting rates (default: 1e-5 ... 1e-1; with --held-out 1e-4 1e-2 1)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=None,
        help=f"first instance's seed (default: {DEFAULT_SEED}; with --held-out "
        f"{heldout.HELD_OUT_SEED})",
    )
    parser.add_argument(
        "--tell-budget",
        action="store_true",
        help="tell the policy each run's budget (QLRScheduler(total_steps=--steps))",
    )
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="write the report as JSON here (with --held-out also the Markdown, as .md)",
    )
    parser.add_argument(
        "--references",
        nargs="+",
        default=None,
        metavar="NAME",
        help="lines scored beside the policy: teacher (the lookahead teacher, a reference; "
        "teacher:H looks H steps ahead), slope_rule (the hand rule), constant (the starting "
        "rate), prodigy (the lrfree extra), policy:PATH (another policy file); with --held-out "
        "default: constant slope_rule prodigy",
    )
    held = parser.add_argument_group(
        "leave-families-out report",
        "score the policy only on the families of the held-out folds that neither its "
        "training nor its selection touched, per fold",
    )
    held.add_argument("--held-out", action="store_true", help="make the held-out report")
    held.add_argument(
        "--folds",
        nargs="+",
        default=None,
        metavar="FOLD",
        help="report on these folds only (analytic linear mlp cnn recurrent transformer "
        "factorization; default: every fold with a held-out family)",
    )
    held.add_argument(
        "--trained-on",
        nargs="+",
        default=None,
        metavar="SPEC",
        help="distributions or families training drew from (default: what the policy file "
        "records; needed when it records nothing)",
    )
    held.add_argument(
        "--selected-on",
        nargs="+",
        default=None,
        metavar="SPEC",
        help="distributions or families model or recipe selection read (default: what the "
        "policy file records, else val)",
    )


def command_line(args: argparse.Namespace) -> str:
    """The ``qlr evaluate`` command that reproduces this report, for its header."""
    parts = ["qlr", "evaluate", os.fspath(args.policy)]
    if args.held_out:
        parts.append("--held-out")
    for flag, value in (
        ("--folds", args.folds),
        ("--trained-on", args.trained_on),
        ("--selected-on", args.selected_on),
        ("--distribution", args.distribution),
        ("--families", args.families),
        ("--instances", args.instances),
        ("--steps", args.steps),
        ("--optimizers", args.optimizers),
        ("--initial-lrs", [f"{lr:g}" for lr in args.initial_lrs or ()]),
        ("--seed", args.seed),
        ("--references", args.references),
        ("--jobs", args.jobs),
        ("--out", args.out),
    ):
        if value is None or value == () or value == []:
            continue
        values = value if isinstance(value, (list, tuple)) else [value]
        parts += [flag, *(str(v) for v in values)]
    if args.tell_budget:
        parts.append("--tell-budget")
    return " ".join(shlex.quote(p) for p in parts)


def run(args: argparse.Namespace) -> int:
    try:
        references = [check_reference(r) for r in args.references or ()]
    except ValueError as err:
        raise UsageError(str(err)) from None
    if args.held_out:
        return _run_held_out(args)
    for flag, value in (
        ("--folds", args.folds),
        ("--trained-on", args.trained_on),
        ("--selected-on", args.selected_on),
    ):
        if value is not None:
            raise UsageError(f"{flag} belongs to the held-out report: add --held-out")
    config = EvalConfig(
        distribution=args.distribution or EvalConfig.distribution,
        instances=args.instances,
        optimizers=tuple(args.optimizers or EvalConfig.optimizers),
        initial_lrs=tuple(args.initial_lrs or EvalConfig.initial_lrs),
        steps=args.steps,
        seed=DEFAULT_SEED if args.seed is None else args.seed,
        families=tuple(args.families) if args.families else None,
        tell_budget=args.tell_budget,
    )
    report = evaluate_policy(args.policy, config, jobs=args.jobs, references=references)
    report.command = command_line(args)
    print(format_summary(report.summary))
    if args.out is not None:
        atomic_write_bytes(args.out, _report_json(report))
        print(f"report written to {args.out}")
    return 0


def _run_held_out(args: argparse.Namespace) -> int:
    if args.distribution is not None:
        raise UsageError(
            "--held-out draws its instances from the held-out folds' test sizes: drop "
            "--distribution (--folds and --families choose among them)"
        )
    try:
        plan = heldout.plan_held_out(
            args.policy,
            trained_on=args.trained_on,
            selected_on=args.selected_on,
            folds=args.folds,
            families=args.families,
        )
    except ValueError as err:  # a bad fold or spec, nothing held out, an unreadable policy
        raise UsageError(str(err)) from None
    config = held_out_config(
        plan,
        instances=args.instances,
        steps=args.steps,
        initial_lrs=args.initial_lrs or heldout.HELD_OUT_STARTS,
        optimizers=args.optimizers,
        seed=heldout.HELD_OUT_SEED if args.seed is None else args.seed,
        tell_budget=args.tell_budget,
    )
    references, left_out = _held_out_references(args.references)
    command = command_line(args)
    report = evaluate_held_out(plan, config, jobs=args.jobs, references=references, command=command)
    report.held_out["left_out"] = left_out
    markdown = heldout.format_held_out(report.summary, plan, report.config, command, left_out)
    print(markdown, end="")
    if args.out is not None:
        atomic_write_bytes(args.out, _report_json(report))
        markdown_path = args.out.with_suffix(".md")
        atomic_write_bytes(markdown_path, markdown.encode())
        print(f"report written to {args.out} and {markdown_path}")
    return 0


def _report_json(report: EvalReport) -> bytes:
    """The report as JSON, the command line and the plan first and every run's row last, so
    that the head of the file says what made it."""
    data = asdict(report)
    first = ("command", "held_out", "config", "summary")
    ordered = {k: data[k] for k in first if data.get(k) is not None}
    return json.dumps({**ordered, "rows": data["rows"]}, indent=1).encode()


def _held_out_references(names: Sequence[str] | None) -> tuple[list[str], list[str]]:
    """The references of a held-out report and those left out, with why: the defaults drop
    what cannot run here (Prodigy without its package); named ones were checked already."""
    if names is not None:
        return list(names), []
    from qlr.agents.bench.baselines import missing_package

    kept, left_out = [], []
    for name in heldout.HELD_OUT_REFERENCES:
        why = missing_package(name)
        if why is None:
            kept.append(name)
        else:
            left_out.append(f"{name} ({why})")
    return kept, left_out
