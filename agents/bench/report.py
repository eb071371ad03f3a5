"""The outputs of ``qlr compare``: the Markdown summary, the CSV, plots and TensorBoard runs.

Every file is written whole or not at all (temporary file, then rename). Functions that need to
know more of a method than its name take the suite's `Method` objects from the caller.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from qlr._atomic import atomic_write_bytes
from qlr.agents.bench.suites import Suite
from qlr.agents.figures import save_figure

if TYPE_CHECKING:
    from qlr.agents.bench.methods import Method

CSV_COLUMNS = tuple(
    "suite budget problem family seed instance dim stochastic optimizer lr method role status "
    "error initial_loss final_loss oracle_loss log10_vs_oracle grad_evals func_evals total_evals "
    "examples grad_to_target total_to_target examples_to_target final_lr wall_time "
    "log10_vs_start extra_grad_evals".split()
)


def _fmt(value: float | None, spec: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, float) and math.isinf(value):
        return "not reached"
    return format(value, spec)


def format_summary(summary: dict[str, Any], suite: Suite, command: str, wall: float) -> str:
    """The summary as Markdown: one section per budget count, then failures and n/a."""
    unit = {"grad": "gradient evaluations", "grad+func": "gradient + function evaluations"}
    lines = [
        f"# qlr compare: {suite.name}",
        "",
        suite.description.strip(),
        "",
        f"Command: `{command}`  ",
        f"Seeds (held-out instances per problem): {suite.seeds}; optimizers: "
        f"{', '.join(suite.optimizers)}; initial rates: "
        f"{', '.join(f'{x:g}' for x in suite.initial_lrs)}; oracle grid: "
        f"{len(suite.oracle_grid)} rates in [{min(suite.oracle_grid):g}, "
        f"{max(suite.oracle_grid):g}]; total wall time {wall:.0f} s.",
        "",
        "Score: log10(final loss / oracle constant's final loss), median over runs; negative "
        "is better than the best constant rate in hindsight. Target: "
        f"{suite.target_factor:g} x the oracle's final loss; runs that never reach it count as "
        "infinitely slow in the median cost. Harm: the run ends above twice the final loss of "
        "the constant rate it started from (methods that start from a rate). Win rate: row "
        "method ends lower than column method on the same instance, optimizer and initial rate "
        "(ties count half). A reference line (the oracle constant, the lookahead teacher) is "
        "not a method anyone could run: the teacher tries every factor on copies of the run at "
        "every decision, and its look ahead costs the extra gradient evaluations shown, which "
        "are not charged to its budget.",
    ]
    for count in suite.counts():
        part = summary[count]
        budget = (
            f"{suite.examples} examples" if count == "examples" else f"{suite.evals} {unit[count]}"
        )
        cost = {"grad": "grad evals", "grad+func": "evals", "examples": "examples"}[count]
        lines += [
            "",
            f"## Budget: {budget}",
            "",
            f"| method | runs | median score | mean score | within 2x of oracle | harm | "
            f"reached target | median {cost} to target | diverged | failed | n/a | "
            "median wall (s) |",
            "|" + "---|" * 12,
        ]
        for name, s in part["methods"].items():
            extra = s.get("median_extra_grad_evals") or 0
            label = f"{name} (reference: +{extra:,.0f} lookahead grad evals)" if extra else name
            lines.append(
                f"| {label} | {s['runs']} | {_fmt(s['median_log10_vs_oracle'], '+.2f')} | "
                f"{_fmt(s.get('mean_log10_vs_oracle'), '+.2f')} | "
                f"{_fmt(s['within_2x_of_oracle'], '.0%')} | {_fmt(s.get('harmed'), '.0%')} | "
                f"{_fmt(s['reached_target'], '.0%')} | "
                f"{_fmt(s['median_cost_to_target'], '.0f')} | {s['diverged']} | {s['failed']} | "
                f"{s['not_applicable']} | {_fmt(s['median_wall_time'], '.3f')} |"
            )
        labels = [p.label for p in suite.problems]
        lines += [
            "",
            "Median score per problem:",
            "",
            "| method | " + " | ".join(labels) + " |",
            "|" + "---|" * (len(labels) + 1),
        ]
        for name, per in part["per_problem"].items():
            cells = " | ".join(_fmt(per[label], "+.2f") for label in labels)
            lines.append(f"| {name} | {cells} |")
        names = list(part["win_rates"])
        lines += [
            "",
            "Win rate (row beats column):",
            "",
            "| | " + " | ".join(names) + " |",
            "|" + "---|" * (len(names) + 1),
        ]
        for a in names:
            cells = ["·" if a == b else _fmt(part["win_rates"][a][b]["rate"], ".0%") for b in names]
            lines.append(f"| **{a}** | " + " | ".join(cells) + " |")
    for key, title in (("failures", "Failures"), ("not_applicable", "Not applicable")):
        lines += ["", f"## {title}", ""]
        if not summary[key]:
            lines.append("None.")
        for method, reasons in summary[key].items():
            for reason, n in reasons.items():
                lines.append(f"- {method}: {n} run{'s' if n != 1 else ''}: {reason}")
    return "\n".join(lines) + "\n"


def write_csv(rows: list[dict], path: Path) -> None:
    """One row per run, every column of `CSV_COLUMNS`."""
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if row.get(k) is None else row[k] for k in CSV_COLUMNS})
    atomic_write_bytes(path, buffer.getvalue().encode())


def example_runs(
    rows: list[dict], curves: list[dict | None], suite: Suite, methods: Sequence[Method]
) -> list[tuple[str, dict[str, tuple[dict, dict]]]]:
    """A few instances to draw: seed 0 of the first problems, first optimizer, middle rate.

    Args:
        rows: every run's rows.
        curves: the curve of each row's run (None where there is none).
        suite: the suite.
        methods: the suite's methods (their names pick the rows drawn).

    Returns:
        (title, {method: (row, curve)}) per instance, for the first budget count.
    """
    count = "grad+func" if "grad+func" in suite.counts() else suite.counts()[0]
    opt = suite.optimizers[0]
    lr = suite.initial_lrs[len(suite.initial_lrs) // 2]
    wanted = {m.name: m for m in methods}
    out = []
    for entry in suite.problems[: suite.plot_problems]:
        picked: dict[str, tuple[dict, dict]] = {}
        for row, curve in zip(rows, curves, strict=True):
            method = wanted.get(row["method"])
            if (
                method is None
                or curve is None
                or row["budget"] != count
                or row["problem"] != entry.label
                or row["seed"] != 0
                or row["role"] != "method"
            ):
                continue
            if method.uses_optimizer and row["optimizer"] != opt:
                continue
            if method.uses_lr and not math.isclose(row["lr"], lr, rel_tol=1e-9):
                continue
            picked[method.name] = (row, curve)
        if picked:
            out.append((f"{entry.label} (seed 0, {opt}, lr {lr:g})", picked))
    return out


def plot_examples(examples: list, suite: Suite, folder: Path) -> list[Path]:
    """Loss against evaluations and learning-rate trajectories for the example instances."""
    # matplotlib loads slowly: only when a figure is drawn.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    if not examples:
        return []
    x_unit = "examples" if "examples" in suite.counts() else "total"
    x_label = "examples processed" if x_unit == "examples" else "gradient + function evaluations"
    # ten distinct colours, then the same colours dashed: tab20's pairs are too alike
    styles = {
        m: {"color": plt.cm.tab10(i % 10), "ls": ("-", "--", ":")[i // 10 % 3]}
        for i, m in enumerate(suite.methods)
    }
    paths = []
    for name, what in (("loss_vs_evals.png", "loss"), ("lr_trajectories.png", "lr")):
        cols = min(2, len(examples))
        rows_n = math.ceil(len(examples) / cols)
        fig, axes = plt.subplots(rows_n, cols, figsize=(6.5 * cols, 4.2 * rows_n), squeeze=False)
        for ax, (title, picked) in zip(axes.flat, examples, strict=False):
            for method, (_, curve) in picked.items():
                y = curve[what]
                x = curve[x_unit] if what == "loss" else np.arange(1, len(y) + 1)
                ok = np.isfinite(y) & (y > 0)
                if ok.any():
                    ax.plot(x[ok], y[ok], label=method, lw=1.2, **styles[method])
            if what == "loss":
                oracle = next((r.get("oracle_loss") for r, _ in picked.values()), None)
                if oracle and math.isfinite(oracle) and oracle > 0:
                    ax.axhline(oracle, color="k", ls="--", lw=0.8, label="oracle constant")
                start = max(r["initial_loss"] for r, _ in picked.values())
                low = min(
                    [
                        float(c["loss"][c["loss"] > 0].min())
                        for _, c in picked.values()
                        if (c["loss"] > 0).any()
                    ]
                    + [oracle or math.inf, start]
                )
                if math.isfinite(start) and start > 0:  # divergences leave the plot at the top
                    ax.set_ylim(max(low, 1e-300) / 2, 100 * start)
            ax.set_yscale("log")
            ax.set_title(title, fontsize=9)
            ax.set_xlabel(x_label if what == "loss" else "step")
            ax.set_ylabel("loss" if what == "loss" else "learning rate (used)")
        for ax in list(axes.flat)[len(examples) :]:
            ax.axis("off")
        handles, labels = axes.flat[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="center right", fontsize=8)
        fig.tight_layout(rect=(0, 0, 0.85, 1))
        path = folder / name
        save_figure(fig, path)
        plt.close(fig)
        paths.append(path)
    return paths


def plot_scores(rows: list[dict], suite: Suite, folder: Path) -> Path:
    """Box plot of scores per method, one panel per budget count."""
    import matplotlib  # only when a figure is drawn, as above

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = suite.counts()
    fig, axes = plt.subplots(
        1, len(counts), figsize=(1 + 0.55 * len(suite.methods) * len(counts), 4.5), squeeze=False
    )
    for ax, count in zip(axes.flat, counts, strict=True):
        data, names = [], []
        for m in suite.methods:
            values = [
                r["log10_vs_oracle"]
                for r in rows
                if r["method"] == m
                and r["budget"] == count
                and r["role"] == "method"
                and r.get("log10_vs_oracle") is not None
            ]
            if values:
                data.append(values)
                names.append(m)
        if data:
            ax.boxplot(data, showfliers=False)
            ax.set_xticks(range(1, len(names) + 1), names, rotation=60, ha="right", fontsize=8)
        ax.axhline(0, color="k", lw=0.8, ls="--")
        ax.set_ylabel("log10(final / oracle constant)")
        ax.set_title(f"{suite.name}: budget {count}", fontsize=9)
    fig.tight_layout()
    path = folder / "scores.png"
    save_figure(fig, path)
    plt.close(fig)
    return path


def write_tensorboard(
    summary: dict, examples: list, suite: Suite, folder: Path, methods: Sequence[Method]
) -> None:
    """One TensorBoard run per method of `methods` (the suite's): summary scalars and the
    example curves."""
    # tensorboard's writer loads slowly (and pulls in tensorboard): only when runs are written.
    from torch.utils.tensorboard import SummaryWriter

    x_unit = "examples" if "examples" in suite.counts() else "total"
    for method in methods:
        name = method.name
        writer = SummaryWriter(str(folder / _safe(name)))
        try:
            writer.add_text("method", f"{name}: {method.description}")
            for count in suite.counts():
                scores = summary[count]["methods"][name]
                for key in (
                    "median_log10_vs_oracle",
                    "within_2x_of_oracle",
                    "reached_target",
                    "diverged",
                    "failed",
                ):
                    value = scores[key]
                    if value is not None and math.isfinite(value):
                        writer.add_scalar(f"summary/{count}/{key}", value, 0)
            for title, picked in examples:
                if name not in picked:
                    continue
                _, curve = picked[name]
                tag = _safe(title.split(" (")[0])
                for i, (x, loss) in enumerate(zip(curve[x_unit], curve["loss"], strict=True)):
                    if math.isfinite(loss):
                        writer.add_scalar(f"curves/{tag}/loss", loss, int(x))
                    if i < len(curve["lr"]) and math.isfinite(curve["lr"][i]):
                        writer.add_scalar(f"curves/{tag}/lr", curve["lr"][i], i)
        finally:
            writer.close()


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", name).strip("_") or "method"
