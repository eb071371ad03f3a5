"""What `QLRScheduler` costs a training loop: steps per second with and without it, and memory.

Targets: at most +5 % time per step at batch 32 and +2 % at batches 128 and 512, for a model of
about one million parameters; no host synchronisation between decisions on an accelerator; at
most one extra parameter-sized buffer of memory.

Every setting (model, optimizer, batch size) trains four copies of one model side by side: a
plain loop; the loop with ``QLRScheduler`` as it ships, the ``default`` policy (feature version
5: the loss and update features, so the update chain's copy of the parameters and none of the
gradients) with the rollback guard on (a snapshot of the parameters and the optimizer's state
at every clean decision); the same with ``rollback=False``, the features' cost alone; and the
shipped ``noise`` policy (feature version 5 with the gradient features as well: it reads and
keeps the gradients on every step), rollback on. The ``noise`` policy also sets the batch size;
here it gets ``batch_size`` and ``max_batch_size`` equal to the loop's batch, so the batch stays
fixed and its decisions come every k steps, as the default's do. The loops run in interleaved
rounds of the same number of steps, a whole number of decision blocks, the order reversed every
round so that drift hits all alike. The overhead is the median over rounds of
(time per step with qlr) / (plain time per step) - 1; steps per second are medians over rounds.
The rate is kept within 8x of its start so that decisions cannot derail training.

CPU (the default): an MLP 256-1024-768-10 (1,058,058 parameters) on one thread, SGD, SGD with
momentum 0.9 and Adam, batches 32, 128 and 512. The loop is zero_grad, forward, cross-entropy,
backward, optimizer step and ``loss.item()`` (a CPU loop reads its loss for free), then
``scheduler.step(loss)``. The table also gives the time inside ``scheduler.step`` and the minor
page faults per step, and a second table the memory the scheduler holds (the update chain's
copy of the parameters, a kept gradient, the rollback snapshot), also for the MLP in bfloat16.

GPU (``--device cuda``): the same MLP, a transformer of about 25M and one of about 100M
parameters (64 tokens a sequence, TF32 matmuls), the same optimizers and batches, timed with CUDA
events. The loop never reads its loss (``scheduler.step`` gets the tensor), so every
host synchronisation left is the scheduler's: a separate run of 4 blocks counts, per step, the
synchronising CUDA calls (``torch.cuda.set_sync_debug_mode("warn")``) and the scheduler's waits
for the previous step's values (``torch.cuda.Event.synchronize``), with how many of those found
the values not yet there. Several minutes on one GPU; writes bench_scheduler_gpu.md.

    python experiments/bench_scheduler.py  # writes experiments/results/bench_scheduler.md
    python experiments/bench_scheduler.py --device cuda  # results/bench_scheduler_gpu.md
    python experiments/bench_scheduler.py --rounds 3 --round-seconds 0.1 --out /tmp/bench.md
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import resource
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch

from qlr import QLRScheduler, load_policy
from qlr._atomic import atomic_write_bytes
from qlr.features import GRADIENT_FEATURES, UPDATE_FEATURES
from qlr.policy import Policy

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "experiments" / "results"
BATCH_SIZES = (32, 128, 512)
OPTIMIZERS: dict[str, tuple[float, Callable[..., torch.optim.Optimizer]]] = {
    "SGD": (0.01, lambda params, lr: torch.optim.SGD(params, lr=lr)),
    "momentum": (0.01, lambda params, lr: torch.optim.SGD(params, lr=lr, momentum=0.9)),
    "Adam": (1e-4, lambda params, lr: torch.optim.Adam(params, lr=lr)),
}
LR_RANGE = 8.0  # the rate stays within [lr / 8, lr * 8]
SEQUENCE = 64  # tokens per sequence of the transformers
VOCAB = 4096
TARGETS = {32: 0.05, 128: 0.02, 512: 0.02}
SYNC_BLOCKS = 4  # decision blocks run under the sync counters
# Rounds and seconds per round and loop, by device: the GPU run must fit in a few minutes.
DEFAULT_ROUNDS = {"cpu": (15, 0.3), "cuda": (5, 0.2)}


# ---------------------------------------------------------------------------------- models
def mlp(widths: tuple[int, ...]) -> torch.nn.Module:
    layers: list[torch.nn.Module] = []
    for n_in, n_out in zip(widths[:-1], widths[1:], strict=True):
        layers += [torch.nn.Linear(n_in, n_out), torch.nn.ReLU()]
    return torch.nn.Sequential(*layers[:-1])


class Transformer(torch.nn.Module):
    """A small pre-norm transformer encoder with token embeddings and an output layer."""

    def __init__(self, width: int, depth: int) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(VOCAB, width)
        layer = torch.nn.TransformerEncoderLayer(
            width, width // 64, 4 * width, dropout=0.0, batch_first=True, norm_first=True
        )
        self.blocks = torch.nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.head = torch.nn.Linear(width, VOCAB)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.embed(tokens))).reshape(-1, VOCAB)


@dataclass(frozen=True)
class ModelSpec:
    name: str
    build: Callable[[], torch.nn.Module]
    inputs: Callable[[int, torch.Generator], tuple[torch.Tensor, torch.Tensor]]


def _mlp_inputs(batch: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(batch, 256, generator=gen), torch.randint(0, 10, (batch,), generator=gen)


def _token_inputs(batch: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    tokens = torch.randint(0, VOCAB, (batch, SEQUENCE + 1), generator=gen)
    return tokens[:, :-1], tokens[:, 1:].reshape(-1)


MODELS = {
    "mlp-1M": ModelSpec("mlp-1M", lambda: mlp((256, 1024, 768, 10)), _mlp_inputs),
    "transformer-25M": ModelSpec("transformer-25M", lambda: Transformer(512, 8), _token_inputs),
    "transformer-100M": ModelSpec("transformer-100M", lambda: Transformer(768, 14), _token_inputs),
}
DEFAULT_MODELS = {"cpu": ("mlp-1M",), "cuda": tuple(MODELS)}


# ---------------------------------------------------------------------------------- policies
@dataclass(frozen=True)
class Setup:
    """A scheduler to measure: a shipped policy (by name) and the options it is built with."""

    policy: str
    options: tuple[tuple[str, object], ...] = ()

    def label(self, policy: Policy) -> str:
        """The shipped file, its feature version, the kinds of features it reads, options."""
        names = set(policy.metadata.feature_names or ())
        kinds = ["loss"]
        if names & GRADIENT_FEATURES:
            kinds.append("gradient")
        if names & UPDATE_FEATURES:
            kinds.append("update")
        label = (
            f"the shipped `{self.policy}` (`qlr/policies/{self.policy}.qlr`, feature version "
            f"{policy.metadata.feature_version}: {', '.join(kinds[:-1])} and {kinds[-1]} features"
        )
        if policy.batch_factors is not None:
            label += "; it also sets the batch size, held at the loop's batch here"
        label += ")"
        options = dict(self.options)
        if options.get("rollback") is False:
            return label + ", `rollback=False`: the features alone"
        return label + ", as it ships (rollback on)"


SETUPS = {  # by the name the tables and the progress lines use
    "default": Setup("default"),
    "default, no rollback": Setup("default", (("rollback", False),)),
    "noise": Setup("noise"),
}


# ---------------------------------------------------------------------------------- loops
class Loop:
    """One copy of the model, its optimizer and, unless plain, its scheduler."""

    def __init__(
        self,
        spec: ModelSpec,
        optimizer: str,
        batch: int,
        policy: Policy | None,
        device: torch.device,
        set_to_none: bool = True,
        dtype: torch.dtype | None = None,
        options: dict | None = None,
    ) -> None:
        lr, make = OPTIMIZERS[optimizer]
        torch.manual_seed(0)
        with device:  # initialised where it trains: a 100M model is slow to build on a CPU
            self.model = spec.build()
        if dtype is not None:
            self.model.to(dtype)
        self.optimizer = make(self.model.parameters(), lr)
        self.scheduler = None
        if policy is not None:
            # A policy with batch actions gets the loop's batch as its start and its bound:
            # the batch stays fixed, and decisions come every k steps.
            kwargs = dict(options or {})
            if policy.batch_factors is not None:
                kwargs.update(batch_size=batch, max_batch_size=batch)
            self.scheduler = QLRScheduler(
                self.optimizer, policy=policy, min_lr=lr / LR_RANGE, max_lr=lr * LR_RANGE, **kwargs
            )
        self.set_to_none = set_to_none
        x, y = spec.inputs(batch, torch.Generator().manual_seed(batch))
        if dtype is not None and x.is_floating_point():
            x = x.to(dtype)
        self.x, self.y = x.to(device), y.to(device)
        self.read_loss = device.type == "cpu"  # free on the CPU, a sync on an accelerator
        self.inside = 0.0  # seconds spent in scheduler.step

    def step(self) -> None:
        self.optimizer.zero_grad(set_to_none=self.set_to_none)
        loss = torch.nn.functional.cross_entropy(self.model(self.x), self.y)
        loss.backward()
        self.optimizer.step()
        if self.read_loss:
            loss.item()
        if self.scheduler is not None:
            began = time.perf_counter()
            self.scheduler.step(loss)
            self.inside += time.perf_counter() - began


class Clock:
    """Seconds for `steps` steps of a loop: wall time on the CPU, CUDA events on a GPU."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"

    def run(self, loop: Loop, steps: int) -> tuple[float, float]:
        """Seconds per step and minor page faults per step."""
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize()
            start.record()
            for _ in range(steps):
                loop.step()
            end.record()
            end.synchronize()
            seconds = start.elapsed_time(end) / 1e3
        else:
            began = time.perf_counter()
            for _ in range(steps):
                loop.step()
            seconds = time.perf_counter() - began
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
        return seconds / steps, faults / steps


