"""One Markdown table from several `qlr evaluate --out` reports, one column block per policy.

    python experiments/noise_table.py "noise=experiments/results/noise/heldout/noise.json" x.json

An argument ``LABEL=PATH`` names the column; a bare path is named after its file.

Run by experiments/noise_evidence.sh; prints to stdout.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(paths: list[str]) -> None:
    reports = {}
    for arg in paths:
        label, _, path = arg.rpartition("=")
        reports[label or Path(path).stem] = json.loads(Path(path).read_text())
    first = next(iter(reports.values()))
    config = first["config"]
    print(
        f"Held-out minibatch problems (`{config['distribution']}`, {config['instances']} "
        f"instances per family, optimizers {', '.join(config['optimizers'])}, starting rates "
        f"{', '.join(f'{lr:g}' for lr in config['initial_lrs'])}): {config['steps']} steps at "
        "the starting batch, in examples for a policy that grows the batch. Scores are "
        "median log10(final loss / oracle constant's), lower is better.\n"
    )
    print(
        "| family | "
        + " | ".join(f"{name}: vs oracle / beats start / div." for name in reports)
        + " |"
    )
    print("|---|" + "---|" * len(reports))
    families = [*first["summary"]["families"], "all"]
    for family in families:
        cells = []
        for report in reports.values():
            s = report["summary"]["overall" if family == "all" else "families"]
            s = s if family == "all" else s.get(family, {})
            cells.append(
                f"{s['median_log10_vs_oracle']:+.2f} / {s['beats_start_rate']:.0%} / "
                f"{s['divergences']}"
                if s
                else "-"
            )
        label = "**all**" if family == "all" else family
        print(f"| {label} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(sys.argv[1:])
