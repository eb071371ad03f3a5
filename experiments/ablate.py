"""Ablations of the default controller's recipe, several training seeds each, scored on `val`.

Every variant is `experiments/configs/default.yaml` with a few keys overridden, trained for a
shortened budget (the same for all variants) with several seeds, and scored on the `val`
distribution (train families at sizes between train and test, never the test split). The table
gives, per variant, each seed's median log10(final loss / oracle constant) and the pooled
figures; `experiments/results/ablation/ablation.md` adds what was kept and why.

    python experiments/ablate.py                       # every variant, seeds 0 1
    python experiments/ablate.py --variants base guard --seeds 0 1 2 --timesteps 150000

Runs go to runs/ablation/<variant>__<seed>; a finished run (its final_policy.qlr exists) is not
trained again, and its scores are cached next to it, so the command resumes where it stopped.
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
from dataclasses import asdict
from pathlib import Path

import numpy as np

from qlr._atomic import atomic_write_bytes
from qlr.agents.bench.evaluate import EvalConfig, oracle_specs, policy_specs, run_specs, summarize
from qlr.features import FEATURES_V1, FEATURES_V2

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "experiments" / "configs" / "default.yaml"
VAL = EvalConfig(
    distribution="val",
    instances=2,
    optimizers=("sgd", "momentum", "adam"),
    initial_lrs=(1e-5, 1e-3, 1e-1),
    steps=300,
    seed=3_000_003,  # val instances of their own: neither the periodic evaluation's nor test's
)


def _features(names) -> str:
    return "env.features=[" + ",".join(names) + "]"


NO_GRAD = [n for n in FEATURES_V2 if not n.startswith("grad_")]
# name -> (overrides of default.yaml, what it tests). Each variant states every key it depends
# on, so the table keeps its meaning when default.yaml changes.
VARIANTS: dict[str, tuple[list[str], str]] = {
    "base": (
        [_features(FEATURES_V1), "env.spike_factor=null"],
        "the first shipped recipe: ten features, no guard",
    ),
    "lr_drift": (
        [_features(FEATURES_V2), "env.spike_factor=null"],
        "+ the lr_drift feature",
    ),
    "guard": (
        [_features(FEATURES_V1), "env.spike_factor=2.0"],
        "+ the spike guard (x0.5 when a loss exceeds 2x the last block's mean)",
    ),
    "guard_drift": (
        [_features(FEATURES_V2), "env.spike_factor=2.0"],
        "+ guard + lr_drift",
    ),
    "guard_drift_h120": (
        [_features(FEATURES_V2), "env.spike_factor=2.0", "env.horizon=120"],
        "+ guard + lr_drift, episodes of 120 decisions instead of 60",
    ),
    "guard_drift_g09": (
        [_features(FEATURES_V2), "env.spike_factor=2.0", "dqn.gamma=0.9"],
        "+ guard + lr_drift, discount 0.9 instead of 0.99",
    ),
    "guard_drift_a5": (
        [_features(FEATURES_V2), "env.spike_factor=2.0", "env.action_factors=5"],
        "+ guard + lr_drift, five factors instead of three",
    ),
    "guard_drift_nograd": (
        [_features(NO_GRAD), "env.spike_factor=2.0"],
        "+ guard + lr_drift, without the three gradient features",
    ),
    # Second round: the two changes that helped most in the first, together, and the guard and
    # lr_drift ablated again on top of them. Rounds one and two ran the first guard, which cut
    # on every step above 2x the reference, rising or not (see results/ablation/README.md).
    "g09_a5": (
        [_features(FEATURES_V2), "env.spike_factor=2.0", "dqn.gamma=0.9", "env.action_factors=5"],
        "guard + lr_drift + discount 0.9 + five factors",
    ),
    "g09_a5_cut01": (
        [
            _features(FEATURES_V2),
            "env.spike_factor=2.0",
            "env.spike_cut=0.1",
            "dqn.gamma=0.9",
            "env.action_factors=5",
        ],
        "g09_a5 with a guard that cuts x0.1 instead of x0.5",
    ),
    "g09_a5_nodrift": (
        [_features(FEATURES_V1), "env.spike_factor=2.0", "dqn.gamma=0.9", "env.action_factors=5"],
        "g09_a5 without lr_drift",
    ),
    "g09_a5_noguard": (
        [
            _features(FEATURES_V2),
            "env.spike_factor=null",
            "dqn.gamma=0.9",
            "env.action_factors=5",
        ],
        "g09_a5 without the spike guard",
    ),
    # Third round: the guard cuts only while the loss is still rising.
    "g09_a5_cut01_rising": (
        [
            _features(FEATURES_V2),
            "env.spike_factor=2.0",
            "env.spike_cut=0.1",
            "dqn.gamma=0.9",
            "env.action_factors=5",
        ],
        "g09_a5_cut01 with the guard of round three (cuts only while the loss rises)",
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
    print(f"trained {variant} seed {seed} in {time.perf_counter() - began:.0f} s", flush=True)
    return policy


def score(policy: Path, oracle_rows: list[dict], jobs: int) -> dict:
    cache = policy.with_name("val_scores.json")
    if cache.is_file():
        return json.loads(cache.read_text())
    rows = run_specs(policy_specs(VAL, str(policy)), jobs)
    summary = summarize(rows, oracle_rows)
    atomic_write_bytes(cache, json.dumps(summary, indent=1).encode())
    return summary


def table(results: dict[str, list[dict]], timesteps: int, seeds: list[int]) -> str:
    lines = [
        f"Each variant: `default.yaml` with the overrides shown, {timesteps:,} transitions, "
        f"training seeds {', '.join(map(str, seeds))} (as many as the column lists); "
        f"scored on `val` ({VAL.instances} instances "
        f"per family, {len(VAL.optimizers)} optimizers, initial rates "
        f"{', '.join(f'{x:g}' for x in VAL.initial_lrs)}, {VAL.steps} gradient evaluations, "
        "oracle = best of 15 constant rates). Scores are log10(final / oracle): lower is better. "
        "Avoidable divergences exclude runs whose starting rate blows up within two steps, "
        "before any scheduler can act (see qlr.agents.bench.evaluate).",
        "",
        "| variant | what changes | median per seed | median, all seeds | within 2x "
        "| beats start rate | divergences (avoidable) |",
        "|---|---|---|---|---|---|---|",
    ]
    for variant, summaries in results.items():
        per_seed = [s["overall"]["median_log10_vs_oracle"] for s in summaries]
        runs = sum(s["overall"]["runs"] for s in summaries)

        def pooled(key: str, summaries=summaries, runs=runs) -> float:
            return sum(s["overall"][key] * s["overall"]["runs"] for s in summaries) / runs

        lines.append(
            f"| {variant} | {VARIANTS[variant][1]} | "
            + " / ".join(f"{x:+.2f}" for x in per_seed)
            + f" | {float(np.median(per_seed)):+.2f} | {pooled('within_2x_of_oracle'):.0%} | "
            f"{pooled('beats_start_rate'):.0%} | "
            f"{sum(s['overall']['divergences'] for s in summaries)} / {runs} "
            f"({sum(s['overall']['avoidable_divergences'] for s in summaries)}) |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--timesteps", type=int, default=120_000)
    parser.add_argument("--jobs", type=int, default=2, help="trainings (and eval workers) at once")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "ablation")
    parser.add_argument(
        "--results", type=Path, default=ROOT / "experiments" / "results" / "ablation"
    )
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    pairs = [(v, s) for v in args.variants for s in args.seeds]
    with ThreadPoolExecutor(args.jobs) as pool:
        policies = list(pool.map(lambda p: train_run(*p, args.timesteps, args.out), pairs))

    oracle_cache = args.out / "val_oracle_rows.json"
    if oracle_cache.is_file():
        oracle_rows = json.loads(oracle_cache.read_text())
    else:
        oracle_rows = run_specs(oracle_specs(VAL), args.jobs)
        atomic_write_bytes(oracle_cache, json.dumps(oracle_rows).encode())
    for policy in policies:
        score(policy, oracle_rows, args.jobs)
    # The table covers every variant scored so far in --out, not only this invocation's.
    results: dict[str, list[dict]] = {}
    seeds: set[int] = set()
    for variant in VARIANTS:
        for seed_dir in sorted(args.out.glob(f"{variant}__*")):
            cache = seed_dir / "val_scores.json"
            if cache.is_file():
                results.setdefault(variant, []).append(json.loads(cache.read_text()))
                seeds.add(int(seed_dir.name.rsplit("__", 1)[1]))
    text = table(results, args.timesteps, sorted(seeds))
    print(text)
    args.results.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(args.results / "ablation_table.md", (text + "\n").encode())
    raw = {"eval": asdict(VAL), "timesteps": args.timesteps, "seeds": sorted(seeds)}
    raw["results"] = {v: [s["overall"] for s in r] for v, r in results.items()}
    atomic_write_bytes(args.results / "ablation.json", json.dumps(raw, indent=1).encode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
