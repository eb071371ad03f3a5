"""Plot the convergence of a run's q-values, as Hansen (2016) reports for Q-gradient descent.

Reads ``train/q_chosen`` (mean q-value of the greedy action) and ``train/q_mean/<i>`` /
``train/q_std/<i>`` (per action) from the run's TensorBoard event files. All are measured on
one fixed batch of replay observations, so the curves show the network settling, not the
states changing.

    python experiments/plot_q_convergence.py runs/default__0__20250101-120000
    python experiments/plot_q_convergence.py RUN_DIR --out experiments/results/q_convergence.png
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import numpy as np

from qlr.agents.figures import save_figure

CHOSEN_TAG = "train/q_chosen"
_ACTION_TAG = re.compile(r"^train/q_mean/(\d+)$")


def tensorboard_runs(run_dir: Path) -> list[Path]:
    """The SB3 TensorBoard run folders of a run (``tensorboard/DQN_1``, ...), oldest first."""
    runs = sorted(p for p in (run_dir / "tensorboard").glob("*_*") if p.is_dir())
    if not runs:
        raise FileNotFoundError(f"no TensorBoard runs under {run_dir / 'tensorboard'}")
    return runs


def read_scalars(run_dir: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """tag -> (steps, values) for the q-value tags, merged over the run's event files.

    A resumed run appends to its TensorBoard folder with a new event file; a step logged twice
    (before an interruption and again after resuming) keeps its latest value.
    """
    from tensorboard.backend.event_processing.event_accumulator import (
        SCALARS,
        EventAccumulator,
    )

    series: dict[str, dict[int, float]] = {}
    for folder in tensorboard_runs(run_dir):
        accumulator = EventAccumulator(str(folder), size_guidance={SCALARS: 0})  # 0: keep all
        accumulator.Reload()
        for tag in accumulator.Tags()["scalars"]:
            if tag == CHOSEN_TAG or tag.startswith(("train/q_mean/", "train/q_std/")):
                points = series.setdefault(tag, {})
                for event in accumulator.Scalars(tag):
                    points[event.step] = event.value
    if CHOSEN_TAG not in series:
        raise ValueError(f"{run_dir} has no {CHOSEN_TAG!r} scalars (was it trained by qlr train?)")
    return {
        tag: (np.array(sorted(points)), np.array([points[s] for s in sorted(points)]))
        for tag, points in series.items()
    }


def action_labels(run_dir: Path, n_actions: int) -> list[str]:
    """ "x0.5", "x1", "x2", ... from the run's config, else action indices."""
    try:
        from qlr.agents.learn.config import load_config
        from qlr.control import resolve_action_factors

        factors = resolve_action_factors(load_config(run_dir / "config.yaml").env["action_factors"])
        if len(factors) == n_actions:
            return [f"x{f:.3g}" for f in factors]
    except (OSError, ValueError, KeyError):
        pass
    return [f"action {i}" for i in range(n_actions)]


def plot(run_dir: Path, out: Path) -> Path:
    """Two panels: the greedy action's q-value, and every action's mean +- std."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scalars = read_scalars(run_dir)
    actions = sorted(int(m.group(1)) for tag in scalars if (m := _ACTION_TAG.match(tag)))
    labels = action_labels(run_dir, len(actions))
    fig, (ax_chosen, ax_actions) = plt.subplots(1, 2, figsize=(10, 3.8), layout="constrained")
    steps, values = scalars[CHOSEN_TAG]
    ax_chosen.plot(steps, values, color="black")
    ax_chosen.set(
        xlabel="transitions", ylabel="mean max_a Q(s, a)", title="q-value of the greedy action"
    )
    for i, label in zip(actions, labels, strict=True):
        steps, mean = scalars[f"train/q_mean/{i}"]
        line = ax_actions.plot(steps, mean, label=label)[0]
        if f"train/q_std/{i}" in scalars:
            _, std = scalars[f"train/q_std/{i}"]
            if len(std) == len(mean):
                ax_actions.fill_between(
                    steps, mean - std, mean + std, alpha=0.15, lw=0, color=line.get_color()
                )
    ax_actions.set(xlabel="transitions", ylabel="Q(s, a)", title="per action, mean +- std")
    ax_actions.legend(title="learning-rate factor")
    fig.suptitle(f"Q-value convergence on a fixed batch of replay states: {run_dir.name}")
    out.parent.mkdir(parents=True, exist_ok=True)
    save_figure(fig, out, dpi=120)
    plt.close(fig)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="a qlr train run directory")
    parser.add_argument(
        "--out", type=Path, default=None, help="PNG (default RUN_DIR/q_convergence.png)"
    )
    args = parser.parse_args()
    out = plot(args.run_dir, args.out or args.run_dir / "q_convergence.png")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
