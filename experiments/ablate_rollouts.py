"""The third design's paired-rollout arm: approximate policy iteration from the slope rule,
three labelling seeds, scored on the same held-out folds as the other arms.

For each seed, `qlr improve` labels states of the slope rule's episodes in the shipped recipe's
training environment (experiments/configs/default.yaml, rollback on) by copying the run once
per factor and following the rule for 12 decisions on the same minibatches, then fits every
factor's advantage over the rule's. Built from each seed's fit (no relabelling):

* ``rollouts``: the fit, leaving the rule where the fitted advantage clears the margin;
* ``rollouts_ensemble``: the fits of the two other seeds, leaving the rule only where both
  agree and clear the margin (each seed's arm leaves that seed out).

The margin is chosen on the selection families (``ackley``, ``digits_mlp``, instances 4,000,003
on, as in experiments/ablate_arms.py), and only then is every arm scored on the held-out report
beside the rule, the shipped default and the starting constant.

    python experiments/ablate_rollouts.py                 # about 50 minutes on 2 cores
    python experiments/ablate_rollouts.py --stage table   # the table again, from the report

Writes, in experiments/results/ablation/: ``rollouts/seed*/`` (each seed's labels, their
settings and its policy file at the default margin, from `qlr improve`),
``rollouts_selection.json``, ``rollouts_choice.json``, ``rollouts_heldout.json`` (summaries; the
rows go to runs/ablation_arms/) and ``rollouts_table.md``. The margin variants and ensembles
are rebuilt in ``arms/`` from the labels (not kept in git).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ablate_arms import (  # noqa: E402  (a sibling script, not a package)
    ARMS,
    OUT,
    QLR,
    ROOT,
    SEEDS,
    SELECTED_ON,
    SELECTION,
    evaluate,
    label,
    lines,
    score,
    table_rows,
)

ROLLOUTS = OUT / "rollouts"
MARGINS = (0.0, 0.05, 0.15, 0.4)
DEFAULT = ROOT / "qlr" / "policies" / "default.qlr"


def seed_dir(seed: int) -> Path:
    return ROLLOUTS / f"seed{seed}"


def arm(seed: int, margin: float, ensemble: bool = False) -> Path:
    kind = "rollouts_ensemble" if ensemble else "rollouts"
    return ARMS / f"{kind}{margin:g}_seed{seed}.qlr"


def label_seeds(jobs: str) -> None:
    """Each seed's labels and fit (`qlr improve`; labels already there are reused)."""
    for seed in SEEDS:
        out = seed_dir(seed)
        command = [QLR, "improve", str(out.relative_to(ROOT)), "--seed", str(seed)]
        print(" ".join(command + ["--jobs", jobs]), flush=True)
        subprocess.run(command + ["--jobs", jobs], cwd=ROOT, check=True)


def build() -> None:
    """Every margin's single and leave-one-out ensemble arm, from the seeds' fitted files."""
    from qlr.deferral import Deferral
    from qlr.ensemble import combine
    from qlr.policy import Policy, load_policy, save_policy

    fits = {seed: load_policy(seed_dir(seed) / "policy.qlr") for seed in SEEDS}
    for margin in MARGINS:
        for seed in SEEDS:
            single = replace(fits[seed].metadata, defer=Deferral(margin))
            save_policy(Policy(fits[seed].layers, single), arm(seed, margin))
            others = [fits[s] for s in SEEDS if s != seed]
            pair = combine(others, Deferral(margin), spike_guard=False)
            save_policy(pair, arm(seed, margin, ensemble=True))