@dataclass
class Variant:
    """What was measured for one loop of a setting, one entry per round."""

    step_s: list[float] = field(default_factory=list)
    inside_s: list[float] = field(default_factory=list)
    faults: list[float] = field(default_factory=list)
    syncs: float = math.nan  # synchronising CUDA calls per step
    waits: float = math.nan  # Event.synchronize calls per step
    blocked: float = math.nan  # ... of which found the event not yet reached

    def steps_per_s(self) -> float:
        return 1.0 / statistics.median(self.step_s)


@dataclass
class Setting:
    model: str
    optimizer: str
    batch: int
    steps: int  # per round and variant
    variants: dict[str, Variant]

    def overhead(self, policy: str) -> float:
        """Median over rounds of (step with qlr) / (plain step) - 1."""
        plain, qlr = self.variants["plain"].step_s, self.variants[policy].step_s
        return statistics.median(q / p - 1 for q, p in zip(qlr, plain, strict=True))

    def overhead_fastest(self, policy: str) -> float:
        """(fastest round with qlr) / (fastest plain round) - 1: least touched by other work."""
        return min(self.variants[policy].step_s) / min(self.variants["plain"].step_s) - 1


@contextmanager
def sync_counters(counts: dict[str, int]) -> Iterator[None]:
    """Count synchronising CUDA calls and event waits (with those that had to wait)."""
    original = torch.cuda.Event.synchronize

    def counting_synchronize(event: torch.cuda.Event) -> None:
        counts["waits"] += 1
        counts["blocked"] += not event.query()
        original(event)

    torch.cuda.Event.synchronize = counting_synchronize  # type: ignore[method-assign]
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield
        counts["syncs"] += sum("synchroniz" in str(w.message) for w in caught)
    finally:
        torch.cuda.set_sync_debug_mode("default")
        torch.cuda.Event.synchronize = original  # type: ignore[method-assign]


