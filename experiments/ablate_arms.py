"""The third design's ablation: learners beside the recipe, three training seeds each, scored
on held-out folds.

Arms (every one built from Q-networks trained by `qlr train --config default`, seeds 0 1 2):

* ``recipe``: the second design's recipe as shipped (DQfD on the slope rule, greedy);
* ``rollback``: the same recipe with the environment under the scheduler's rollback rule
  (``--set env.rollback=true``: a diverged block is undone, the rate cut and capped, the
  episode goes on);
* ``residual``: a trained network that leaves the rule only when its q-value advantage over the
  rule's action clears a margin (`qlr.deferral.Deferral`);
* ``ensemble``: two networks of different seeds (each seed's arm leaves that seed out); where
  their choices differ the rule decides (margin 0);
* ``unguarded``: a trained network as it is, without the spike guard it was trained with (the
  guard cuts the rate x0.1 on a loss ten times its last block's mean; with the rollback guard
  on, a real divergence is undone anyway). The residual and ensemble arms run without it too.

A first selection round ran the residual arm with the spike guard, at margins 0.02 to 0.5: every
margin scored like the greedy network and all of them 0.07 behind the rule, which the same
network deferring to the rule at an unreachable margin showed was the guard's doing
(``arms_selection_guarded.json``, ``arms_choice_guarded.json``, written by this script's first
version, which built every arm with the guard). So the guard became an arm.

The learned arms are compared with the rule itself (``slope_rule``) and the starting constant.
Nothing is chosen on the report's families: the margin and the recipe the residual and ensemble
arms are built on are chosen on ``ackley`` and ``digits_mlp`` (never trained on, instances
4,000,003 on, the recipe ablations' selection families), and the held-out report (`qlr evaluate
--held-out`, instances 6,000,003 on) leaves those out.

    python experiments/ablate_arms.py                 # about 45 minutes on 2 cores
    python experiments/ablate_arms.py --stage select  # the selection only
    python experiments/ablate_arms.py --stage table   # the table again, from the report

Inputs: the trained files in experiments/results/ablation/arms/ (``recipe_seed*.qlr``,
``rollback_seed*.qlr``; `experiments/train_arms.sh` trains and copies them). Writes, in
experiments/results/ablation/: ``arms_selection.json`` (every candidate's summary; the runs
themselves go to runs/ablation_arms/) and
``arms_choice.json`` (the choice), the arms' built files in ``arms/`` (not kept in git: the
script rebuilds them), ``arms_heldout.json`` and ``.md`` (the held-out report with every arm beside
the rule) and ``arms_table.md`` (arms x folds x seeds).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "experiments" / "results" / "ablation"
ARMS = OUT / "arms"
QLR = os.environ.get("QLR", str(ROOT / ".venv" / "bin" / "qlr"))
SEEDS = (0, 1, 2)
RECIPES = ("recipe", "rollback")
MARGINS = (0.1, 0.5, 2.0)
SELECTION = [
    "--families", "ackley", "digits_mlp",
    "--distribution", "test",
    "--optimizers", "sgd", "momentum", "adam",
    "--initial-lrs", "1e-4", "1e-2", "1",
    "--instances", "2",
    "--steps", "300",
    "--seed", "4000003",
]  # fmt: skip
SELECTED_ON = ["val", "ackley", "digits_mlp"]  # what every arm's training or choice read


def trained(recipe: str, seed: int) -> Path:
    return ARMS / f"{recipe}_seed{seed}.qlr"


def unguarded(recipe: str, seed: int) -> Path:
    return ARMS / f"{recipe}_unguarded_seed{seed}.qlr"


def residual(recipe: str, seed: int, margin: float) -> Path:
    return ARMS / f"{recipe}_residual{margin:g}_seed{seed}.qlr"


def ensemble(recipe: str, seed: int) -> Path:
    return ARMS / f"{recipe}_ensemble_seed{seed}.qlr"


def build(recipe: str) -> None:
    """Write the unguarded, residual (every margin) and leave-one-seed-out ensemble arms of
    `recipe`, all without the spike guard."""
    from qlr.deferral import Deferral
    from qlr.ensemble import combine
    from qlr.policy import load_policy, save_policy

    members = {seed: load_policy(trained(recipe, seed)) for seed in SEEDS}
    for seed in SEEDS:
        mine = [members[seed]]
        save_policy(combine(mine, spike_guard=False), unguarded(recipe, seed))
        for margin in MARGINS:
            deferring = combine(mine, Deferral(margin), spike_guard=False)
            save_policy(deferring, residual(recipe, seed, margin))
        others = [members[s] for s in SEEDS if s != seed]
        save_policy(combine(others, Deferral(0.0), spike_guard=False), ensemble(recipe, seed))


def evaluate(main: Path, references: list[str], out: Path, extra: list[str]) -> dict:
    command = [QLR, "evaluate", str(main.relative_to(ROOT)), *extra, "--jobs", JOBS]
    command += ["--out", str(out.relative_to(ROOT)), "--references", *references]
    print(" ".join(command), flush=True)
    subprocess.run(command, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    return keep_summary(out)


def keep_summary(out: Path) -> dict:
    """Move the report's every-run rows to runs/ (bulky) and keep its summaries here."""
    report = json.loads(out.read_text())
    full = ROOT / "runs" / "ablation_arms" / out.name
    full.parent.mkdir(parents=True, exist_ok=True)
    full.write_text(json.dumps(report))
    summary = {key: value for key, value in report.items() if key != "rows"}
    out.write_text(json.dumps(summary, indent=1) + "\n")
    return report