def select() -> dict:
    build()
    candidates = [arm(s, m, e) for e in (False, True) for m in MARGINS for s in SEEDS]
    report = evaluate(
        candidates[0],
        ["slope_rule", "constant"] + [label(p) for p in candidates[1:]],
        OUT / "rollouts_selection.json",
        SELECTION,
    )
    scored = {name: score(line) for name, line in lines(report, candidates[0]).items()}

    def mean(margin: float, ensemble: bool) -> float:
        return statistics.mean(scored[label(arm(s, margin, ensemble))] for s in SEEDS)

    singles = {m: mean(m, False) for m in MARGINS}
    pairs = {m: mean(m, True) for m in MARGINS}
    # Ties go to the larger margin: the closer to the rule, the safer.
    margin = min(sorted(MARGINS, reverse=True), key=lambda m: min(singles[m], pairs[m]))
    choice = {
        "margin": margin,
        "score": "median + mean log10 regret on the selection families, mean over seeds",
        "rollouts": {f"{m:g}": v for m, v in singles.items()},
        "rollouts_ensemble": {f"{m:g}": v for m, v in pairs.items()},
        "slope_rule": scored["slope_rule"],
        "constant": scored["constant"],
    }
    (OUT / "rollouts_choice.json").write_text(json.dumps(choice, indent=2) + "\n")
    return choice


def held_out(choice: dict, report: dict | None = None) -> dict:
    margin = choice["margin"]
    arms = {
        "rollouts": [arm(s, margin) for s in SEEDS],
        "rollouts_ensemble": [arm(s, margin, ensemble=True) for s in SEEDS],
    }
    paths = [p for group in arms.values() for p in group]
    if report is None:
        report = evaluate(
            paths[0],
            ["constant", "slope_rule", label(DEFAULT)] + [label(p) for p in paths[1:]],
            OUT / "rollouts_heldout.json",
            ["--held-out", "--selected-on", *SELECTED_ON],
        )
    scored = lines(report, paths[0])
    rows = table_rows(scored, arms, extra={"shipped default": scored[label(DEFAULT)]})
    instances = report["config"]["instances"]
    text = [
        "# Third design: policy improvement from paired rollouts, on held-out folds",
        "",
        "`python experiments/ablate_rollouts.py` (labels and fits: `rollouts/seed*/`; "
        "selection: `rollouts_selection.json`; report: `rollouts_heldout.json`).",
        "",
        "Each cell: median / mean log10(final loss / oracle constant's) over the fold's runs, "
        "lower is better; the held-out report's families (the same as `arms_table.md`), "
        f"{instances} instances each, starts 1e-4 / 1e-2 / 1, 300 gradient evaluations. Lost: "
        "avoidable divergences. Harm: ending above twice the starting constant's loss. The last "
        "column counts the folds where both the median and the mean are at or below the slope "
        "rule's.",
        "",
        f"Margin {margin:g}, chosen on the selection families (`ackley`, `digits_mlp`) before "
        "any of this was scored (`rollouts_choice.json`).",
        "",
        *rows,
        "",
        "## The selection, on `ackley` and `digits_mlp`",
        "",
        f"Median + mean log10 regret, mean over the three seeds ({choice['score']}); "
        "lower is better.",
        "",
        "| margin | rollouts | rollouts_ensemble |",
        "|---|---|---|",
        *(
            f"| {m} | {v:+.3f} | {choice['rollouts_ensemble'][m]:+.3f} |"
            for m, v in choice["rollouts"].items()
        ),
        f"| slope rule | {choice['slope_rule']:+.3f} | |",
        f"| constant (start rate) | {choice['constant']:+.3f} | |",
        "",
    ]
    (OUT / "rollouts_table.md").write_text("\n".join(text))
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stage", choices=["label", "select", "held-out", "table", "all"])
    parser.add_argument("--jobs", default=os.environ.get("JOBS", "2"))
    args = parser.parse_args(argv)
    stage = args.stage or "all"
    import ablate_arms

    ablate_arms.JOBS = str(args.jobs)
    if stage in ("label", "all"):
        label_seeds(args.jobs)
    if stage == "label":
        return 0
    if stage in ("select", "all"):
        choice = select()
    else:
        build()
        choice = json.loads((OUT / "rollouts_choice.json").read_text())
    print(json.dumps(choice, indent=2))
    if stage == "table":
        held_out(choice, report=json.loads((OUT / "rollouts_heldout.json").read_text()))
    elif stage in ("held-out", "all"):
        held_out(choice)
    print(f"wrote {OUT / 'rollouts_table.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
