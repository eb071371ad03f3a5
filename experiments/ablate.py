"""Ablations of the controller's recipe: several training seeds each, scored on `val` and on
held-out families, never on the `test` split.

Every variant is `experiments/configs/default.yaml` with a few keys overridden (each variant
states every key it depends on, so its meaning survives changes to default.yaml), trained for a
shortened budget (the same for all) with several seeds. Each trained policy, and the slope rule
itself (no training: the arm to beat), is scored twice:

* `val`: the training families at sizes between train and test, the five training optimizers,
  starting rates 1e-5, 1e-3 and 1e-1, 300 gradient evaluations, instances of their own;
* held-out families: `ackley` and `digits_mlp` (never in training) at `test` sizes, on instances
  of their own (seeds 4,000,003 on, not the test split's 1,000,003). Choosing on them makes them
  selection data: the final held-out report uses the families that no choice looked at
  (`cancer_mlp`, `wine_softmax`, `lstm_lm`), the held-out optimizers and the `test` split.

    python experiments/ablate.py                                  # every variant, seeds 0 1 2
    python experiments/ablate.py --variants dqn rule_dqfd --seeds 0 1 2 --timesteps 120000

Runs go to runs/ablation/<variant>__<seed>; a finished run (its final_policy.qlr exists) is not
trained again and its scores are cached beside it, so the command resumes where it stopped. The
table and the raw scores go to experiments/results/ablation/ (round4_table.md, round4.json);
the first three rounds' table and notes stay there as they were written.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from qlr._atomic import atomic_write_bytes
from qlr.agents.bench.evaluate import EvalConfig, oracle_specs, policy_specs, run_specs, summarize
from qlr.policy import save_policy
from qlr.rules import slope_rule

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "experiments" / "configs" / "default.yaml"
TRAIN_OPTIMIZERS = ("sgd", "momentum", "adam", "adamw", "adagrad")
VAL = EvalConfig(
    distribution="val",
    instances=2,
    optimizers=TRAIN_OPTIMIZERS,
    initial_lrs=(1e-5, 1e-3, 1e-1),
    steps=300,
    seed=3_000_003,  # val instances of their own: neither the periodic evaluation's nor test's
)
HELD_OUT = replace(VAL, distribution="test", families=("ackley", "digits_mlp"), seed=4_000_003)
# Long runs, ten times a training episode: minibatch problems of `val` at loss scale 1 from a
# rate ten times too low and a reasonable one, without and with the budget told.
LONG = EvalConfig(
    distribution="val_stochastic",
    instances=1,
    optimizers=("sgd", "adam"),
    initial_lrs=(1e-3, 1e-2),
    steps=3000,
    seed=5_000_003,
    families=("least_squares", "logistic", "mlp", "digits_cnn"),
)
LONG_BUDGET = replace(LONG, tell_budget=True)
SCORINGS = {"val": VAL, "heldout": HELD_OUT, "long": LONG, "long_budget": LONG_BUDGET}
"""Every scoring; `--scorings` picks those a round reads (round four: val and heldout)."""
RULE = "slope_rule"  # the arm every trained variant must beat; scored, never trained
# name -> (qlr.rules.slope_rule arguments, what changes): hand rules, scored, never trained.
RULES: dict[str, tuple[dict[str, float], str]] = {
    RULE: ({}, "the rule itself, through QLRScheduler (no training)"),
    "slope_rule_up2": ({"up": 2.0}, "the rule raising x2 instead of x1.41"),
    "slope_rule_cut05": ({"lower_below": -0.5}, "the rule cutting below r = -0.5, not -0.9"),
    "slope_rule_up2_cut05": (
        {"up": 2.0, "lower_below": -0.5},
        "the rule raising x2 and cutting below r = -0.5",
    ),
}

V4_NAMES = (
    "loss_change_step,loss_change_block,loss_above_best,loss_rank,loss_rise_fraction,loss_noise,"
    "nonfinite,lr_drift,update_slope,update_slope_spread,armijo_ratio,update_size"
)
V4 = f"env.features=[{V4_NAMES}]"
V5 = f"env.features=[{V4_NAMES},progress,budget_known]"


def recipe(
    demonstrations: str | None = "rule",
    gamma: float = 0.9,
    n_steps: int = 5,
    factors: int = 5,
    guard: tuple[float, float] | None = None,
    max_lr: float = 10.0,
    growth: float | None = None,
    horizon: int | tuple[int, int] = 60,
    budget_known: float = 0.0,
    rule_up: float | None = None,
) -> list[str]:
    """The overrides of one variant: every key the variants differ in, stated."""
    lengths = horizon if isinstance(horizon, int) else f"[{horizon[0]},{horizon[1]}]"
    overrides = [
        V5 if budget_known else V4,
        f"env.horizon={lengths}",
        f"env.budget_known={budget_known}",
        f"dqn.gamma={gamma}",
        f"dqn.n_steps={n_steps if demonstrations else 1}",
        f"env.action_factors={factors}",
        f"env.spike_factor={'null' if guard is None else guard[0]}",
        f"env.spike_cut={0.1 if guard is None else guard[1]}",
        f"env.lr_bounds=[1e-8,{max_lr}]",
        f"env.max_lr_growth={'null' if growth is None else growth}",
        f"demonstrations.source={demonstrations or 'null'}",
        f"dqn.exploration_initial_eps={0.2 if demonstrations else 1.0}",
    ]
    if demonstrations == "teacher":  # costly: fewer episodes, a capped look ahead
        overrides += ["demonstrations.episodes=100", "demonstrations.options={horizon: 30}"]
    elif rule_up is not None:  # the rule demonstrating with another raise
        overrides += [f"demonstrations.options={{up: {rule_up}}}"]
    return overrides


# name -> (overrides of default.yaml, what it tests)
VARIANTS: dict[str, tuple[list[str], str]] = {
    "dqn": (
        recipe(demonstrations=None),
        "the new features alone: DQN from scratch (discount 0.9, 1-step)",
    ),
    "rule_dqfd": (
        recipe(),
        "DQfD with the slope rule as demonstrator (200 episodes, margin 0.8, 5-step returns)",
    ),
    "teacher_dqfd": (
        recipe(demonstrations="teacher"),
        "DQfD with the lookahead teacher as demonstrator (100 episodes, 30 steps ahead)",
    ),
    "rule_dqfd_g99": (
        recipe(gamma=0.99, n_steps=10),
        "rule_dqfd with a longer credit horizon: discount 0.99, 10-step returns",
    ),
    "rule_dqfd_a7": (
        recipe(factors=7),
        "rule_dqfd with finer factors (x0.5 x0.71 x0.9 x1 x1.1 x1.41 x2)",
    ),
    "rule_dqfd_guard": (
        recipe(guard=(3.0, 0.5)),
        "rule_dqfd with a mild spike guard (x0.5 when a rising loss passes 3x the block mean)",
    ),
    "rule_dqfd_guard10": (
        recipe(guard=(10.0, 0.1)),
        "rule_dqfd with a guard on real divergence only (x0.1 when a rising loss passes 10x)",
    ),
    # Round five: long runs. Built on what round four kept (the guard on real divergence).
    "rule2_dqfd_guard10": (
        recipe(guard=(10.0, 0.1), rule_up=2.0),
        "rule_dqfd_guard10 with the rule raising x2 as demonstrator",
    ),
    "hfree": (
        recipe(guard=(10.0, 0.1), horizon=(10, 1000), gamma=0.99, n_steps=10),
        "rule_dqfd_guard10 trained on episodes of 10 to 1,000 decisions, discount 0.99, "
        "10-step returns",
    ),
    "hfree_budget": (
        recipe(guard=(10.0, 0.1), horizon=(10, 1000), gamma=0.99, n_steps=10, budget_known=0.5),
        "hfree, told the budget in half the episodes (reads progress and budget_known)",
    ),
    "rule_dqfd_cap1e4": (
        recipe(max_lr=1e4),
        "rule_dqfd with the rate's cap at 1e4 instead of 10",
    ),
    "rule_dqfd_relcap": (
        recipe(max_lr=1e4, growth=1000.0),
        "rule_dqfd with the cap relative to the start: at most 1000x the starting rate",
    ),
}


def train_run(variant: str, seed: int, timesteps: int, out: Path) -> Path:
    """Train one (variant, seed) unless its final policy is already there."""
    run_dir = out / f"{variant}__{seed}"
    policy = run_dir / "final_policy.qlr"
    if policy.is_file():
        return policy
    if run_dir.exists():  # an interrupted run: start it again from scratch
        shutil.rmtree(run_dir)
    overrides = VARIANTS[variant][0] + [
        f"total_timesteps={timesteps}",
        "eval_freq=0",
        "checkpoint_freq=0",
        "final_eval=null",
        "demonstrations.jobs=1",  # two trainings run side by side on the two cores
    ]
    command = [sys.executable, "-m", "qlr.agents.cli", "train", "--config", str(CONFIG)]
    command += ["--seed", str(seed), "--out", str(run_dir), "--no-progress-bar"]
    for o in overrides:
        command += ["--set", o]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    began = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{variant} seed {seed} failed:\n{done.stderr[-3000:]}")
    run_dir.joinpath("train.log").write_text(done.stdout)
    print(f"trained {variant} seed {seed} in {time.perf_counter() - began:.0f} s", flush=True)
    return policy


def rule_policy(name: str, out: Path) -> Path:
    """A hand rule as a policy file, so it is scored exactly like the trained ones."""
    path = out / name / "final_policy.qlr"
    if not path.is_file():
        save_policy(slope_rule(**RULES[name][0]), path)
    return path


def oracle_rows(name: str, config: EvalConfig, out: Path, jobs: int) -> list[dict]:
    cache = out / f"{name}_oracle_rows.json"
    if cache.is_file():
        return json.loads(cache.read_text())
    rows = run_specs(oracle_specs(config), jobs)
    atomic_write_bytes(cache, json.dumps(rows).encode())
    return rows


def score(policy: Path, name: str, config: EvalConfig, oracle: list[dict], jobs: int) -> dict:
    cache = policy.with_name(f"{name}_scores.json")
    if cache.is_file():
        return json.loads(cache.read_text())
    on_grid = all(
        any(abs(lr / g - 1) < 1e-9 for g in config.oracle_grid) for lr in config.initial_lrs
    )
    rows = run_specs(policy_specs(config, str(policy), constants=not on_grid), jobs)
    summary = summarize(rows, oracle)
    atomic_write_bytes(cache, json.dumps(summary, indent=1).encode())
    return summary


def _pooled(summaries: list[dict], key: str) -> float:
    runs = sum(s["overall"]["runs"] for s in summaries)
    return sum(s["overall"][key] * s["overall"]["runs"] for s in summaries) / runs


SCORING_NOTES = {
    "val": "`val`: the training families at sizes between train and test, {instances} instances "
    "per family, optimizers {optimizers}, initial rates {lrs}, {steps} gradient evaluations.",
    "heldout": "held-out: families ackley and digits_mlp at test sizes on instances of their "
    "own, optimizers {optimizers}, initial rates {lrs}, {steps} gradient evaluations.",
    "long": "long: minibatch `val` families {families}, {steps} steps (ten times a training "
    "episode), optimizers {optimizers}, initial rates {lrs}; no budget told.",
    "long_budget": "long, budget told: the same runs with QLRScheduler(total_steps={steps}).",
}


def table(
    results: dict[str, dict[str, list[dict]]],
    scorings: list[str],
    timesteps: int,
    seeds: list[int],
) -> str:
    """One table per scoring: per-seed medians, the median over seeds, pooled mean, within 2x,
    harm and divergences."""
    lines = [
        f"Each variant: `default.yaml` with the overrides in `experiments/ablate.py`, "
        f"{timesteps:,} transitions, training seeds {', '.join(map(str, seeds))}; the slope rule "
        "is scored as it is (no training). Scores are log10(final / oracle constant): lower is "
        "better. Harm: the run ends above 2x the loss of the constant rate it started from.",
    ]
    for name in scorings:
        config = SCORINGS[name]
        note = SCORING_NOTES[name].format(
            instances=config.instances,
            optimizers=", ".join(config.optimizers),
            lrs=", ".join(f"{x:g}" for x in config.initial_lrs),
            steps=config.steps,
            families=", ".join(config.families or ()),
        )
        lines += [
            "",
            f"### {name}",
            "",
            note,
            "",
            "| variant | what changes | median per seed | median of seeds | mean | within 2x "
            "| harm | divergences (avoidable) |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for variant, by_scoring in results.items():
            summaries = by_scoring.get(name) or []
            if not summaries:
                continue
            what = VARIANTS[variant][1] if variant in VARIANTS else RULES[variant][1]
            medians = [s["overall"]["median_log10_vs_oracle"] for s in summaries]
            divergences = sum(s["overall"]["divergences"] for s in summaries)
            avoidable = sum(s["overall"]["avoidable_divergences"] for s in summaries)
            lines.append(
                f"| {variant} | {what} | {' / '.join(f'{m:+.2f}' for m in medians)} | "
                f"{float(np.median(medians)):+.2f} | "
                f"{_pooled(summaries, 'mean_log10_vs_oracle'):+.2f} | "
                f"{_pooled(summaries, 'within_2x_of_oracle'):.0%} | "
                f"{_pooled(summaries, 'harmed'):.0%} | {divergences} ({avoidable}) |"
            )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--timesteps", type=int, default=120_000)
    parser.add_argument("--jobs", type=int, default=2, help="trainings (and eval workers) at once")
    parser.add_argument("--scorings", nargs="+", default=["val", "heldout"], choices=list(SCORINGS))
    parser.add_argument("--round", default="round4", help="name of the table and JSON files")
    parser.add_argument(
        "--rules", nargs="+", default=[RULE], choices=list(RULES), help="hand rules to score"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "ablation")
    parser.add_argument(
        "--results", type=Path, default=ROOT / "experiments" / "results" / "ablation"
    )
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    pairs = [(v, s) for v in args.variants for s in args.seeds]
    with ThreadPoolExecutor(args.jobs) as pool:
        policies = list(pool.map(lambda p: train_run(*p, args.timesteps, args.out), pairs))
    policies += [rule_policy(name, args.out) for name in args.rules]
    for name in args.scorings:
        config = SCORINGS[name]
        oracle = oracle_rows(name, config, args.out, args.jobs)
        for policy in policies:
            score(policy, name, config, oracle, args.jobs)
    # The table covers every variant of --variants scored so far in --out, not only this
    # invocation's seeds.
    results: dict[str, dict[str, list[dict]]] = {}
    seeds: set[int] = set()
    for variant in [*args.rules, *args.variants]:
        for run_dir in sorted(args.out.glob(f"{variant}__*")) or [args.out / variant]:
            caches = {name: run_dir / f"{name}_scores.json" for name in args.scorings}
            if all(c.is_file() for c in caches.values()):
                for name, cache in caches.items():
                    entry = results.setdefault(variant, {n: [] for n in args.scorings})
                    entry[name].append(json.loads(cache.read_text()))
                if "__" in run_dir.name:
                    seeds.add(int(run_dir.name.rsplit("__", 1)[1]))
    text = table(results, args.scorings, args.timesteps, sorted(seeds))
    print(text)
    args.results.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(args.results / f"{args.round}_table.md", (text + "\n").encode())
    raw = {
        "scorings": {name: asdict(SCORINGS[name]) for name in args.scorings},
        "timesteps": args.timesteps,
        "seeds": sorted(seeds),
        "variants": {v: VARIANTS[v][0] for v in args.variants},
        "results": {
            v: {name: [s["overall"] for s in r[name]] for name in args.scorings}
            for v, r in results.items()
        },
        "families": {
            v: {name: [s["families"] for s in r[name]] for name in args.scorings}
            for v, r in results.items()
        },
        "optimizers": {
            v: {name: [s.get("optimizers", {}) for s in r[name]] for name in args.scorings}
            for v, r in results.items()
        },
    }
    atomic_write_bytes(args.results / f"{args.round}.json", json.dumps(raw, indent=1).encode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
