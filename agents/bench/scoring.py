"""How runs are scored: the oracle constant, the floor, the ratio; and a suite's summary.

The scores `qlr evaluate` and `qlr compare` share come first. A run is scored by
log10(final loss / reference loss), the reference being the oracle constant's loss (the lowest
final loss of the constant rates on a grid, chosen in hindsight per instance and inner
optimizer) or the constant rate the run started from. Both losses are floored at a tiny
fraction of the run's initial loss, so a run that reaches an exact zero still gets a finite
score, and the ratio is clipped to +-`MAX_LOG10` decades: a divergence scores +12.

Then ``qlr compare``'s scoring of a suite's rows (`score_rows`, `summarize`, `win_rates`):

* the oracle constant of a run is the lowest final loss over the suite's grid of constant rates
  for that instance, inner optimizer and budget count (for methods that bring their own update,
  such as the line searches, the lowest over all inner optimizers);
* a run reaches its target when a loss it measured falls to ``target_factor`` times the
  oracle's final loss; the cost to get there is read from the run's trace (gradient
  evaluations, gradient + function evaluations, or examples). On minibatch problems the
  per-step loss is the minibatch loss, so this reads a noisy estimate;
* a win rate pairs runs on the same instance, optimizer and initial rate.

``qlr evaluate`` aggregates its own rows (`qlr.agents.bench.evaluate.summarize`) from the same
`oracle_losses` and `score`.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from qlr.agents.bench.suites import Suite, same_rate

if TYPE_CHECKING:
    from qlr.agents.bench.methods import Method

MAX_LOG10 = 12.0  # scores are clipped to +-12 decades; a divergence scores +12
SCORED = ("ok", "diverged")  # statuses of runs that ran to a final loss (compare's rows)


def loss_floor(initial_loss: float | None) -> float:
    """The smallest loss a score tells apart: 1e-12 of the run's initial loss (plus 1e-30)."""
    return 1e-12 * abs(initial_loss or 0.0) + 1e-30


def log10_ratio(a: float, b: float, floor: float) -> float:
    """log10(a / b) with both floored; a divergence (inf) against a finite b counts as +12."""
    if not math.isfinite(a) and not math.isfinite(b):
        return 0.0
    a = min(max(a, floor), 1e300)
    b = min(max(b, floor), 1e300)
    return float(np.clip(math.log10(a / b), -MAX_LOG10, MAX_LOG10))


def score(final_loss: float, reference_loss: float, initial_loss: float | None) -> float:
    """log10(final / reference), floored at `loss_floor` of the run's initial loss."""
    return log10_ratio(final_loss, reference_loss, loss_floor(initial_loss))


def oracle_losses(
    rows: Iterable[dict],
    key: Callable[[dict], Hashable],
    on_grid: Callable[[float], bool] | None = None,
) -> defaultdict[Hashable, float]:
    """The oracle constant's loss per `key(row)`: the lowest final loss of the constant runs.

    Args:
        rows: run rows with ``method``, ``lr`` and ``final_loss`` (and ``status`` where a run
            may have failed: only runs that reached a final loss count).
        key: what a row is compared within (instance and inner optimizer, budget, ...).
        on_grid: when given, only constant runs whose rate it accepts count.

    Returns:
        key -> lowest final loss; a key without any constant run reads as infinity.
    """
    oracle: defaultdict[Hashable, float] = defaultdict(lambda: math.inf)
    for row in rows:
        if row["method"] != "constant" or row.get("status", "ok") not in SCORED:
            continue
        if on_grid is not None and not on_grid(row["lr"]):
            continue
        k = key(row)
        oracle[k] = min(oracle[k], row["final_loss"])
    return oracle


# --------------------------------------------------------------------------- a suite's rows


def _key(row: dict) -> tuple:
    return (row["budget"], row["problem"], row["instance"])


def _floor(row: dict) -> float:
    return loss_floor(row.get("initial_loss"))


def score_rows(rows: list[dict], curves: list[dict | None], suite: Suite) -> None:
    """Add the oracle loss, the score and the evaluations to reach the target to every row."""
    oracle = oracle_losses(
        rows,
        key=lambda row: (*_key(row), row["optimizer"]),
        on_grid=lambda lr: any(same_rate(lr, x) for x in suite.oracle_grid),
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


def summarize(rows: list[dict], suite: Suite, methods: Sequence[Method]) -> dict[str, Any]:
    """Per budget count: per-method scores, per-problem medians, pairwise win rates, failures.

    `methods` are the suite's methods, in its order (`qlr.agents.bench.baselines.get_method`).
    """
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


def win_rates(rows: list[dict], methods: Sequence[Method], suite: Suite) -> dict[str, dict]:
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
