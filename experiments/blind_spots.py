"""What the slope rule reads where it is said to be blind: sparse features under AdaGrad, and a
CNN under momentum with weight decay.

For each case the rule (`qlr.slope_rule()`, the rule the shipped default defers to) runs 300
steps on fresh instances of the family at its held-out (`test`) sizes (seeds 7,000,001 on, which
no report scores), beside the constant rate it started from. Every decision is traced: the
slope ratio r it read (the median of the block's samples), what it did, and the rate after. The
sparse case runs twice on the same instance, on the full data set and on minibatches of 32, to
separate the features from the noise of the batches.

    python experiments/blind_spots.py     # about a minute on one core

Writes experiments/results/blind_spots/traces.md (and traces.json): nothing here was used to
choose anything.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path

import torch

from qlr import slope_rule
from qlr.agents.bench.runs import build_problem
from qlr.envs.distributions import make_distribution
from qlr.envs.optimizers import make_optimizer
from qlr.envs.run import make_scheduler, run_inner
from qlr.update_chain import SLOPE_CLIP

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "experiments" / "results" / "blind_spots"
SEEDS = (7_000_001, 7_000_002)
STEPS = 300
# (label, family, fold, optimizer, starting rate, batch size override: None keeps the draw)
CASES = (
    ("sparse, full batch", "sparse_logistic", "linear", "adagrad", 1e-4, "full"),
    ("sparse, batches of 32", "sparse_logistic", "linear", "adagrad", 1e-4, 32),
    ("CNN, momentum + weight decay", "cnn_wd", "cnn", "momentum_wd", 1e-4, None),
)
ACTIONS = {0.5: "lower", 1.0: "hold", 2**0.5: "raise"}


def build(family: str, fold: str, batch: int | str | None, seed: int):
    kwargs = dict(make_distribution(f"folds:{fold}:test").families[family][1])
    if batch == "full":
        kwargs["batch_size"] = None
    elif batch is not None:
        kwargs["batch_size"] = batch
    return build_problem(family, kwargs, seed)


def constant_run(family, fold, optimizer, lr, batch, seed) -> float:
    problem = build(family, fold, batch, seed)
    opt = make_optimizer(optimizer, problem.params, lr)
    return run_inner(problem, opt, STEPS, record=False).final_loss


def rule_run(family, fold, optimizer, lr, batch, seed) -> dict:
    problem = build(family, fold, batch, seed)
    opt = make_optimizer(optimizer, problem.params, lr)
    scheduler = make_scheduler(problem, opt, slope_rule())
    trace = []

    def hook(loss: float) -> None:
        before = opt.param_groups[0]["lr"]
        decisions = scheduler.decisions
        scheduler.step(loss)
        if scheduler.decisions > decisions:
            after = opt.param_groups[0]["lr"]
            r = float(scheduler.last_observation[0]) * SLOPE_CLIP
            moved = after / before
            action = min(ACTIONS, key=lambda f: abs(math.log(f) - math.log(moved)))
            trace.append(
                {
                    "step": scheduler.steps,
                    "loss": loss,
                    "r": r,
                    "lr": after,
                    "did": ACTIONS[action] if moved != 1.0 else "hold",
                }
            )

    result = run_inner(problem, opt, STEPS, hook, record=False, stop_at_divergence=False)
    info = problem.info()
    return {
        "final_loss": result.final_loss,
        "trace": trace,
        "rollbacks": scheduler.rollbacks,
        "stochastic": info.get("stochastic"),
        "batch_size": info.get("batch_size"),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    torch.set_num_threads(1)
    runs = []
    for label, family, fold, optimizer, lr, batch in CASES:
        for seed in SEEDS:
            run = rule_run(family, fold, optimizer, lr, batch, seed)
            run.update(
                case=label,
                family=family,
                optimizer=optimizer,
                start=lr,
                seed=seed,
                constant_loss=constant_run(family, fold, optimizer, lr, batch, seed),
            )
            runs.append(run)
            print(
                f"{label} seed {seed}: rule {run['final_loss']:.4g}, "
                f"constant {run['constant_loss']:.4g}",
                flush=True,
            )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "traces.json").write_text(json.dumps(runs, indent=1) + "\n")
    (args.out / "traces.md").write_text(report(runs))
    print(f"wrote {args.out / 'traces.md'}")
    return 0


def report(runs: list[dict]) -> str:
    lines = [
        "# What the slope rule reads on its blind spots",
        "",
        "`python experiments/blind_spots.py`: the slope rule for 300 steps from 1e-4 on fresh "
        f"instances (seeds {SEEDS[0]:,} and {SEEDS[1]:,}) of held-out families at their `test` "
        "sizes, beside the constant rate it started from. r is the median slope ratio of the "
        "block the rule read (about 1: the step was too short; 0: at the minimum along it; "
        "below -0.9: the loss rose along it, and the rule lowers; above 0.5 it raises).",
        "",
        "| case | seed | batch | median r read | raises / holds / lowers | final rate | rule's "
        "final loss | constant's |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for run in runs:
        trace = run["trace"]
        counts = [sum(t["did"] == d for t in trace) for d in ("raise", "hold", "lower")]
        batch = run["batch_size"] if run["stochastic"] else "full"
        lines.append(
            f"| {run['case']} | {run['seed']:,} | {batch} | "
            f"{statistics.median(t['r'] for t in trace):+.2f} | "
            f"{' / '.join(map(str, counts))} | {trace[-1]['lr']:.3g} | "
            f"{run['final_loss']:.4g} | {run['constant_loss']:.4g} |"
        )
    lines += ["", "Every tenth decision of the first seed:", ""]
    for run in runs:
        if run["seed"] != SEEDS[0]:
            continue
        lines += [
            f"**{run['case']}**",
            "",
            "| step | loss | r | did | rate after |",
            "|---|---|---|---|---|",
        ]
        for t in run["trace"][::10]:
            lines.append(
                f"| {t['step']} | {t['loss']:.4g} | {t['r']:+.2f} | {t['did']} | {t['lr']:.3g} |"
            )
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
