"""qlr in a Hugging Face ``Trainer``: a small GPT-2 trained from scratch from a low and a good rate.

A GPT-2-style causal language model (2 layers, width 64, 4 heads, context 32, vocabulary 64),
built from a ``GPT2Config`` with random weights, learns sequences of 32 tokens drawn from a fixed
random second-order Markov chain: each token allows 4 successors, and which of them is likely
depends on the token before it (Dirichlet weights per pair of tokens). 2,000 training sequences
and 500 held-out ones come from the same chain; the chain's own loss on the held-out set is the
floor no model can beat.

Each run is ``Trainer`` with AdamW (``optim="adamw_torch"``, weight decay 0.01, the Trainer's
gradient clipping at norm 1), batch 16, ``max_steps`` optimizer steps, in three arms from the same
start:

* ``constant``: ``lr_scheduler_type="constant"``, the rate the user gave, throughout;
* ``qlr``: the same constant schedule plus `QLRTrainerCallback` (the policy sets the rate alone;
  the callback hands the Trainer's step budget to the scheduler);
* ``cosine``: ``lr_scheduler_type="cosine"`` from the same start to 0, no warmup (a reference).

Two starts: a good one (the best constant rate of a grid, run first for one seed and reported
with the results) and a low one (a tenth of it). Every run ends with ``trainer.evaluate()`` on
the held-out set. Outputs, in ``--out``: ``results.json`` (every run, the grid, the settings)
and ``results.md`` (the table and the claim read plainly), also printed.

    python experiments/hf_transformer.py         # the table on docs/results/default.md
    python experiments/hf_transformer.py --steps 100 --seeds 0 --grid --out /tmp/hf
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from qlr._atomic import atomic_write_bytes
from qlr.policy import Policy

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "experiments" / "results" / "hf_transformer"
ARMS = ("constant", "qlr", "cosine")
# 3e-2 closes the grid above its best rate, 1e-2 (results.md has the numbers).
GRID = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2)
STARTS = (1e-3, 1e-2)  # low (a tenth of the good one), good (the grid's best)
TAIL = 20  # the final training loss is the mean over this many last steps


@dataclass(frozen=True)
class Setup:
    """The task and the training settings shared by every run.

    Attributes:
        vocab: vocabulary size (also the chain's number of states).
        seq_len: tokens per sequence, the model's context.
        successors: tokens allowed after each token.
        concentration: Dirichlet concentration of the successor weights (lower: more peaked).
        n_train: training sequences.
        n_heldout: held-out sequences.
        data_seed: fixes the chain and both sets.
        n_layer: transformer blocks.
        n_embd: width.
        n_head: attention heads.
        batch: training batch (per device, one device).
        eval_batch: evaluation batch.
        weight_decay: AdamW's decoupled weight decay.
    """

    vocab: int = 64
    seq_len: int = 32
    successors: int = 4
    concentration: float = 0.5
    n_train: int = 2000
    n_heldout: int = 500
    data_seed: int = 20250
    n_layer: int = 2
    n_embd: int = 64
    n_head: int = 4
    batch: int = 16
    eval_batch: int = 64
    weight_decay: float = 0.01


# ----------------------------------------------------------------------------------- data
@dataclass
class Data:
    """Training and held-out token sequences from one chain, and the chain's held-out loss."""

    train: np.ndarray  # (n_train, seq_len) int64
    heldout: np.ndarray  # (n_heldout, seq_len) int64
    floor: float  # mean loss of the true chain on the held-out set, scored as the model is


def make_data(setup: Setup) -> Data:
    """Draws the chain and both sets from ``setup.data_seed``.

    Args:
        setup: sizes and the data seed.

    Returns:
        The two sets and the chain's own held-out loss (the floor).
    """
    rng = np.random.default_rng(setup.data_seed)
    v, k = setup.vocab, setup.successors
    allowed = np.stack([rng.choice(v, size=k, replace=False) for _ in range(v)])  # b -> next
    weights = rng.dirichlet(np.full(k, setup.concentration), size=(v, v))  # (a, b) -> over k
    train = _sample(allowed, weights, setup.n_train, setup.seq_len, rng)
    heldout = _sample(allowed, weights, setup.n_heldout, setup.seq_len, rng)
    return Data(train=train, heldout=heldout, floor=_chain_loss(allowed, weights, heldout))


def _sample(
    allowed: np.ndarray, weights: np.ndarray, n: int, length: int, rng: np.random.Generator
) -> np.ndarray:
    v, k = allowed.shape
    seqs = np.empty((n, length), dtype=np.int64)
    seqs[:, 0] = rng.integers(v, size=n)
    # The second token has one predecessor only: any allowed successor, uniformly.
    seqs[:, 1] = allowed[seqs[:, 0], rng.integers(k, size=n)]
    for t in range(2, length):
        cdf = np.cumsum(weights[seqs[:, t - 2], seqs[:, t - 1]], axis=1)
        index = (rng.random((n, 1)) > cdf).sum(axis=1).clip(max=k - 1)
        seqs[:, t] = allowed[seqs[:, t - 1], index]
    return seqs


def _chain_loss(allowed: np.ndarray, weights: np.ndarray, seqs: np.ndarray) -> float:
    """Mean negative log-likelihood of tokens 1..L-1 under the chain (a causal LM's loss)."""
    k = allowed.shape[1]
    nll = [np.full(len(seqs), math.log(k))]
    for t in range(2, seqs.shape[1]):
        index = (allowed[seqs[:, t - 1]] == seqs[:, t : t + 1]).argmax(axis=1)
        nll.append(-np.log(weights[seqs[:, t - 2], seqs[:, t - 1], index]))
    return float(np.mean(nll))


def _as_dataset(seqs: np.ndarray) -> list[dict[str, torch.Tensor]]:
    # GPT2LMHeadModel shifts the labels itself: labels are the inputs.
    return [{"input_ids": row, "labels": row} for row in torch.from_numpy(seqs)]


# ----------------------------------------------------------------------------------- runs
def _recorder_class() -> type:
    from transformers import TrainerCallback

    class StepRecorder(TrainerCallback):
        """Keeps every optimizer step's training loss and the rate the next step will use."""

        def __init__(self) -> None:
            self.losses: list[float] = []
            self.lrs: list[float] = []
            self._pending: list[torch.Tensor] = []
            self._hook: Any = None

        def on_train_begin(self, args, state, control, model=None, **kwargs):
            self._hook = model.register_forward_hook(self._keep, with_kwargs=True)

        def _keep(self, module, args, kwargs, output):
            # Evaluation passes run without grad; only training losses count.
            if module.training and torch.is_grad_enabled() and output.loss is not None:
                self._pending.append(output.loss.detach())

        def on_step_end(self, args, state, control, optimizer=None, **kwargs):
            # One micro-batch per step (no accumulation): the step's loss is its forward's.
            self.losses.append(float(torch.stack(self._pending).mean()))
            self._pending = []
            # After the Trainer's scheduler has stepped: the rate of the next step.
            self.lrs.append(float(optimizer.param_groups[0]["lr"]))

        def on_train_end(self, args, state, control, **kwargs):
            self._hook.remove()

    return StepRecorder


class DecisionLog:
    """A ``writer`` for `QLRScheduler`: keeps the rate and the action of every decision."""

    def __init__(self) -> None:
        self.decisions: list[dict[str, float]] = []

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        """Records ``qlr/lr`` and ``qlr/action``; the other tags are not needed here."""
        if tag == "qlr/lr":
            self.decisions.append({"step": int(step), "lr": float(value)})
        elif tag == "qlr/action" and self.decisions and self.decisions[-1]["step"] == step:
            self.decisions[-1]["action"] = int(value)


def train_run(
    data: Data,
    setup: Setup,
    arm: str,
    start: float,
    seed: int,
    steps: int,
    policy: str | Path | Policy = "default",
) -> dict[str, Any]:
    """Trains one model from scratch in one arm and scores it on the held-out set.

    Args:
        data: the token sequences.
        setup: model and training settings.
        arm: ``"constant"``, ``"qlr"`` or ``"cosine"``.
        start: the learning rate the run starts from.
        seed: the training seed (weights, batch order).
        steps: optimizer steps (``max_steps``).
        policy: the qlr policy, for the ``qlr`` arm: ``"default"``, a policy file or a `Policy`.

    Returns:
        One record: held-out loss, final training loss, final rate, wall time, the per-step
        losses and rates and, for ``qlr``, its decisions and the budget the scheduler received.
    """
    from transformers import (
        GPT2Config,
        GPT2LMHeadModel,
        PrinterCallback,
        Trainer,
        TrainingArguments,
        set_seed,
    )

    from qlr.integrations.huggingface import QLRTrainerCallback

    if arm not in ARMS:
        raise ValueError(f"unknown arm {arm!r}; expected one of {ARMS}")
    set_seed(seed)  # the weights below are drawn from this seed
    config = GPT2Config(
        vocab_size=setup.vocab,
        n_positions=setup.seq_len,
        n_embd=setup.n_embd,
        n_layer=setup.n_layer,
        n_head=setup.n_head,
        bos_token_id=0,
        eos_token_id=0,
    )
    model = GPT2LMHeadModel(config)
    recorder = _recorder_class()()
    callbacks = [recorder]
    log = DecisionLog()
    qlr_callback = None
    if arm == "qlr":
        qlr_callback = QLRTrainerCallback(policy=policy, writer=log)
        callbacks.append(qlr_callback)
    with tempfile.TemporaryDirectory(prefix="hf_transformer_") as out:
        args = TrainingArguments(
            output_dir=out,
            per_device_train_batch_size=setup.batch,
            per_device_eval_batch_size=setup.eval_batch,
            max_steps=steps,
            learning_rate=start,
            lr_scheduler_type="cosine" if arm == "cosine" else "constant",
            warmup_steps=0,
            optim="adamw_torch",
            weight_decay=setup.weight_decay,
            use_cpu=True,
            report_to=[],
            save_strategy="no",
            eval_strategy="no",
            logging_strategy="no",
            disable_tqdm=True,
            seed=seed,
            data_seed=seed,
        )
        trainer = Trainer(
            model=model,
            args=args,
            train_dataset=_as_dataset(data.train),
            eval_dataset=_as_dataset(data.heldout),
            callbacks=callbacks,
        )
        trainer.remove_callback(PrinterCallback)  # it would print every metrics dict
        began = time.perf_counter()
        trainer.train()
        train_seconds = time.perf_counter() - began
        heldout = trainer.evaluate()["eval_loss"]
        seconds = time.perf_counter() - began
    record: dict[str, Any] = {
        "arm": arm,
        "start": start,
        "seed": seed,
        "steps": steps,
        "heldout_loss": float(heldout),
        "final_train_loss": statistics.fmean(recorder.losses[-TAIL:]),
        "final_lr": float(trainer.optimizer.param_groups[0]["lr"]),
        "seconds": seconds,
        "train_seconds": train_seconds,
        "trainer_max_steps": int(trainer.state.max_steps),
        "train_losses": recorder.losses,
        "lrs": recorder.lrs,
    }
    if qlr_callback is not None:
        scheduler = qlr_callback.scheduler
        record.update(
            policy=str(policy),
            scheduler_steps=scheduler.steps,
            scheduler_total_steps=scheduler.controller.total_steps,
            decisions=log.decisions,
            spike_cuts=scheduler.spike_cuts,
        )
    return record


# ----------------------------------------------------------------------------------- report
def _median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def summarise(runs: list[dict[str, Any]], starts: Sequence[float]) -> list[dict[str, Any]]:
    """One row per (start, arm): held-out losses per seed and their median, and the claim.

    Args:
        runs: records from `train_run`.
        starts: the starts, in the order of the table.

    Returns:
        Rows with ``start``, ``arm``, ``seeds``, ``heldout`` (per seed), ``heldout_median``,
        ``train_median``, ``final_lr_median`` and, for ``qlr``, ``at_or_below_constant`` (seeds
        where qlr's held-out loss is at or below the constant's for the same seed).
    """
    rows = []
    for start in starts:
        by_arm = {}
        for arm in ARMS:
            mine = [r for r in runs if r["start"] == start and r["arm"] == arm]
            mine.sort(key=lambda r: r["seed"])
            if mine:
                by_arm[arm] = {r["seed"]: r for r in mine}
        for arm, per_seed in by_arm.items():
            row = {
                "start": start,
                "arm": arm,
                "seeds": list(per_seed),
                "heldout": [r["heldout_loss"] for r in per_seed.values()],
                "heldout_median": _median([r["heldout_loss"] for r in per_seed.values()]),
                "train_median": _median([r["final_train_loss"] for r in per_seed.values()]),
                "final_lr_median": _median([r["final_lr"] for r in per_seed.values()]),
            }
            if arm == "qlr" and "constant" in by_arm:
                shared = [s for s in per_seed if s in by_arm["constant"]]
                row["at_or_below_constant"] = sum(
                    per_seed[s]["heldout_loss"] <= by_arm["constant"][s]["heldout_loss"]
                    for s in shared
                )
                row["paired_seeds"] = len(shared)
            rows.append(row)
    return rows


def render(report: dict[str, Any]) -> str:
    """The Markdown report: settings, the grid, the table and the claim for each start."""
    setup, rows = report["setup"], report["rows"]
    seeds = report["seeds"]
    lines = [
        "# qlr in a Hugging Face Trainer: a small GPT-2 from scratch",
        "",
        f"GPT-2 ({setup['n_layer']} layers, width {setup['n_embd']}, {setup['n_head']} heads, "
        f"context {setup['seq_len']}, vocabulary {setup['vocab']}) on a random second-order "
        f"Markov chain ({setup['successors']} successors per token, data seed "
        f"{setup['data_seed']}): {setup['n_train']} training and {setup['n_heldout']} held-out "
        f"sequences. AdamW (weight decay {setup['weight_decay']}), batch {setup['batch']}, "
        f"{report['steps']} steps, training seeds {', '.join(map(str, seeds))}, policy "
        f"`{report['policy']}`. Held-out loss by `trainer.evaluate()` (nats per token; "
        f"uniform guessing {math.log(setup['vocab']):.3f}, the chain itself "
        f"{report['floor']:.3f}). Final training loss: mean of the last {TAIL} steps.",
        "",
    ]
    if report.get("grid"):
        best = min(report["grid"], key=lambda g: g["heldout_loss"])
        lines += [
            f"Choosing the good start: the constant rate over a grid, seed {report['grid_seed']}"
            " (held-out loss):",
            "",
            "| rate | " + " | ".join(f"{g['start']:g}" for g in report["grid"]) + " |",
            "|---|" + "---|" * len(report["grid"]),
            "| held-out loss | "
            + " | ".join(f"{g['heldout_loss']:.4f}" for g in report["grid"])
            + " |",
            "",
            f"Best: {best['start']:g}. Starts used: "
            + ", ".join(f"{s:g}" for s in report["starts"])
            + ".",
            "",
        ]
    lines += [
        "| start | arm | held-out loss per seed | median | final train loss (median) "
        "| final rate (median) |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        per_seed = " / ".join(f"{x:.4f}" for x in row["heldout"])
        lines.append(
            f"| {row['start']:g} | {row['arm']} | {per_seed} | {row['heldout_median']:.4f} | "
            f"{row['train_median']:.4f} | {row['final_lr_median']:.3g} |"
        )
    lines.append("")
    for start in report["starts"]:
        mine = {r["arm"]: r for r in rows if r["start"] == start}
        if "qlr" not in mine or "constant" not in mine:
            continue
        q, c = mine["qlr"], mine["constant"]
        verdict = "at or below" if q["heldout_median"] <= c["heldout_median"] else "above"
        lines.append(
            f"- Start {start:g}: qlr's median held-out loss {q['heldout_median']:.4f} is "
            f"{verdict} the constant rate's {c['heldout_median']:.4f} "
            f"({q['heldout_median'] - c['heldout_median']:+.4f}); qlr is at or below the "
            f"constant on {q['at_or_below_constant']} of {q['paired_seeds']} seeds."
        )
    times = [r["seconds"] for r in report["runs"]]
    lines += [
        "",
        f"Wall time per run (one CPU thread, training and evaluation): median "
        f"{_median(times):.1f} s, max {max(times):.1f} s; {report['seconds'] / 60:.1f} min in "
        "all, grid included.",
        "",
    ]
    return "\n".join(lines)


def run(
    out: Path,
    steps: int = 400,
    seeds: Sequence[int] = (0, 1, 2),
    starts: Sequence[float] = STARTS,
    arms: Sequence[str] = ARMS,
    grid: Sequence[float] = GRID,
    policy: str | Path | Policy = "default",
    setup: Setup | None = None,
    verbose: bool = True,
) -> dict[str, Any]:
    """Runs the grid (constant rate, first seed), then every (start, arm, seed); writes reports.

    Args:
        out: folder for ``results.json`` and ``results.md`` (created when missing).
        steps: optimizer steps per run.
        seeds: training seeds.
        starts: starting rates (low, good).
        arms: which of `ARMS` to run.
        grid: constant rates to run for the first seed before the rest; empty to skip.
        policy: the qlr policy (``"default"``, a policy file or a `Policy`).
        setup: task and training settings; `Setup()` when None.
        verbose: print one line per run and the table.

    Returns:
        The report written to ``results.json``.
    """
    setup = setup or Setup()
    began = time.perf_counter()
    data = make_data(setup)

    def one(arm: str, start: float, seed: int) -> dict[str, Any]:
        record = train_run(data, setup, arm, start, seed, steps, policy)
        if verbose:
            print(
                f"{arm:>8} start {start:<8g} seed {seed}: held-out {record['heldout_loss']:.4f}"
                f"  train {record['final_train_loss']:.4f}  final lr {record['final_lr']:.3g}"
                f"  {record['seconds']:.1f} s",
                flush=True,
            )
        return record

    grid_runs = [one("constant", lr, seeds[0]) for lr in grid]
    runs = []
    for start in starts:
        for arm in arms:
            for seed in seeds:
                # The grid already ran this one: same arm, start and seed give the same run.
                done = [
                    g for g in grid_runs if math.isclose(g["start"], start) and g["seed"] == seed
                ]
                if arm == "constant" and done:
                    runs.append({**done[0], "start": start})
                else:
                    runs.append(one(arm, start, seed))
    report = {
        "setup": asdict(setup),
        "steps": steps,
        "seeds": list(seeds),
        "starts": list(starts),
        "arms": list(arms),
        "policy": str(policy),
        "floor": data.floor,
        "grid_seed": seeds[0],
        "grid": [
            {k: g[k] for k in ("start", "heldout_loss", "final_train_loss", "seconds")}
            for g in grid_runs
        ],
        "rows": summarise(runs, starts),
        "runs": runs,
        "seconds": time.perf_counter() - began,
    }
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / "results.json", json.dumps(report, indent=1).encode())
    text = render(report)
    atomic_write_bytes(out / "results.md", text.encode())
    if verbose:
        print(text)
    return report


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=400, help="optimizer steps per run")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--starts", type=float, nargs="+", default=list(STARTS), help="starting rates"
    )
    parser.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS))
    parser.add_argument(
        "--grid",
        type=float,
        nargs="*",
        default=list(GRID),
        help="constant rates tried first with the first seed (none: skip)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--policy", default="default", help='"default" or a policy file')
    options = parser.parse_args(argv)
    from transformers.utils import logging as hf_logging

    # GPT2Config's unset loss_type draws a notice per model; the runs' lines are the output.
    hf_logging.set_verbosity_error()
    # Small models gain nothing from intra-op threads, and the runs are timed on one.
    torch.set_num_threads(1)
    run(
        options.out,
        steps=options.steps,
        seeds=options.seeds,
        starts=options.starts,
        arms=options.arms,
        grid=options.grid,
        policy=options.policy,
    )


if __name__ == "__main__":
    main()
