"""qlr on a character-level language model trained on real text with AdamW, from three starts.

A small causal transformer (``TransformerLM`` of the char_lm_text family: 2 pre-LN layers,
width 64, 4 heads, MLP ratio 4, tied embeddings, context 64) learns the next character of
Python standard-library source (`stdlib_text`: docstrings and comments mixed with code, 97
character ids, nothing downloaded). The text is split by position: the first 90 % is trained
on, the last 10 % is held out, cut into consecutive windows that score every held-out
character once, so the held-out loss is on text the model never saw. The split and the
held-out windows are fixed; the training seed sets the weights and the batch order (random
windows of the training part), the same in every arm.

Each run is AdamW as language models are trained (betas 0.9 and 0.95, decoupled weight decay
0.1 on the weight matrices and embeddings, none on biases and LayerNorms, gradients clipped at
norm 1), batch 32, ``--steps`` steps, in four arms:

* ``constant``: the starting rate throughout;
* ``warmup_cosine``: linear warmup from 0 over the first 5 % of steps, then cosine decay to
  10 % of the start at the last step (``LambdaLR``);
* ``qlr``: `QLRScheduler` with ``--policy`` and ``total_steps``, stepped with each step's loss;
* ``prodigy``: ``prodigyopt.Prodigy`` (lr 1, the same betas, weight decay and clipping,
  ``safeguard_warmup`` and ``use_bias_correction``), which estimates its own rate: it ignores
  the start, so it runs once per seed and its row repeats under every start.

Starts 1e-4, 3e-4 and 1e-3. Every run ends with the held-out loss (mean cross-entropy, nats
per character, under ``torch.no_grad`` in eval mode). The claim read per start: qlr's median
held-out loss is at or below the constant rate's and warmup-cosine's, and at most 1 % above
Prodigy's. Outputs, in ``--out``: ``results.json`` (every run, the settings, the command) and
``results.md`` (the tables and the verdicts), also printed.

    python experiments/lm_text.py  # 30 runs of about 22 s: about 6 minutes on 2 cores
    python experiments/lm_text.py --steps 40 --seeds 0 --starts 1e-3 --out /tmp/lm
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import multiprocessing
import shlex
import statistics
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from qlr._atomic import atomic_write_bytes
from qlr.envs.problems.datasets import CHAR_VOCAB, stdlib_text
from qlr.envs.problems.modules import TransformerLM
from qlr.policy import Policy
from qlr.scheduler import QLRScheduler

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "experiments" / "results" / "lm_text"
ARMS = ("constant", "warmup_cosine", "qlr", "prodigy")
STARTED = ("constant", "warmup_cosine", "qlr")  # the arms that start from the given rate
STARTS = (1e-4, 3e-4, 1e-3)
STEPS = 500
TAIL = 20  # the final training loss is the mean over this many last steps
WITHIN = 0.01  # qlr may be at most this fraction above Prodigy's held-out loss


@dataclass(frozen=True)
class Setup:
    """The text, the model and the training settings shared by every run.

    Attributes:
        heldout_fraction: the end of the text held out, as a fraction of its characters.
        context: characters the model sees (each window is one more, for the targets).
        d_model: width.
        layers: transformer blocks.
        heads: attention heads.
        mlp_ratio: MLP hidden width over ``d_model``.
        tied: the output head is the transposed token embedding.
        batch: training windows per step.
        eval_batch: held-out windows per forward pass.
        betas: AdamW's (and Prodigy's) betas.
        weight_decay: decoupled weight decay of the weight matrices and embeddings.
        clip: gradient norm clipped to before every step.
        warmup: ``warmup_cosine``'s linear warmup, as a fraction of the steps.
        final_factor: ``warmup_cosine``'s rate at the last step, over the start.
    """

    heldout_fraction: float = 0.1
    context: int = 64
    d_model: int = 64
    layers: int = 2
    heads: int = 4
    mlp_ratio: int = 4
    tied: bool = True
    batch: int = 32
    eval_batch: int = 128
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = 0.1
    clip: float = 1.0
    warmup: float = 0.05
    final_factor: float = 0.1


# ----------------------------------------------------------------------------------- data
@dataclass
class Data:
    """The training text, the held-out windows and two reference losses on them."""

    train: np.ndarray  # (n,) int64 character ids: the first part of the text
    heldout: torch.Tensor  # (windows, context + 1) int64: the held-out part, tiled
    uniform: float  # held-out loss of guessing every character alike: log(vocabulary)
    unigram: float  # held-out loss of the training text's character frequencies
    characters: int  # the whole text's length


@functools.cache
def make_data(setup: Setup) -> Data:
    """Splits the text by position and tiles the held-out part (cached: every run shares it).

    Args:
        setup: the held-out fraction and the context.

    Returns:
        The training text, the held-out windows and the reference losses.
    """
    text = stdlib_text()
    cut = int(round(text.size * (1.0 - setup.heldout_fraction)))
    train, rest = text[:cut], text[cut:]
    # Consecutive windows overlapping by one character: every held-out character after the
    # first is a target exactly once.
    width = setup.context + 1
    starts = np.arange(0, rest.size - width + 1, setup.context)
    heldout = torch.from_numpy(rest[starts[:, None] + np.arange(width)[None, :]])
    counts = np.bincount(train, minlength=CHAR_VOCAB) + 1.0  # add-one: no character impossible
    targets = heldout[:, 1:].numpy().ravel()
    unigram = float(-np.log(counts / counts.sum())[targets].mean())
    return Data(
        train=train,
        heldout=heldout,
        uniform=math.log(CHAR_VOCAB),
        unigram=unigram,
        characters=int(text.size),
    )


def batches(data: Data, setup: Setup, rng: np.random.Generator, steps: int):
    """``steps`` batches of random training windows, as (inputs, targets) tensors."""
    width = setup.context + 1
    for _ in range(steps):
        starts = rng.integers(data.train.size - width + 1, size=setup.batch)
        windows = torch.from_numpy(data.train[starts[:, None] + np.arange(width)[None, :]])
        yield windows[:, :-1], windows[:, 1:]


# ----------------------------------------------------------------------------------- runs
def build_model(setup: Setup, rng: np.random.Generator) -> TransformerLM:
    """The char_lm_text family's transformer, GPT-2's init drawn from ``rng``."""
    return TransformerLM(
        CHAR_VOCAB,
        setup.context,
        setup.d_model,
        setup.layers,
        setup.heads,
        setup.mlp_ratio,
        setup.tied,
        rng,
        torch.float32,
    )


def count_parameters(setup: Setup) -> int:
    """The model's number of parameters (the tied head counted once)."""
    return sum(p.numel() for p in build_model(setup, np.random.default_rng(0)).parameters())


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Decay on the matrices and embeddings only, as GPT-style models are trained."""
    params = list(model.parameters())
    return [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ]


def make_optimizer(arm: str, model: nn.Module, setup: Setup, start: float):
    """AdamW at ``start`` for the scheduled arms, Prodigy at lr 1 for ``prodigy``."""
    groups = param_groups(model, setup.weight_decay)
    if arm == "prodigy":
        from prodigyopt import Prodigy

        # Both as its README advises; safeguard_warmup keeps d from overshooting early on.
        return Prodigy(
            groups, lr=1.0, betas=setup.betas, safeguard_warmup=True, use_bias_correction=True
        )
    return torch.optim.AdamW(groups, lr=start, betas=setup.betas)


def warmup_cosine_factor(step: int, steps: int, setup: Setup) -> float:
    """The rate of step ``step`` (0-based) over the start: 0 up to 1, then down to the floor."""
    warm = max(1, round(setup.warmup * steps))
    if step < warm:
        return step / warm
    # The last step (steps - 1) is the one that trains at the floor.
    progress = min(1.0, (step - warm) / max(1, steps - 1 - warm))
    return setup.final_factor + (1.0 - setup.final_factor) * 0.5 * (
        1.0 + math.cos(math.pi * progress)
    )


def make_schedule(
    arm: str, optimizer: torch.optim.Optimizer, setup: Setup, steps: int, policy: Any
) -> Any:
    """The arm's scheduler, or None for the arms whose rate the scheduler does not move."""
    if arm == "warmup_cosine":
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: warmup_cosine_factor(step, steps, setup)
        )
    if arm == "qlr":
        return QLRScheduler(optimizer, policy=policy, total_steps=steps)
    return None


