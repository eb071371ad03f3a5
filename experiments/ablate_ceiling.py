"""The third design's ceiling arm: the shipped recipe reading where the rollback guard's ceiling
is, three training seeds, scored on the same held-out folds as the other arms.

After a failure the rollback guard keeps the rate below half the rate that failed, a ceiling that
relaxes 5 % a decision; ``lr_ceiling`` (feature version 6) says how close the rate is to it. The
networks are the shipped recipe (experiments/configs/default.yaml, rollback on) with that one
feature more, trained by ``RECIPES=ceiling bash experiments/train_arms.sh`` (seeds 0 1 2).
Built from them exactly as the shipped default is built from its networks, so the comparison
is one of features only:

* ``ceiling``: a trained network as it is (with the spike guard it trained with);
* ``ceiling_unguarded``: the same without the spike guard;
* ``ceiling_ensemble``: the two other seeds' networks, the rule deciding where they disagree,
  no spike guard (the shipped default's construction; each seed's arm leaves that seed out).

Scored first on the selection families (``ackley``, ``digits_mlp``, as in
experiments/ablate_arms.py), beside the rollback recipe's ensemble there (``arms_choice.json``),
then on the held-out report beside the rule, the shipped default and the starting constant.

    python experiments/ablate_ceiling.py                  # about 25 minutes on 2 cores
    python experiments/ablate_ceiling.py --stage table    # the table again, from the report

Writes, in experiments/results/ablation/: ``ceiling_selection.json`` and ``ceiling_heldout.json``
(the reports' summaries; the rows go to runs/ablation_arms/), ``ceiling_choice.json`` (each
arm's selection score, mean over seeds) and ``ceiling_table.md``. The unguarded and
ensemble files are rebuilt in ``arms/`` (not kept in git).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ablate_arms import (  # noqa: E402  (a sibling script, not a package)
    OUT,
    SEEDS,
    SELECTED_ON,
    SELECTION,
    build,
    ensemble,
    evaluate,
    label,
    lines,
    score,
    table_rows,
    trained,
    unguarded,
)

RECIPE = "ceiling"
DEFAULT = Path(__file__).resolve().parents[1] / "qlr" / "policies" / "default.qlr"


def arms() -> dict[str, list[Path]]:
    return {
        "ceiling": [trained(RECIPE, s) for s in SEEDS],
        "ceiling_unguarded": [unguarded(RECIPE, s) for s in SEEDS],
        "ceiling_ensemble": [ensemble(RECIPE, s) for s in SEEDS],
    }


def select() -> dict:
    paths = [p for group in arms().values() for p in group]
    report = evaluate(
        paths[0],
        ["slope_rule", "constant"] + [label(p) for p in paths[1:]],
        OUT / "ceiling_selection.json",
        SELECTION,
    )
    scored = {name: score(line) for name, line in lines(report, paths[0]).items()}
    earlier = json.loads((OUT / "arms_choice.json").read_text())
    return {
        "score": "median + mean log10 regret on the selection families, mean over seeds",
        **{
            name: statistics.mean(scored[label(p)] for p in group) for name, group in arms().items()
        },
        "rollback_ensemble": earlier["ensemble"]["rollback"],  # the shipped construction
        "slope_rule": scored["slope_rule"],
        "constant": scored["constant"],
    }


def held_out(selection: dict, report: dict | None = None) -> dict:
    groups = arms()
    paths = [p for group in groups.values() for p in group]
    if report is None:
        report = evaluate(
            paths[0],
            ["constant", "slope_rule", label(DEFAULT)] + [label(p) for p in paths[1:]],
            OUT / "ceiling_heldout.json",
            ["--held-out", "--selected-on", *SELECTED_ON],
        )
    scored = lines(report, paths[0])
    rows = table_rows(scored, groups, extra={"shipped default": scored[label(DEFAULT)]})
    instances = report["config"]["instances"]
    text = [
        "# Third design: the ceiling feature, on held-out folds",
        "",
        "`python experiments/ablate_ceiling.py` (networks: `RECIPES=ceiling bash "
        "experiments/train_arms.sh`; selection: `ceiling_selection.json`; report: "
        "`ceiling_heldout.json`).",
        "",
        "The shipped recipe with one feature more, `lr_ceiling` (how close the rate is to the "
        "ceiling the rollback guard keeps after a failure), seeds 0 1 2. Each cell: median / "
        "mean log10(final loss / oracle constant's) over the fold's runs, lower is better; the "
        f"held-out report's families (as in `arms_table.md`), {instances} instances each, "
        "starts 1e-4 / 1e-2 / 1, 300 gradient evaluations. Lost: avoidable divergences. Harm: "
        "ending above twice the starting constant's loss. The last column counts the folds "
        "where both the median and the mean are at or below the slope rule's.",
        "",
        *rows,
        "",
        "## On the selection families, `ackley` and `digits_mlp`",
        "",
        f"Median + mean log10 regret, mean over the three seeds ({selection['score']}); lower "
        "is better. The rollback recipe's ensemble is the shipped default's construction "
        "(from `arms_choice.json`, the same runs).",
        "",
        "| line | score |",
        "|---|---|",
        *(
            f"| {name} | {selection[name]:+.3f} |"
            for name in (*groups, "rollback_ensemble", "slope_rule", "constant")
        ),
        "",
    ]
    (OUT / "ceiling_table.md").write_text("\n".join(text))
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stage", choices=["select", "held-out", "table", "all"], default="all")
    parser.add_argument("--jobs", default=os.environ.get("JOBS", "2"))
    args = parser.parse_args(argv)
    import ablate_arms

    ablate_arms.JOBS = str(args.jobs)
    missing = [str(p) for p in arms()["ceiling"] if not p.exists()]
    if missing:
        print(
            f"missing trained files: {missing} (RECIPES=ceiling bash experiments/train_arms.sh)",
            file=sys.stderr,
        )
        return 2
    build(RECIPE)  # the unguarded and ensemble files (and residuals, unused here)
    selection_file = OUT / "ceiling_choice.json"
    if args.stage in ("select", "all"):
        selection = select()
        selection_file.write_text(json.dumps(selection, indent=2) + "\n")
    else:
        selection = json.loads(selection_file.read_text())
    print(json.dumps(selection, indent=2))
    if args.stage == "table":
        held_out(selection, report=json.loads((OUT / "ceiling_heldout.json").read_text()))
    elif args.stage in ("held-out", "all"):
        held_out(selection)
    print(f"wrote {OUT / 'ceiling_table.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
