"""What `QLRScheduler` costs a training loop: steps per second with and without it, and memory.

Targets: at most +5 % time per step at batch 32 and +2 % at batches 128 and 512, for a model of
about one million parameters; no host synchronisation between decisions on an accelerator; at
most one extra parameter-sized buffer of memory.

Every setting (model, optimizer, batch size) trains three copies of one model side by side: a
plain loop, the loop with the shipped default policy (feature version 2: loss and gradient
features, spike guard) and the loop with a policy in the shape of the coming default (the loss
and update features of versions 4 and 5, random weights, the same guard). They run in
interleaved rounds of the same number of steps, a whole number of decision blocks, the order
reversed every round so that drift hits all alike. The overhead is the median over rounds of
(time per step with qlr) / (plain time per step) - 1; steps per second are medians over rounds.
The rate is kept within 8x of its start so that decisions cannot derail training.

CPU (the default): an MLP 256-1024-768-10 (1,058,058 parameters) on one thread, SGD, SGD with
momentum 0.9 and Adam, batches 32, 128 and 512. The loop is zero_grad, forward, cross-entropy,
backward, optimizer step and ``loss.item()`` (a CPU loop reads its loss for free), then
``scheduler.step(loss)``. The table also gives the time inside ``scheduler.step`` and the minor
page faults per step, and a second table the memory the scheduler holds.

GPU (``--device cuda``): the same MLP, a transformer of about 25M and one of about 100M
parameters (64 tokens a sequence, TF32 matmuls), the same optimizers and batches, timed with CUDA
events. The loop never reads its loss (``scheduler.step`` gets the tensor), so every
host synchronisation left is the scheduler's: a separate run of 4 blocks counts, per step, the
synchronising CUDA calls (``torch.cuda.set_sync_debug_mode("warn")``) and the scheduler's waits
for the previous step's values (``torch.cuda.Event.synchronize``), with how many of those found
the values not yet there. About five minutes on one GPU; writes bench_scheduler_gpu.md.

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
from qlr.features import FEATURE_NAMES, GRADIENT_FEATURES
from qlr.policy import Policy, PolicyMetadata

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
UPDATE_FEATURES = tuple(n for n in FEATURE_NAMES if n not in GRADIENT_FEATURES | {"batch_growth"})
TARGETS = {32: 0.05, 128: 0.02, 512: 0.02}
SYNC_BLOCKS = 4  # decision blocks run under the sync counters
# Rounds and seconds per round and loop, by device: the GPU run must fit in about five minutes.
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
def update_policy(seed: int = 0) -> Policy:
    """Random weights in the shape of the coming default: loss and update features."""
    gen = torch.Generator().manual_seed(seed)
    sizes = [len(UPDATE_FEATURES), 64, 64, 5]
    layers = [
        (torch.randn(n_out, n_in, generator=gen) / math.sqrt(n_in), torch.zeros(n_out))
        for n_in, n_out in zip(sizes[:-1], sizes[1:], strict=True)
    ]
    meta = PolicyMetadata(
        action_factors=(0.5, 2**-0.5, 1.0, 2**0.5, 2.0),
        decision_interval=5,
        hidden_sizes=(64, 64),
        feature_names=UPDATE_FEATURES,
        spike_factor=2.0,
        spike_cut=0.1,
    )
    return Policy(layers, meta)


POLICIES: dict[str, Callable[[], Policy]] = {
    "default": lambda: load_policy("default"),
    "update": update_policy,
}
POLICY_LABELS = {
    "default": "the shipped default (v2: loss and gradient features)",
    "update": "update features (v4/v5: loss and update features, random weights)",
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
    ) -> None:
        lr, make = OPTIMIZERS[optimizer]
        torch.manual_seed(0)
        with device:  # initialised where it trains: a 100M model is slow to build on a CPU
            self.model = spec.build()
        self.optimizer = make(self.model.parameters(), lr)
        self.scheduler = None
        if policy is not None:
            self.scheduler = QLRScheduler(
                self.optimizer, policy=policy, min_lr=lr / LR_RANGE, max_lr=lr * LR_RANGE
            )
        self.set_to_none = set_to_none
        x, y = spec.inputs(batch, torch.Generator().manual_seed(batch))
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
    policies: dict[str, Policy],
    rounds: int,
    round_seconds: float,
    device: torch.device,
) -> Setting:
    loops = {"plain": Loop(spec, optimizer, batch, None, device)}
    loops.update({name: Loop(spec, optimizer, batch, p, device) for name, p in policies.items()})
    interval = max(p.decision_interval for p in policies.values())
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
def held_bytes(loop: Loop) -> int:
    """Bytes of storages the feature tracker holds that are not a parameter's current .grad."""
    tracker = loop.scheduler.controller.tracker
    grads = {
        p.grad.untyped_storage().data_ptr() for p in loop.model.parameters() if p.grad is not None
    }
    chain = getattr(tracker, "_chain", None)
    memory = getattr(tracker, "_grads", None)  # the kept gradient, by reference or copied
    tensors = [
        *(getattr(memory, "kept", None) or []),
        *getattr(memory, "_buffers", []),
        *(getattr(chain, "_buffer", None) or []),
    ]
    held: dict[int, int] = {}
    for t in tensors:
        if t is None:
            continue
        storage = t.untyped_storage()
        if storage.data_ptr() not in grads:
            held[storage.data_ptr()] = storage.nbytes()
    return sum(held.values())