def current_rate(arm: str, optimizer: torch.optim.Optimizer) -> float:
    """The step size the last step used; Prodigy's is its estimate ``d`` times its lr."""
    group = optimizer.param_groups[0]
    # Prodigy applies Adam's bias correction as AdamW does, so d * lr compares to AdamW's lr.
    return float(group["d"] * group["lr"]) if arm == "prodigy" else float(group["lr"])


def evaluate(model: nn.Module, windows: torch.Tensor, batch: int) -> float:
    """Mean cross-entropy, nats per character, of every target of ``windows``."""
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for chunk in windows.split(batch):
            logits = model(chunk[:, :-1])
            targets = chunk[:, 1:]
            total += float(
                nn.functional.cross_entropy(
                    logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="sum"
                )
            )
            count += targets.numel()
    model.train()
    return total / count


def train_run(
    data: Data,
    setup: Setup,
    arm: str,
    start: float | None,
    seed: int,
    steps: int,
    policy: str | Path | Policy = "default",
) -> dict[str, Any]:
    """Trains one model from scratch in one arm and scores it on the held-out windows.

    Args:
        data: the text.
        setup: model and training settings.
        arm: one of `ARMS`.
        start: the rate the run starts from; ignored (None in the record) for ``prodigy``.
        seed: the training seed (weights, batch order).
        steps: optimizer steps.
        policy: the qlr policy, for the ``qlr`` arm: ``"default"``, a policy file or a `Policy`.

    Returns:
        One record: held-out loss, final training loss, final rate, wall time, the per-step
        losses and rates (``lrs[i]``: the rate step i trained with) and, for ``qlr``, the
        scheduler's counters.
    """
    if arm not in ARMS:
        raise ValueError(f"unknown arm {arm!r}; expected one of {ARMS}")
    if arm != "prodigy" and (start is None or not start > 0):
        raise ValueError(f"the {arm} arm needs a positive start, got {start}")
    torch.manual_seed(seed)  # nothing draws from it (no dropout); fixed all the same
    # Two streams from one seed: the weights, and the batches every arm of this seed shares.
    init_rng, batch_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    model = build_model(setup, init_rng)
    optimizer = make_optimizer(arm, model, setup, start or 1.0)
    schedule = make_schedule(arm, optimizer, setup, steps, policy)
    params = list(model.parameters())
    losses: list[float] = []
    lrs: list[float] = []
    began = time.perf_counter()
    for inputs, targets in batches(data, setup, batch_rng, steps):
        logits = model(inputs)
        loss = nn.functional.cross_entropy(logits.reshape(-1, CHAR_VOCAB), targets.reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(params, setup.clip)
        optimizer.step()
        # Read after the step (Prodigy updates d inside it) and before the scheduler moves it.
        lrs.append(current_rate(arm, optimizer))
        losses.append(float(loss.detach()))
        if arm == "qlr":
            schedule.step(loss.detach())
        elif schedule is not None:
            schedule.step()
    train_seconds = time.perf_counter() - began
    heldout = evaluate(model, data.heldout, setup.eval_batch)
    record: dict[str, Any] = {
        "arm": arm,
        "start": None if arm == "prodigy" else start,
        "seed": seed,
        "steps": steps,
        "heldout_loss": heldout,
        "final_train_loss": statistics.fmean(losses[-TAIL:]),
        "final_lr": lrs[-1],
        "seconds": time.perf_counter() - began,
        "train_seconds": train_seconds,
        "train_losses": losses,
        "lrs": lrs,
    }
    if arm == "qlr":
        record.update(
            policy=str(policy),
            scheduler_steps=schedule.steps,
            scheduler_total_steps=schedule.controller.total_steps,
            decisions=schedule.decisions,
            rollbacks=schedule.rollbacks,
            spike_cuts=schedule.spike_cuts,
        )
    return record


def _one_thread() -> None:
    # Each worker is one run at a time; more threads per worker would fight over the cores.
    torch.set_num_threads(1)


def _task(
    setup: Setup, arm: str, start: float | None, seed: int, steps: int, policy: Any
) -> dict[str, Any]:
    """One run in a worker process, which builds (and caches) the data itself."""
    return train_run(make_data(setup), setup, arm, start, seed, steps, policy)


def tasks(
    starts: Sequence[float], arms: Sequence[str], seeds: Sequence[int]
) -> list[tuple[str, float | None, int]]:
    """Every (arm, start, seed) to run: Prodigy once per seed, the other arms per start."""
    todo: list[tuple[str, float | None, int]] = [
        (arm, start, seed) for start in starts for arm in STARTED if arm in arms for seed in seeds
    ]
    if "prodigy" in arms:
        todo += [("prodigy", None, seed) for seed in seeds]
    return todo


def run_all(
    todo: list[tuple[str, float | None, int]],
    setup: Setup,
    steps: int,
    policy: Any,
    jobs: int,
    verbose: bool,
) -> list[dict[str, Any]]:
    """Runs ``todo`` here (one job) or in ``jobs`` worker processes; records in ``todo``'s order."""

    def say(record: dict[str, Any]) -> None:
        if verbose:
            start = "own" if record["start"] is None else f"{record['start']:g}"
            print(
                f"{record['arm']:>13} start {start:<7} seed {record['seed']}: "
                f"held-out {record['heldout_loss']:.4f}  train {record['final_train_loss']:.4f}"
                f"  final lr {record['final_lr']:.3g}  {record['seconds']:.1f} s",
                flush=True,
            )

    if jobs <= 1:
        data = make_data(setup)
        records = []
        for arm, start, seed in todo:
            records.append(train_run(data, setup, arm, start, seed, steps, policy))
            say(records[-1])
        return records
    # spawn, not fork: a forked worker may inherit a thread pool that is not fork-safe.
    context = multiprocessing.get_context("spawn")
    results: dict[int, dict[str, Any]] = {}
    with ProcessPoolExecutor(jobs, mp_context=context, initializer=_one_thread) as pool:
        futures = {
            pool.submit(_task, setup, arm, start, seed, steps, policy): i
            for i, (arm, start, seed) in enumerate(todo)
        }
        for future in as_completed(futures):
            results[futures[future]] = future.result()
            say(results[futures[future]])
    return [results[i] for i in range(len(todo))]


# ----------------------------------------------------------------------------------- report
def _median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def summarise(runs: list[dict[str, Any]], starts: Sequence[float]) -> list[dict[str, Any]]:
    """One row per (start, arm): held-out losses per seed and their medians.

    Prodigy's runs, which have no start, give a row under every start.

    Args:
        runs: records from `train_run`.
        starts: the starts, in the order of the tables.

    Returns:
        Rows with ``start``, ``arm``, ``seeds``, ``heldout`` (per seed), ``heldout_median``,
        ``train_median`` and ``final_lr_median``.
    """
    rows = []
    for start in starts:
        for arm in ARMS:
            mine = [
                r
                for r in runs
                if r["arm"] == arm and (arm == "prodigy" or math.isclose(r["start"], start))
            ]
            if not mine:
                continue
            mine.sort(key=lambda r: r["seed"])
            rows.append(
                {
                    "start": start,
                    "arm": arm,
                    "seeds": [r["seed"] for r in mine],
                    "heldout": [r["heldout_loss"] for r in mine],
                    "heldout_median": _median([r["heldout_loss"] for r in mine]),
                    "train_median": _median([r["final_train_loss"] for r in mine]),
                    "final_lr_median": _median([r["final_lr"] for r in mine]),
                }
            )
    return rows


def verdicts(rows: list[dict[str, Any]], starts: Sequence[float]) -> list[dict[str, Any]]:
    """The claim per start, on medians: qlr at or below constant and warmup-cosine, and at
    most `WITHIN` above Prodigy.

    Returns:
        One dict per start with qlr's median and, for each arm that ran, its median, qlr's
        difference to it, and whether the condition holds (``prodigy_excess``: qlr over
        Prodigy, minus 1); ``meets_all`` is None when an arm is missing.
    """
    out = []
    for start in starts:
        mine = {r["arm"]: r["heldout_median"] for r in rows if r["start"] == start}
        if "qlr" not in mine:
            continue
        q = mine["qlr"]
        verdict: dict[str, Any] = {"start": start, "qlr": q}
        for arm in ("constant", "warmup_cosine"):
            if arm in mine:
                verdict[arm] = mine[arm]
                verdict[f"{arm}_difference"] = q - mine[arm]
                verdict[f"{arm}_met"] = q <= mine[arm]
        if "prodigy" in mine:
            verdict["prodigy"] = mine["prodigy"]
            verdict["prodigy_excess"] = q / mine["prodigy"] - 1.0
            verdict["prodigy_met"] = verdict["prodigy_excess"] <= WITHIN
        met = [verdict.get(f"{arm}_met") for arm in ("constant", "warmup_cosine", "prodigy")]
        verdict["meets_all"] = None if None in met else all(met)
        out.append(verdict)
    return out


def _verdict_line(v: dict[str, Any]) -> str:
    """One start's verdict, every number it rests on stated."""
    parts = []
    for arm in ("constant", "warmup_cosine"):
        if arm in v:
            side = "at or below" if v[f"{arm}_met"] else "above"
            parts.append(f"vs {arm} {v[arm]:.4f}: {side} ({v[f'{arm}_difference']:+.4f})")
        else:
            parts.append(f"vs {arm}: not run")
    if "prodigy" in v:
        within = "yes" if v["prodigy_met"] else "no"
        parts.append(
            f"vs Prodigy {v['prodigy']:.4f}: qlr/Prodigy - 1 = {100 * v['prodigy_excess']:+.2f} %, "
            f"within {100 * WITHIN:g} %: {within}"
        )
    else:
        parts.append("vs Prodigy: not run")
    every = {True: "yes", False: "no", None: "not all arms ran"}[v["meets_all"]]
    return (
        f"- Start {v['start']:g}: qlr's median held-out loss {v['qlr']:.4f}; "
        + "; ".join(parts)
        + f". All three: {every}."
    )


def render(report: dict[str, Any]) -> str:
    """The Markdown report: the setup, a table per start, the verdicts and the count."""
    setup, rows = report["setup"], report["rows"]
    seeds = report["seeds"]
    lines = [
        "# qlr on a character-level language model, real text, AdamW",
        "",
        f"Causal transformer ({setup['layers']} layers, width {setup['d_model']}, "
        f"{setup['heads']} heads, MLP ratio {setup['mlp_ratio']}, tied embeddings, context "
        f"{setup['context']}, {report['parameters']:,} parameters) on Python standard-library "
        f"source ({report['characters']:,} characters, vocabulary {CHAR_VOCAB}): the first "
        f"{100 * (1 - setup['heldout_fraction']):g} % trained on, the last "
        f"{100 * setup['heldout_fraction']:g} % held out ({report['heldout_windows']} windows, "
        f"every held-out character scored once). AdamW (betas {tuple(setup['betas'])}, weight "
        f"decay {setup['weight_decay']} on matrices and embeddings, clipping at norm "
        f"{setup['clip']}), batch {setup['batch']}, {report['steps']} steps, training seeds "
        f"{', '.join(map(str, seeds))}, policy `{report['policy']}`. Arms: constant; "
        f"warmup_cosine ({100 * setup['warmup']:g} % linear warmup, cosine to "
        f"{100 * setup['final_factor']:g} % of the start); qlr (`total_steps` given); Prodigy "
        "(lr 1, its own rate; the same runs under every start). Held-out loss in nats per "
        f"character (uniform guessing {report['uniform']:.3f}, the training text's character "
        f"frequencies {report['unigram']:.3f}). Final training loss: mean of the last {TAIL} "
        "steps; final rate: the last step's (Prodigy: d times lr).",
        "",
    ]
    for start in report["starts"]:
        mine = [r for r in rows if r["start"] == start]
        if not mine:
            continue
        lines += [
            f"Start {start:g}:",
            "",
            "| arm | held-out loss per seed | median | final train loss (median) "
            "| final rate (median) |",
            "|---|---|---|---|---|",
        ]
        for row in mine:
            per_seed = " / ".join(f"{x:.4f}" for x in row["heldout"])
            lines.append(
                f"| {row['arm']} | {per_seed} | {row['heldout_median']:.4f} | "
                f"{row['train_median']:.4f} | {row['final_lr_median']:.3g} |"
            )
        lines.append("")
    checked = report["verdicts"]
    lines += [_verdict_line(v) for v in checked]
    met = [f"{v['start']:g}" for v in checked if v["meets_all"]]
    lines += [
        "",
        f"Starts where qlr meets all three conditions: {len(met)} of {len(checked)}"
        + (f" ({', '.join(met)})." if met else "."),
    ]
    times = [r["seconds"] for r in report["runs"]]
    lines += [
        "",
        f"Wall time per run (one CPU thread, training and evaluation): median "
        f"{_median(times):.1f} s, max {max(times):.1f} s; {report['seconds'] / 60:.1f} min in "
        f"all with {report['jobs']} job(s). Command: `{report['command']}`.",
        "",
    ]
    return "\n".join(lines)


def run(
    out: Path,
    steps: int = STEPS,
    seeds: Sequence[int] = (0, 1, 2),
    starts: Sequence[float] = STARTS,
    arms: Sequence[str] = ARMS,
    policy: str | Path | Policy = "default",
    setup: Setup | None = None,
    jobs: int = 2,
    verbose: bool = True,
    command: str = "",
) -> dict[str, Any]:
    """Runs every (arm, start, seed), Prodigy once per seed; writes and returns the report.

    Args:
        out: folder for ``results.json`` and ``results.md`` (created when missing).
        steps: optimizer steps per run.
        seeds: training seeds.
        starts: starting rates.
        arms: which of `ARMS` to run.
        policy: the qlr policy (``"default"``, a policy file or a `Policy`).
        setup: text, model and training settings; `Setup()` when None.
        jobs: worker processes (one run each at a time); 1 runs here.
        verbose: print one line per run and the report.
        command: the command line, kept in the report.

    Returns:
        The report written to ``results.json``.
    """
    setup = setup or Setup()
    unknown = set(arms) - set(ARMS)
    if unknown:
        raise ValueError(f"unknown arms {sorted(unknown)}; expected some of {ARMS}")
    began = time.perf_counter()
    data = make_data(setup)
    runs = run_all(tasks(starts, arms, seeds), setup, steps, policy, jobs, verbose)
    rows = summarise(runs, starts)
    report = {
        "setup": asdict(setup),
        "steps": steps,
        "seeds": list(seeds),
        "starts": list(starts),
        "arms": list(arms),
        "policy": str(policy),
        "jobs": jobs,
        "command": command,
        "characters": data.characters,
        "heldout_windows": int(data.heldout.shape[0]),
        "parameters": count_parameters(setup),
        "uniform": data.uniform,
        "unigram": data.unigram,
        "within": WITHIN,
        "rows": rows,
        "verdicts": verdicts(rows, starts),
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
    parser.add_argument("--steps", type=int, default=STEPS, help="optimizer steps per run")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--starts", type=float, nargs="+", default=list(STARTS), help="starting rates"
    )
    parser.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS))
    parser.add_argument("--policy", default="default", help='"default" or a policy file')
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--jobs", type=int, default=2, help="worker processes, one thread each (1: run here)"
    )
    args = list(sys.argv[1:] if argv is None else argv)
    options = parser.parse_args(args)
    # Small models gain nothing from intra-op threads, and the runs are timed on one.
    torch.set_num_threads(1)
    run(
        options.out,
        steps=options.steps,
        seeds=options.seeds,
        starts=options.starts,
        arms=options.arms,
        policy=options.policy,
        jobs=options.jobs,
        command=shlex.join(["python", "experiments/lm_text.py", *args]),
    )


if __name__ == "__main__":
    main()