def label(path: Path) -> str:
    return f"policy:{path.relative_to(ROOT)}"


def lines(report: dict, main: Path) -> dict[str, dict]:
    """Every scored line of a report by name: the main policy under its policy:PATH name."""
    summary = report["summary"]
    return {label(main): summary, **summary.get("references", {})}


def score(line: dict) -> float:
    """What the selection minimises: median plus mean log10 regret (the targets read both)."""
    overall = line["overall"]
    return overall["median_log10_vs_oracle"] + overall["mean_log10_vs_oracle"]


def select() -> dict:
    for recipe in RECIPES:
        build(recipe)
    candidates = [trained(r, s) for r in RECIPES for s in SEEDS]
    candidates += [unguarded(r, s) for r in RECIPES for s in SEEDS]
    candidates += [residual(r, s, m) for r in RECIPES for s in SEEDS for m in MARGINS]
    candidates += [ensemble(r, s) for r in RECIPES for s in SEEDS]
    report = evaluate(
        candidates[0],
        ["slope_rule", "constant"] + [label(p) for p in candidates[1:]],
        OUT / "arms_selection.json",
        SELECTION,
    )
    scored = {name: score(line) for name, line in lines(report, candidates[0]).items()}
    by = {path: scored[label(path)] for path in candidates}

    def mean_over_seeds(paths: list[Path]) -> float:
        return statistics.mean(by[p] for p in paths)

    greedy = {r: mean_over_seeds([trained(r, s) for s in SEEDS]) for r in RECIPES}
    bare = {r: mean_over_seeds([unguarded(r, s) for s in SEEDS]) for r in RECIPES}
    recipe = min(RECIPES, key=lambda r: bare[r])
    margins = {m: mean_over_seeds([residual(recipe, s, m) for s in SEEDS]) for m in MARGINS}
    # Ties go to the larger margin: the closer to the rule, the safer.
    margin = min(sorted(MARGINS, reverse=True), key=lambda m: margins[m])
    choice = {
        "recipe": recipe,
        "margin": margin,
        "score": "median + mean log10 regret on the selection families, mean over seeds",
        "greedy": greedy,
        "unguarded": bare,
        "margins": {f"{m:g}": v for m, v in margins.items()},
        "ensemble": {r: mean_over_seeds([ensemble(r, s) for s in SEEDS]) for r in RECIPES},
        "slope_rule": scored["slope_rule"],
        "constant": scored["constant"],
    }
    (OUT / "arms_choice.json").write_text(json.dumps(choice, indent=2) + "\n")
    return choice


def held_out(choice: dict, report: dict | None = None) -> dict:
    recipe, margin = choice["recipe"], choice["margin"]
    arms = {
        "recipe": [trained("recipe", s) for s in SEEDS],
        "rollback": [trained("rollback", s) for s in SEEDS],
        "unguarded": [unguarded(recipe, s) for s in SEEDS],
        "residual": [residual(recipe, s, margin) for s in SEEDS],
        "ensemble": [ensemble(recipe, s) for s in SEEDS],
    }
    paths = [p for group in arms.values() for p in group]
    if report is None:
        report = evaluate(
            paths[0],
            ["constant", "slope_rule", "prodigy"] + [label(p) for p in paths[1:]],
            OUT / "arms_heldout.json",
            ["--held-out", "--selected-on", *SELECTED_ON],
        )
    write_table(report, lines(report, paths[0]), arms, choice)
    return report


def _cell(line: dict, fold: str | None) -> str:
    s = line["overall"] if fold is None else line["folds"].get(fold)
    if not s:
        return "—"
    return f"{s['median_log10_vs_oracle']:+.2f} / {s['mean_log10_vs_oracle']:+.2f}"