def memory_overhead(
    spec: ModelSpec, policy: Policy, set_to_none: bool, device: torch.device, steps: int = 40
) -> tuple[int, int, int]:
    """(parameter bytes, largest extra bytes after a zero_grad, zero_grads with any extra)."""
    loop = Loop(spec, "SGD", 32, policy, device, set_to_none=set_to_none)
    param_bytes = sum(p.numel() * p.element_size() for p in loop.model.parameters())
    peak, holding = 0, 0
    for _ in range(steps):
        loop.step()
        # What the next backward pass starts from: the loop's zero_grad, then what qlr holds.
        loop.optimizer.zero_grad(set_to_none=set_to_none)
        extra = held_bytes(loop)
        peak = max(peak, extra)
        holding += extra > 0
    return param_bytes, peak, holding


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
    memory: dict[tuple[str, bool], tuple[int, int, int]],
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
        f"{loop} Three loops per setting (plain, and one per policy), interleaved over "
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
    for policy in POLICIES:
        lines += ["", f"## Policy: {POLICY_LABELS[policy]}", ""]
        lines += time_table(settings, policy, device)
    if memory:
        lines += [
            "",
            "## Memory",
            "",
            "Held for the scheduler alone after each `zero_grad` of a 40-step SGD run "
            f"(`{args.models[0]}`, batch 32): storages the feature tracker keeps (the kept "
            "gradient, its copy, the update chain's buffer) that are not a parameter's "
            "current `.grad`. Target: at most 1x the parameters.",
            "",
            "| policy | `zero_grad` | parameter bytes | most extra bytes | ratio | "
            "steps holding extra |",
            "|---|---|---|---|---|---|",
        ]
        for (policy, set_to_none), (param_bytes, peak, holding) in memory.items():
            lines.append(
                f"| {policy} | `set_to_none={set_to_none}` | {param_bytes:,} | {peak:,} | "
                f"**{peak / param_bytes:.2f}x** | {holding} of 40 |"
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

    policies = {name: make() for name, make in POLICIES.items()}
    settings = []
    for model in args.models:
        for optimizer in args.optimizers:
            for batch in args.batches:
                setting = measure(
                    MODELS[model],
                    optimizer,
                    batch,
                    policies,
                    args.rounds,
                    args.round_seconds,
                    device,
                )
                summary = ", ".join(f"{p} {setting.overhead(p):+.1%}" for p in policies)
                print(f"{model} {optimizer} batch {batch}: {summary}", flush=True)
                settings.append(setting)
                if device.type == "cuda":
                    torch.cuda.empty_cache()
    memory = {}
    if device.type == "cpu":
        spec = MODELS[args.models[0]]
        memory = {
            (name, flag): memory_overhead(spec, policy, flag, device)
            for name, policy in policies.items()
            for flag in (True, False)
        }

    text = markdown(settings, memory, args, device)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(args.out, text.encode())
    print(text)


if __name__ == "__main__":
    main()