def count_syncs(loop: Loop, steps: int) -> tuple[float, float, float]:
    """(synchronising calls, event waits, waits that blocked) per step over `steps` steps."""
    counts = {"syncs": 0, "waits": 0, "blocked": 0}
    torch.cuda.synchronize()
    with sync_counters(counts):
        for _ in range(steps):
            loop.step()
    torch.cuda.synchronize()
    return counts["syncs"] / steps, counts["waits"] / steps, counts["blocked"] / steps


def measure(
    spec: ModelSpec,
    optimizer: str,
    batch: int,
    setups: dict[str, tuple[Policy, dict]],
    rounds: int,
    round_seconds: float,
    device: torch.device,
) -> Setting:
    loops = {"plain": Loop(spec, optimizer, batch, None, device)}
    for name, (policy, options) in setups.items():
        loops[name] = Loop(spec, optimizer, batch, policy, device, options=options)
    interval = max(policy.decision_interval for policy, _ in setups.values())
    clock = Clock(device)
    for loop in loops.values():  # warm-up: allocator, optimizer state, first decisions
        clock.run(loop, 2 * interval)
    step_s = max(clock.run(loop, interval)[0] for loop in loops.values())
    steps = interval * max(1, math.ceil(round_seconds / step_s / interval))
    setting = Setting(spec.name, optimizer, batch, steps, {name: Variant() for name in loops})
    names = list(loops)
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            loop, variant = loops[name], setting.variants[name]
            loop.inside = 0.0
            seconds, faults = clock.run(loop, steps)
            variant.step_s.append(seconds)
            variant.faults.append(faults)
            variant.inside_s.append(loop.inside / steps)
    if clock.cuda:
        for name, loop in loops.items():
            variant = setting.variants[name]
            variant.syncs, variant.waits, variant.blocked = count_syncs(
                loop, SYNC_BLOCKS * interval
            )
    return setting


