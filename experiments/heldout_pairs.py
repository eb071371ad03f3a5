"""Paired reads of the held-out reports that experiments/heldout_default.sh wrote.

`test_budget` and `previous_default` run on the first instance of each family only, so their
overall figures are not comparable with `test` (three instances). This scores the default, the
slope rule, the default told the budget and the first design's default on the same first-instance
runs, and counts how often each ends at or below the default on the same run.

    python experiments/heldout_pairs.py   # writes pairs.md beside the reports
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from qlr._atomic import atomic_write_bytes
from qlr.agents.bench.evaluate import summarize

HELDOUT = Path(__file__).resolve().parents[1] / "experiments/results/default_training/heldout"


def final(row: dict) -> float:
    loss = row["final_loss"]
    return math.inf if row["diverged"] or loss is None or not math.isfinite(loss) else loss


def main() -> int:
    test = json.loads((HELDOUT / "test.json").read_text())["rows"]
    first = {}
    for row in test:
        first[row["family"]] = min(first.get(row["family"], math.inf), row["instance"])
    runs = [r for r in test if r["instance"] == first[r["family"]]]
    oracle = [r for r in runs if r["method"] == "constant"]
    default = {
        (r["family"], r["instance"], r["optimizer"], r["lr"]): r
        for r in runs
        if r["method"] == "policy"
    }
    arms = [("default", runs, "policy"), ("slope rule", runs, "slope_rule")]
    for name, file in (
        ("default told the budget", "test_budget"),
        ("first design's default", "previous_default"),
    ):
        arms.append((name, json.loads((HELDOUT / f"{file}.json").read_text())["rows"], "policy"))
    lines = [
        "Held-out `test`, first instance of each family (275 runs: 11 families, 5 optimizers, 5 "
        "starting rates, 300 gradient evaluations), every arm on the same runs. Scores are "
        "log10(final / oracle constant); harm: ends above 2x its starting constant's loss.",
        "",
        "| arm | median | mean | within 2x | harm | divergences (avoidable) "
        "| at or below the default, same run |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, rows, method in arms:
        mine = [r for r in rows if r["method"] == method]
        o = summarize(mine, oracle, method=method)["overall"]
        paired = [
            (final(r), final(default[k]))
            for r in mine
            if (k := (r["family"], r["instance"], r["optimizer"], r["lr"])) in default
        ]
        share = sum(a <= b for a, b in paired) / len(paired)
        lines.append(
            f"| {name} | {o['median_log10_vs_oracle']:+.2f} | {o['mean_log10_vs_oracle']:+.2f} | "
            f"{o['within_2x_of_oracle']:.0%} | {o['harmed']:.1%} | {o['divergences']} "
            f"({o['avoidable_divergences']}) | {share:.0%} |"
        )
    text = "\n".join(lines) + "\n"
    print(text, end="")
    atomic_write_bytes(HELDOUT / "pairs.md", text.encode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
