"""What `QLRScheduler` costs a training loop: time per step, and memory beyond the loop's own.

Targets: at most 5 % of a plain training step of an MLP with about one million parameters on
one CPU thread, and at most one extra parameter-sized buffer of memory.

Time: a plain loop (zero_grad, forward, cross-entropy, backward, optimizer step, ``loss.item()``)
against the same loop plus ``scheduler.step(loss)``, for an MLP 256-1000-1000-10 (1.27M
parameters) at three batch sizes, with SGD and with Adam. The two variants train separate
copies of one model, in alternating rounds (ABBA order) of the same number of steps, a whole
number of decision intervals; the table gives the medians over rounds, the median of the
per-round ratios (the overhead) and the time spent inside ``scheduler.step`` itself.

Memory: the scheduler's only parameter-sized memory is the previous gradient its feature
tracker keeps for one step in each decision interval (see `qlr.features`). After every
``zero_grad`` (where a plain loop holds only what it will reuse) the script adds up the distinct
storages that the tracker holds (``_prev_grads``, ``_buffers``) and that are not a parameter's
current ``.grad``: tensors kept alive, or allocated, for the scheduler alone.

The policy is a real policy file with random weights in the shape of the shipped default
(decision interval 5, factors 0.5 / 1 / 2, hidden layers 64 and 64), unless ``--policy`` names
another; its rate is kept within 8x of the start so that random decisions cannot derail training.

The table also counts minor page faults per step: on CPU, a gradient kept past ``zero_grad``
changes how the allocator reuses memory, a cost that appears outside ``scheduler.step``.
``--tracker-copies`` (a diagnostic) makes the tracker copy gradients into its own buffer from
the first step, as it does anyway once it sees gradients reused in place.

    python experiments/bench_scheduler.py  # writes experiments/results/bench_scheduler.md
    python experiments/bench_scheduler.py --rounds 3 --round-seconds 0.1 --out /tmp/bench.md
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import resource
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from qlr import QLRScheduler
from qlr._atomic import atomic_write_bytes
from qlr.features import FEATURES_V2
from qlr.policy import Policy, PolicyMetadata, save_policy

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "experiments" / "results" / "bench_scheduler.md"
WIDTHS = (256, 1000, 1000, 10)
BATCH_SIZES = (32, 128, 512)
OPTIMIZERS: dict[str, tuple[float, Callable[..., torch.optim.Optimizer]]] = {
    "SGD": (0.01, torch.optim.SGD),
    "Adam": (1e-4, torch.optim.Adam),
}
LR_RANGE = 8.0  # the rate stays within [lr / 8, lr * 8]


@dataclass
class TimeRow:
    optimizer: str
    batch: int
    steps: int  # per round and variant
    plain_ms: list[float]  # one per round
    qlr_ms: list[float]
    inside_ms: list[float]  # time inside scheduler.step, per step
    plain_faults: list[float]  # minor page faults per step
    qlr_faults: list[float]

    @property
    def overhead(self) -> float:
        """Median over rounds of (step with qlr) / (plain step) - 1."""
        return statistics.median(q / p - 1 for q, p in zip(self.qlr_ms, self.plain_ms, strict=True))

    @property
    def overhead_fastest(self) -> float:
        """(fastest round with qlr) / (fastest plain round) - 1: least touched by other work."""
        return min(self.qlr_ms) / min(self.plain_ms) - 1


def random_policy_file(directory: Path, seed: int = 0) -> Path:
    """A policy file with random weights in the shape the shipped default will have."""
    gen = torch.Generator().manual_seed(seed)
    sizes = [len(FEATURES_V2), 64, 64, 3]
    layers = [
        (torch.randn(n_out, n_in, generator=gen) / math.sqrt(n_in), torch.zeros(n_out))
        for n_in, n_out in zip(sizes[:-1], sizes[1:], strict=True)
    ]
    meta = PolicyMetadata(
        action_factors=(0.5, 1.0, 2.0), decision_interval=5, hidden_sizes=(64, 64)
    )
    return save_policy(Policy(layers, meta), directory / "random.qlr")


def mlp() -> torch.nn.Sequential:
    torch.manual_seed(0)
    layers: list[torch.nn.Module] = []
    for n_in, n_out in zip(WIDTHS[:-1], WIDTHS[1:], strict=True):
        layers += [torch.nn.Linear(n_in, n_out), torch.nn.ReLU()]
    return torch.nn.Sequential(*layers[:-1])


class Loop:
    """One model, its optimizer and, for the qlr variant, its scheduler."""

    def __init__(
        self,
        optimizer: str,
        batch: int,
        policy: Path | None,
        set_to_none: bool = True,
        tracker_copies: bool = False,
    ):
        lr, make = OPTIMIZERS[optimizer]
        self.model = mlp()
        self.optimizer = make(self.model.parameters(), lr=lr)
        self.scheduler = None
        if policy is not None:
            self.scheduler = QLRScheduler(
                self.optimizer, policy=policy, min_lr=lr / LR_RANGE, max_lr=lr * LR_RANGE
            )
            # Diagnostic: copy gradients from the start, as after detecting in-place reuse.
            self.scheduler.controller.tracker._copy_grads = tracker_copies
        self.set_to_none = set_to_none
        gen = torch.Generator().manual_seed(batch)
        self.x = torch.randn(batch, WIDTHS[0], generator=gen)
        self.y = torch.randint(0, WIDTHS[-1], (batch,), generator=gen)
        self.inside = 0.0  # seconds spent in scheduler.step

    def step(self) -> None:
        self.optimizer.zero_grad(set_to_none=self.set_to_none)
        loss = torch.nn.functional.cross_entropy(self.model(self.x), self.y)
        loss.backward()
        self.optimizer.step()
        loss.item()  # a real loop reads its loss; the scheduler then reads it again
        if self.scheduler is not None:
            began = time.perf_counter()
            self.scheduler.step(loss)
            self.inside += time.perf_counter() - began

    def run(self, steps: int) -> tuple[float, float]:
        """Seconds per step and minor page faults per step, over `steps` steps."""
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        began = time.perf_counter()
        for _ in range(steps):
            self.step()
        seconds = time.perf_counter() - began
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
        return seconds / steps, faults / steps


def time_overhead(
    optimizer: str,
    batch: int,
    policy: Path,
    rounds: int,
    round_seconds: float,
    tracker_copies: bool = False,
) -> TimeRow:
    plain = Loop(optimizer, batch, None)
    qlr = Loop(optimizer, batch, policy, tracker_copies=tracker_copies)
    interval = qlr.scheduler.policy.decision_interval
    plain.run(2 * interval)  # warm-up: allocator, optimizer state, first decisions
    step_s, _ = qlr.run(2 * interval)
    steps = interval * max(1, math.ceil(round_seconds / step_s / interval))
    row = TimeRow(optimizer, batch, steps, [], [], [], [], [])
    for r in range(rounds):
        qlr.inside = 0.0
        order = (plain, qlr) if r % 2 == 0 else (qlr, plain)  # ABBA: drift hits both alike
        measured = {id(loop): loop.run(steps) for loop in order}
        (plain_s, plain_faults), (qlr_s, qlr_faults) = measured[id(plain)], measured[id(qlr)]
        row.plain_ms.append(1e3 * plain_s)
        row.qlr_ms.append(1e3 * qlr_s)
        row.inside_ms.append(1e3 * qlr.inside / steps)
        row.plain_faults.append(plain_faults)
        row.qlr_faults.append(qlr_faults)
    return row


def tracker_bytes(loop: Loop) -> int:
    """Bytes of storages the tracker holds that are not a parameter's current gradient."""
    tracker = loop.scheduler.controller.tracker
    grads = {
        p.grad.untyped_storage().data_ptr() for p in loop.model.parameters() if p.grad is not None
    }
    held: dict[int, int] = {}
    for t in [*(tracker._prev_grads or []), *tracker._buffers]:
        if t is None:
            continue
        storage = t.untyped_storage()
        if storage.data_ptr() not in grads:
            held[storage.data_ptr()] = storage.nbytes()
    return sum(held.values())