# ---------------------------------------------------------------------------------- memory
MEMORY_STEPS = 40
# (parameter dtype, optimizer, zero_grad's set_to_none) of the memory runs, for every setup
MEMORY_RUNS = (
    (torch.float32, "SGD", True),
    (torch.float32, "SGD", False),
    (torch.bfloat16, "SGD", True),
    (torch.float32, "Adam", True),
)


@dataclass
class Held:
    """What the scheduler held at its fullest step of a run, in bytes and elements."""

    param_bytes: int
    chain_bytes: int = 0  # the update chain's copy of the parameters
    grad_bytes: int = 0  # kept gradients (and their owned copies) that are not a current .grad
    snapshot_bytes: int = 0  # the rollback guard's two copies of parameters and optimizer state
    numel: int = 0  # tracker.buffer_numel at that step
    holding: int = 0  # steps after whose zero_grad the scheduler held anything

    @property
    def tracker_bytes(self) -> int:
        return self.chain_bytes + self.grad_bytes

    @property
    def total(self) -> int:
        return self.tracker_bytes + self.snapshot_bytes


def held_bytes(loop: Loop) -> tuple[int, int, int]:
    """(bytes of the update chain's buffer, of kept gradients, of the rollback snapshot) now.

    Storages are counted once each, and a kept gradient that is a parameter's current
    ``.grad`` (a reference, as on an accelerator) is not counted: the loop holds it anyway.
    The gradient memory's owned copies count even between the steps that use them, since
    they stay allocated.
    """
    scheduler = loop.scheduler
    tracker = scheduler.controller.tracker
    current = {
        p.grad.untyped_storage().data_ptr() for p in loop.model.parameters() if p.grad is not None
    }
    seen: set[int] = set()

    def storages(tensors: list) -> int:
        total = 0
        for t in tensors:
            if not torch.is_tensor(t):
                continue
            storage = t.untyped_storage()
            if storage.data_ptr() in current or storage.data_ptr() in seen:
                continue
            seen.add(storage.data_ptr())
            total += storage.nbytes()
        return total

    chain = storages(list(tracker._chain._buffer))
    memory = tracker._grads
    grads = storages([*(memory.kept or []), *memory._buffers])
    snapshot = 0
    if scheduler._snapshot is not None:
        copies = (scheduler._snapshot._good, scheduler._snapshot._candidate)
        snapshot = storages(
            [t for c in copies for t in [*c.params, *(v for d in c.state for v in d.values())]]
        )
    return chain, grads, snapshot


def memory_overhead(
    spec: ModelSpec,
    policy: Policy,
    options: dict,
    dtype: torch.dtype,
    optimizer: str,
    set_to_none: bool,
    device: torch.device,
    steps: int = MEMORY_STEPS,
) -> Held:
    """The most the scheduler holds after a zero_grad over `steps` steps at batch 32."""
    loop = Loop(spec, optimizer, 32, policy, device, set_to_none, dtype, options)
    held = Held(sum(p.numel() * p.element_size() for p in loop.model.parameters()))
    for _ in range(steps):
        loop.step()
        # What the next backward pass starts from: the loop's zero_grad, then what qlr holds.
        loop.optimizer.zero_grad(set_to_none=set_to_none)
        chain, grads, snapshot = held_bytes(loop)
        if chain + grads + snapshot > held.total:
            held.chain_bytes, held.grad_bytes, held.snapshot_bytes = chain, grads, snapshot
            held.numel = loop.scheduler.controller.tracker.buffer_numel
        held.holding += chain + grads + snapshot > 0
    return held


