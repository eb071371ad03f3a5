"""``qlr demo``: train a small network on bundled data with and without the learned controller.

An MLP learns scikit-learn's handwritten digits (bundled with the package, no download) under
one budget of optimizer steps, four ways per optimizer: the usual constant learning rate, a
cosine schedule from the same start, `QLRScheduler` with the shipped default policy, and the same
told the run's budget (``total_steps``, the ``qlr+budget`` rows). The
demo prints a table, writes TensorBoard logs and saves a figure of loss curves and learning
rates side by side. With ``--results DIR`` it also records the table (``demo.md``), its numbers
(``demo.json``) and the figure (``demo.png``) in DIR, as ``experiments/demo_table.sh`` does for
``experiments/results/demo/``.
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path

from qlr._atomic import atomic_write_bytes
from qlr.agents.figures import save_figure

METHODS = ("constant", "cosine", "qlr", "qlr+budget")
# What a user typically starts with: torch's examples use 0.01 for SGD, Adam's paper 1e-3.
DEFAULT_RATES = {"sgd": 0.01, "adam": 1e-3}


@dataclass
class DemoRun:
    optimizer: str
    method: str
    steps: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)  # full training loss per epoch
    lrs: list[float] = field(default_factory=list)  # learning rate per step
    test_accuracy: float = 0.0
    wall_time: float = 0.0


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--epochs", type=int, default=40, help="passes over the training set")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--optimizers", nargs="+", default=list(DEFAULT_RATES))
    parser.add_argument("--policy", default="default", help="policy file for the qlr runs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("runs/demo"))
    parser.add_argument(
        "--results",
        type=Path,
        default=None,
        metavar="DIR",
        help="also write the table (demo.md), its numbers (demo.json) and the figure here",
    )


def run(args: argparse.Namespace) -> int:
    import torch
    from tqdm import tqdm

    torch.set_num_threads(1)
    unknown = [o for o in args.optimizers if o not in DEFAULT_RATES]
    if unknown:
        choices = list(DEFAULT_RATES)
        raise SystemExit(f"qlr demo: unknown optimizers {unknown}; choose from {choices}")
    data = _digits()
    steps_per_epoch = len(data[0]) // args.batch_size
    total = len(args.optimizers) * len(METHODS) * args.epochs * steps_per_epoch
    results = []
    with tqdm(total=total, desc="qlr demo", unit="step") as bar:
        for optimizer in args.optimizers:
            for method in METHODS:
                results.append(_train(data, optimizer, method, args, bar))
    print()
    print(_table(results, args))
    figure = _plot(results, args.out / "demo.png")
    print(f"\nTensorBoard logs: {args.out / 'tensorboard'}")
    print(f"  open them with:  tensorboard --logdir {args.out}")
    print(f"Figure:           {figure}")
    if args.results is not None:
        files = write_results(results, args, args.results)
        print(f"Results:          {', '.join(str(f) for f in files)}")
    return 0


def command_line(args: argparse.Namespace) -> str:
    """The ``qlr demo`` command that reproduces these runs (outputs aside)."""
    parts = ["qlr", "demo", "--epochs", str(args.epochs), "--batch-size", str(args.batch_size)]
    parts += ["--optimizers", *args.optimizers, "--policy", str(args.policy)]
    parts += ["--seed", str(args.seed)]
    return " ".join(shlex.quote(p) for p in parts)


def write_results(results: list[DemoRun], args: argparse.Namespace, folder: Path) -> list[Path]:
    """Write the table as Markdown, its numbers as JSON and the figure into `folder`.

    The JSON holds, per run, what the table shows and the curves behind it: the training loss
    after every epoch and the rate the last step of every epoch used.
    """
    import torch

    command = command_line(args)
    runs = []
    for r in results:
        per_epoch = len(r.lrs) // max(1, len(r.steps))
        runs.append(
            {
                "optimizer": r.optimizer,
                "schedule": r.method,
                "start_lr": r.lrs[0],
                "final_lr": r.lrs[-1],
                "min_lr": min(r.lrs),
                "max_lr": max(r.lrs),
                "final_train_loss": r.train_loss[-1],
                "test_accuracy": r.test_accuracy,
                "wall_time": r.wall_time,
                "steps": r.steps,
                "train_loss": r.train_loss,
                "lr_per_epoch": [r.lrs[(i + 1) * per_epoch - 1] for i in range(len(r.steps))],
            }
        )
    record = {
        "command": command,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "policy": str(args.policy),
        "seed": args.seed,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "runs": runs,
    }
    markdown = "\n".join(
        [
            f"`{command}`: an MLP 64-64-10 on scikit-learn's digits, {args.epochs} epochs, "
            f"batch {args.batch_size}; the training loss is the full training set's after the "
            "last epoch, the accuracy the held-out test set's.",
            "",
            "| optimizer | schedule | start lr | final lr | train loss | test acc | time (s) |",
            "|---|---|---|---|---|---|---|",
            *(
                f"| {r.optimizer} | {r.method} | {r.lrs[0]:.3g} | {r.lrs[-1]:.3g} | "
                f"{r.train_loss[-1]:.4f} | {r.test_accuracy:.1%} | {r.wall_time:.1f} |"
                for r in results
            ),
            "",
        ]
    )
    files = [folder / "demo.md", folder / "demo.json", folder / "demo.png"]
    atomic_write_bytes(files[0], markdown.encode())
    atomic_write_bytes(files[1], json.dumps(record, indent=1).encode())
    _plot(results, files[2])
    return files


def _digits():
    import torch

    from qlr.envs.problems import load_digits_split

    x_train, y_train, x_test, y_test = load_digits_split()
    return (
        torch.as_tensor(x_train, dtype=torch.float32),
        torch.as_tensor(y_train, dtype=torch.long),
        torch.as_tensor(x_test, dtype=torch.float32),
        torch.as_tensor(y_test, dtype=torch.long),
    )


def _train(data, optimizer_name: str, method: str, args, bar) -> DemoRun:
    import torch
    from torch.utils.tensorboard import SummaryWriter

    from qlr import QLRScheduler

    x_train, y_train, x_test, y_test = data
    torch.manual_seed(args.seed)
    model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
    lr = DEFAULT_RATES[optimizer_name]
    if optimizer_name == "sgd":
        optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    else:
        optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    steps_per_epoch = len(x_train) // args.batch_size
    total_steps = args.epochs * steps_per_epoch
    tag = method.replace("+", "_")
    writer = SummaryWriter(args.out / "tensorboard" / f"{optimizer_name}_{tag}")
    scheduler = None
    if method == "cosine":
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
    elif method.startswith("qlr"):
        told = total_steps if method == "qlr+budget" else None
        scheduler = QLRScheduler(optimizer, policy=args.policy, writer=writer, total_steps=told)
    result = DemoRun(optimizer_name, method)
    generator = torch.Generator().manual_seed(args.seed)
    began = time.perf_counter()
    step = 0
    for _ in range(args.epochs):
        order = torch.randperm(len(x_train), generator=generator)
        for b in range(steps_per_epoch):
            idx = order[b * args.batch_size : (b + 1) * args.batch_size]
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x_train[idx]), y_train[idx])
            loss.backward()
            result.lrs.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            if method.startswith("qlr"):
                scheduler.step(loss)
            elif scheduler is not None:
                scheduler.step()
            step += 1
            writer.add_scalar("train/minibatch_loss", loss.item(), step)
            writer.add_scalar("train/lr", result.lrs[-1], step)
        bar.update(steps_per_epoch)
        with torch.no_grad():
            full = torch.nn.functional.cross_entropy(model(x_train), y_train).item()
        result.steps.append(step)
        result.train_loss.append(full)
        writer.add_scalar("train/loss", full, step)
    result.wall_time = time.perf_counter() - began
    with torch.no_grad():
        result.test_accuracy = (model(x_test).argmax(1) == y_test).float().mean().item()
    writer.add_scalar("test/accuracy", result.test_accuracy, step)
    writer.close()
    return result


def _table(results: list[DemoRun], args) -> str:
    lines = [
        f"MLP 64-64-10 on the digits data set, {args.epochs} epochs, batch {args.batch_size}",
        "",
        f"{'optimizer':<10}{'schedule':<12}{'start lr':>10}{'final lr':>11}"
        f"{'train loss':>12}{'test acc':>10}{'time (s)':>10}",
    ]
    for r in results:
        lines.append(
            f"{r.optimizer:<10}{r.method:<12}{r.lrs[0]:>10.3g}{r.lrs[-1]:>11.3g}"
            f"{r.train_loss[-1]:>12.4f}{r.test_accuracy:>10.1%}{r.wall_time:>10.1f}"
        )
    return "\n".join(lines)


def _plot(results: list[DemoRun], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_lr) = plt.subplots(1, 2, figsize=(11, 4))
    styles = {"constant": ":", "cosine": "--", "qlr": "-", "qlr+budget": "-."}
    colors = {"sgd": "tab:blue", "adam": "tab:orange"}
    for r in results:
        label = f"{r.optimizer} {r.method}"
        style = dict(linestyle=styles[r.method], color=colors.get(r.optimizer))
        ax_loss.plot(r.steps, r.train_loss, label=label, **style)
        ax_lr.plot(range(1, len(r.lrs) + 1), r.lrs, label=label, **style)
    ax_loss.set(yscale="log", xlabel="optimizer step", ylabel="training loss (full set)")
    ax_lr.set(yscale="log", xlabel="optimizer step", ylabel="learning rate")
    ax_loss.set_title("Loss")
    ax_lr.set_title("Learning rate")
    ax_loss.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    save_figure(fig, path)
    plt.close(fig)
    return path