def memory_overhead(policy: Path, set_to_none: bool, steps: int = 40) -> tuple[int, int, int]:
    """(parameter bytes, largest extra bytes after a zero_grad, zero_grads with any extra)."""
    loop = Loop("SGD", 32, policy, set_to_none=set_to_none)
    param_bytes = sum(p.numel() * p.element_size() for p in loop.model.parameters())
    peak, holding = 0, 0
    for _ in range(steps):
        loop.step()
        # What the next backward pass starts from: the loop's zero_grad, then what qlr holds.
        loop.optimizer.zero_grad(set_to_none=set_to_none)
        extra = tracker_bytes(loop)
        peak = max(peak, extra)
        holding += extra > 0
    return param_bytes, peak, holding


def markdown(
    rows: list[TimeRow], memory: dict[bool, tuple[int, int, int]], args: argparse.Namespace
) -> str:
    n_params = sum(p.numel() for p in mlp().parameters())
    load = os.getloadavg()
    malloc = [f"{k}={v} " for k, v in sorted(os.environ.items()) if k.startswith("MALLOC_")]
    command = "".join(malloc) + "python experiments/bench_scheduler.py "
    command += f"--rounds {args.rounds} --round-seconds "
    command += f"{args.round_seconds}" + (f" --policy {args.policy}" if args.policy else "")
    command += " --tracker-copies" if args.tracker_copies else ""
    lines = [
        "# QLRScheduler overhead",
        "",
        f"`{command}`",
        "",
        f"Machine: {os.cpu_count()} cores, {platform.processor() or platform.machine()}, "
        f"torch {torch.__version__}, one thread; load average before the runs "
        f"{args.load[0]:.2f} (after: {load[0]:.2f}); other work on the machine adds noise. "
        f"Policy: {args.policy_label}.",
        "",
        f"MLP {'-'.join(map(str, WIDTHS))} ({n_params:,} parameters), cross-entropy on a fixed "
        "random batch. Plain step: zero_grad, forward, backward, optimizer step, `loss.item()`; "
        f"with qlr: the same plus `scheduler.step(loss)`. Medians over {args.rounds} alternating "
        "rounds; the overhead is the median of the per-round ratios (target: at most 5 %), "
        "and, less sensitive to other processes, the ratio of the fastest rounds. "
        "Page faults are minor faults per step: memory the allocator had to fetch from the "
        "kernel again.",
        "",
        "| optimizer | batch | steps / round | plain step (ms) | with qlr (ms) | "
        "inside `scheduler.step` (ms) | overhead | overhead, fastest rounds | "
        "page faults / step (plain, qlr) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row.optimizer} | {row.batch} | {row.steps} | "
            f"{statistics.median(row.plain_ms):.2f} | {statistics.median(row.qlr_ms):.2f} | "
            f"{statistics.median(row.inside_ms):.3f} | **{row.overhead:+.1%}** | "
            f"{row.overhead_fastest:+.1%} | "
            f"{statistics.median(row.plain_faults):.0f}, {statistics.median(row.qlr_faults):.0f} |"
        )
    lines += [
        "",
        "Memory held for the scheduler alone, after each `zero_grad` of a 40-step SGD run: "
        "storages the feature tracker keeps (`_prev_grads`, `_buffers`) that are not a "
        "parameter's current `.grad`. The policy's own weights add about 20 KB. Target: at most "
        "1x the parameters.",
        "",
        "| `zero_grad` | parameter bytes | most extra bytes | ratio | steps holding extra |",
        "|---|---|---|---|---|",
    ]
    for set_to_none, (param_bytes, peak, holding) in memory.items():
        lines.append(
            f"| `set_to_none={set_to_none}` | {param_bytes:,} | {peak:,} | "
            f"**{peak / param_bytes:.2f}x** | {holding} of 40 |"
        )
    lines += [
        "",
        "On the CPU the tracker copies the one gradient it keeps (the second-to-last of each "
        "decision interval) into a buffer of its own, allocated once, whichever way the loop "
        "zeroes gradients: holding the freed gradient by reference instead made the C allocator "
        "fault fresh pages into the next backward pass. On accelerators it keeps a reference "
        "when gradients are set to None.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15, help="alternating rounds per setting")
    parser.add_argument(
        "--round-seconds", type=float, default=0.3, help="target time of one round per variant"
    )
    parser.add_argument("--policy", type=Path, help="a policy file (default: random weights)")
    parser.add_argument(
        "--tracker-copies",
        action="store_true",
        help="diagnostic: the tracker copies gradients into its own buffer from the first step",
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    args.load = os.getloadavg()
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)  # tiny gradients late in a run must not slow one variant

    with tempfile.TemporaryDirectory() as tmp:
        policy = args.policy or random_policy_file(Path(tmp))
        args.policy_label = (
            f"`{args.policy}`" if args.policy else "random weights, interval 5, hidden (64, 64)"
        )
        rows = []
        for name in OPTIMIZERS:
            for batch in BATCH_SIZES:
                row = time_overhead(
                    name, batch, policy, args.rounds, args.round_seconds, args.tracker_copies
                )
                print(f"{name} batch {batch}: overhead {row.overhead:+.1%}", flush=True)
                rows.append(row)
        memory = {flag: memory_overhead(policy, flag) for flag in (True, False)}

    text = markdown(rows, memory, args)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(args.out, text.encode())


if __name__ == "__main__":
    main()