# ---------------------------------------------------------------------------------- report
def command_line(args: argparse.Namespace) -> str:
    parts = ["python experiments/bench_scheduler.py"]
    if args.device != "cpu":
        parts.append(f"--device {args.device}")
    parts.append(f"--rounds {args.rounds} --round-seconds {args.round_seconds}")
    if args.models != list(DEFAULT_MODELS[args.device]):
        parts.append("--models " + " ".join(args.models))
    for name, default in (("optimizers", list(OPTIMIZERS)), ("batches", list(BATCH_SIZES))):
        if getattr(args, name) != default:
            parts.append(f"--{name} " + " ".join(map(str, getattr(args, name))))
    return " ".join(parts)


def machine(args: argparse.Namespace, device: torch.device) -> str:
    if device.type == "cuda":
        where = f"{torch.cuda.get_device_name(device)}, CUDA {torch.version.cuda}"
    else:
        where = f"{os.cpu_count()} cores, {platform.processor() or platform.machine()}, one thread"
    load = os.getloadavg()
    return (
        f"Machine: {where}, torch {torch.__version__}; load average before the runs "
        f"{args.load[0]:.2f} (after: {load[0]:.2f}); other work on the machine adds noise."
    )


def time_table(settings: list[Setting], policy: str, device: torch.device) -> list[str]:
    cuda = device.type == "cuda"
    header = (
        "| model | optimizer | batch | steps / round | plain steps/s | with qlr steps/s | "
        "overhead | target | overhead, fastest rounds | "
        + (
            "syncs / step (plain, qlr) | event waits / step (blocked) |"
            if cuda
            else "inside `scheduler.step` (ms) | page faults / step (plain, qlr) |"
        )
    )
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for s in settings:
        plain, qlr = s.variants["plain"], s.variants[policy]
        overhead, target = s.overhead(policy), TARGETS.get(s.batch)
        verdict = "" if target is None else ("met" if overhead <= target else "missed")
        cells = [
            s.model,
            s.optimizer,
            str(s.batch),
            str(s.steps),
            f"{plain.steps_per_s():.1f}",
            f"{qlr.steps_per_s():.1f}",
            f"**{overhead:+.1%}**",
            f"<= {target:+.0%} {verdict}" if target is not None else "",
            f"{s.overhead_fastest(policy):+.1%}",
        ]
        if cuda:
            cells += [
                f"{plain.syncs:.2f}, {qlr.syncs:.2f}",
                f"{qlr.waits:.2f} ({qlr.blocked:.2f})",
            ]
        else:
            cells += [
                f"{1e3 * statistics.median(qlr.inside_s):.3f}",
                f"{statistics.median(plain.faults):.0f}, {statistics.median(qlr.faults):.0f}",
            ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def markdown(
    settings: list[Setting],
    setups: dict[str, tuple[Policy, dict]],
    memory: dict[tuple[str, torch.dtype, str, bool], Held],
    args: argparse.Namespace,
    device: torch.device,
) -> str:
    cuda = device.type == "cuda"
    title = "# QLRScheduler overhead" + (" on a GPU" if cuda else "")
    loop = (
        "Plain step: zero_grad, forward, cross-entropy, backward, optimizer step"
        + (" (the loss is never read)" if cuda else ", `loss.item()`")
        + "; with qlr: the same plus `scheduler.step(loss)`."
    )
    lines = [
        title,
        "",
        f"`{command_line(args)}`",
        "",
        machine(args, device),
        "",
        f"{loop} One loop per setting and scheduler below, and a plain one, interleaved over "
        f"{args.rounds} rounds, the order reversed every round; steps/s are medians over "
        "rounds, the overhead is the median of the per-round ratios of time per step, and, "
        "less sensitive to other processes, the ratio of the fastest rounds.",
        "",
    ]
    for name in args.models:
        with torch.device("meta"):  # shapes only
            size = sum(p.numel() for p in MODELS[name].build().parameters())
        lines.append(f"- `{name}`: {size:,} parameters")
    if cuda:
        lines += [
            "",
            f"Syncs: synchronising CUDA calls per step (`torch.cuda.set_sync_debug_mode`), "
            f"over {SYNC_BLOCKS} decision blocks; event waits: the scheduler's waits for the "
            "previous step's values (`torch.cuda.Event.synchronize`), in brackets those that "
            "found the values not there yet.",
        ]
    for name, (policy, _) in setups.items():
        lines += ["", f"## `{name}`: {SETUPS[name].label(policy)}", ""]
        lines += time_table(settings, name, device)
    if memory:
        lines += [
            "",
            "## Memory",
            "",
            "Held for the scheduler alone after each `zero_grad` of a "
            f"{MEMORY_STEPS}-step run (`{args.models[0]}`, batch 32), at its fullest step: "
            "the storages it keeps, each counted once. The feature tracker's: the update "
            "chain's buffer, one copy of the parameters in their own dtype, and, for a policy "
            "with gradient features, one kept gradient, copied on the CPU (a reference to "
            "`.grad` on an accelerator, not counted here), in at least float32. The rollback "
            "guard's: two copies (the confirmed state and the candidate) of the parameters and "
            "the optimizer's state. `buffer_numel` is `FeatureTracker.buffer_numel` at that "
            "step. Ratios are to the parameter bytes; the target is at most one "
            "parameter-sized buffer.",
            "",
            "| scheduler | parameters | optimizer | `zero_grad` | parameter bytes | "
            "parameter copy | kept gradient | tracker, ratio | `buffer_numel` | "
            "rollback snapshot | all, ratio |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for (name, dtype, optimizer, set_to_none), held in memory.items():
            ratio = held.tracker_bytes / held.param_bytes
            lines.append(
                f"| {name} | {str(dtype).removeprefix('torch.')} | {optimizer} | "
                f"`set_to_none={set_to_none}` | {held.param_bytes:,} | {held.chain_bytes:,} | "
                f"{held.grad_bytes:,} | **{ratio:.2f}x** | {held.numel:,} | "
                f"{held.snapshot_bytes:,} | **{held.total / held.param_bytes:.2f}x** |"
            )
    lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--rounds", type=int, help="interleaved rounds per setting")
    parser.add_argument("--round-seconds", type=float, help="target time of a round per loop")
    parser.add_argument("--models", nargs="+", choices=list(MODELS), help="default: per device")
    parser.add_argument("--optimizers", nargs="+", choices=list(OPTIMIZERS), default=None)
    parser.add_argument("--batches", nargs="+", type=int, default=None)
    parser.add_argument("--out", type=Path, help="default: results/bench_scheduler[_gpu].md")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit(
            f"bench_scheduler.py: --device cuda needs a CUDA GPU, and torch {torch.__version__} "
            "sees none here"
        )
    rounds, round_seconds = DEFAULT_ROUNDS[args.device]
    args.rounds = args.rounds or rounds
    args.round_seconds = args.round_seconds or round_seconds
    args.models = args.models or list(DEFAULT_MODELS[args.device])
    args.optimizers = args.optimizers or list(OPTIMIZERS)
    args.batches = args.batches or list(BATCH_SIZES)
    suffix = "_gpu" if args.device == "cuda" else ""
    args.out = args.out or RESULTS / f"bench_scheduler{suffix}.md"
    args.load = os.getloadavg()
    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(1)
        torch.set_flush_denormal(True)  # tiny gradients late in a run must not slow one loop
    else:
        torch.set_float32_matmul_precision("high")  # TF32: the transformers in seconds

    loaded = {name: load_policy(name) for name in {s.policy for s in SETUPS.values()}}
    setups = {name: (loaded[s.policy], dict(s.options)) for name, s in SETUPS.items()}
    settings = []
    for model in args.models:
        for optimizer in args.optimizers:
            for batch in args.batches:
                setting = measure(
                    MODELS[model],
                    optimizer,
                    batch,
                    setups,
                    args.rounds,
                    args.round_seconds,
                    device,
                )
                summary = ", ".join(f"{n} {setting.overhead(n):+.1%}" for n in setups)
                print(f"{model} {optimizer} batch {batch}: {summary}", flush=True)
                settings.append(setting)
                if device.type == "cuda":
                    torch.cuda.empty_cache()
    memory = {}
    if device.type == "cpu":
        spec = MODELS[args.models[0]]
        memory = {
            (name, dtype, optimizer, flag): memory_overhead(
                spec, policy, options, dtype, optimizer, flag, device
            )
            for name, (policy, options) in setups.items()
            for dtype, optimizer, flag in MEMORY_RUNS
        }

    text = markdown(settings, setups, memory, args, device)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(args.out, text.encode())
    print(text)


if __name__ == "__main__":
    main()