def table_rows(
    scored: dict[str, dict], arms: dict[str, list[Path]], extra: dict[str, dict] | None = None
) -> list[str]:
    """The table of arms x folds x seeds, then the rule, the starting constant and `extra`
    (more lines by name), each with its verdict against the rule fold by fold."""
    rule = scored["slope_rule"]
    folds = list(rule["folds"])
    head = "| arm | seed | " + " | ".join(folds)
    head += " | all | within 2x | harm | lost | folds at or below the rule |"
    rows = [head, "|" + "---|" * (len(folds) + 7)]

    def verdict(line: dict) -> int:
        ok = 0
        for fold in folds:
            mine, theirs = line["folds"][fold], rule["folds"][fold]
            ok += all(
                mine[k] <= theirs[k] + 1e-12
                for k in ("median_log10_vs_oracle", "mean_log10_vs_oracle")
            )
        return ok

    def row(name: str, seed: str, line: dict) -> str:
        o = line["overall"]
        lost = o.get("avoidable_divergences", 0)
        return (
            f"| {name} | {seed} | "
            + " | ".join(_cell(line, f) for f in folds)
            + f" | {_cell(line, None)} | {o['within_2x_of_oracle']:.0%} | "
            f"{o.get('harmed', 0):.0%} | {lost} | {verdict(line)} of {len(folds)} |"
        )

    for name, paths in arms.items():
        for seed, path in zip(SEEDS, paths, strict=True):
            rows.append(row(name, str(seed), scored[label(path)]))
    for name, line in (extra or {}).items():
        rows.append(row(name, "—", line))
    rows.append(row("slope_rule", "—", rule))
    rows.append(row("constant (start rate)", "—", scored["constant"]))
    return rows


def write_table(
    report: dict, scored: dict[str, dict], arms: dict[str, list[Path]], choice: dict
) -> None:
    rows = table_rows(scored, arms)
    instances = report["config"]["instances"]
    text = [
        "# Third design: learners beside the recipe, on held-out folds",
        "",
        "`python experiments/ablate_arms.py` (selection: `arms_selection.json`; report: "
        "`arms_heldout.json`, `arms_heldout.md`).",
        "",
        "Each cell: median / mean log10(final loss / oracle constant's) over the fold's runs, "
        "lower is better; the report's held-out families at the folds' `test` sizes, "
        f"{instances} instances each, starts 1e-4 / 1e-2 / 1, 300 gradient "
        "evaluations. Lost: avoidable divergences (the constant survived its first two steps). "
        "Harm: ending above twice the starting constant's loss. The last column counts the "
        "folds where both the median and the mean are at or below the slope rule's.",
        "",
        f"Chosen on the selection families (`ackley`, `digits_mlp`) before any of this was "
        f"scored: unguarded, residual and ensemble arms built on the `{choice['recipe']}` "
        f"networks, margin {choice['margin']:g} (see `arms_choice.json`).",
        "",
        *rows,
        "",
        "## The selection, on `ackley` and `digits_mlp`",
        "",
        f"Median + mean log10 regret, mean over the three seeds ({choice['score']}); "
        "lower is better.",
        "",
        "| line | recipe | rollback |",
        "|---|---|---|",
        f"| trained network, spike guard on | {choice['greedy']['recipe']:+.3f} | "
        f"{choice['greedy']['rollback']:+.3f} |",
        f"| trained network, no spike guard | {choice['unguarded']['recipe']:+.3f} | "
        f"{choice['unguarded']['rollback']:+.3f} |",
        f"| ensemble of two, no spike guard | {choice['ensemble']['recipe']:+.3f} | "
        f"{choice['ensemble']['rollback']:+.3f} |",
        *(
            f"| residual, margin {m}, no spike guard | — | {v:+.3f} |"
            if choice["recipe"] == "rollback"
            else f"| residual, margin {m}, no spike guard | {v:+.3f} | — |"
            for m, v in choice["margins"].items()
        ),
        f"| slope rule | {choice['slope_rule']:+.3f} | |",
        f"| constant (start rate) | {choice['constant']:+.3f} | |",
        "",
    ]
    (OUT / "arms_table.md").write_text("\n".join(text))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stage", choices=["select", "held-out", "table", "all"], default="all")
    parser.add_argument("--jobs", default=os.environ.get("JOBS", "2"))
    args = parser.parse_args(argv)
    global JOBS
    JOBS = str(args.jobs)
    missing = [trained(r, s) for r in RECIPES for s in SEEDS if not trained(r, s).exists()]
    if missing:
        print(f"missing trained files: {[str(p) for p in missing]}", file=sys.stderr)
        return 2
    choice_file = OUT / "arms_choice.json"
    if args.stage in ("select", "all"):
        choice = select()
    else:
        for recipe in RECIPES:
            build(recipe)
        choice = json.loads(choice_file.read_text())
    print(json.dumps(choice, indent=2))
    if args.stage == "table":  # the table again, from the report already written
        held_out(choice, report=json.loads((OUT / "arms_heldout.json").read_text()))
    if args.stage in ("held-out", "all"):
        held_out(choice)
        print(f"wrote {OUT / 'arms_table.md'}")
    return 0


JOBS = "2"

if __name__ == "__main__":
    raise SystemExit(main())
