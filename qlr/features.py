"""The one definition of what a learning-rate controller observes.

`FeatureTracker` turns the stream of (loss, gradients) pairs of a training run into a short,
bounded observation vector. The environment that trains a controller and the scheduler that
deploys it both use this class, so a policy sees exactly the same features in both places.

Every feature is invariant to the scale of the loss, the size of the gradients and the number of
parameters, so one controller transfers across problems: losses enter only as relative changes,
gradients only through cosines and ratios of inner products. No feature depends on the absolute
learning rate, the step count or the total number of steps, since deployment rarely knows them;
``lr_drift`` only says how far the controller has moved the rate from where the run started
(a ratio, so it is as scale-free as the rest).

Version history: 1 had the first ten features; 2 appended ``lr_drift``; 3 appended ``grad_noise``
and ``batch_growth`` for controllers that also set the batch size; 4 appended four statistics of
the update the optimizer actually took (below); 5 appended ``progress`` and ``budget_known``,
for a run whose budget of steps is known (0 and 0 when it is not). Earlier features never change
meaning, so an older policy reads its features as a subset of the newer ones.

The update features (version 4). The gradient features describe the gradient, which is the step
only for plain SGD; Adam, AdamW, RMSprop and AdaGrad rescale the step per coordinate. What says
whether a step was too long, for any optimizer, is the slope of the loss along the step actually
taken: with the update u_t = theta_t - theta_{t-1},

    r_t = g(theta_t) . u_t / g(theta_{t-1}) . u_t

is about 1 when the step barely changed the slope (too short), about 0 when it ended near the
minimum along its direction, negative when it overshot and below -1 when the loss along the step
rose (for SGD on a quadratic, r = 1 - lr * curvature along the step). The denominator is taken
as -|g(theta_{t-1}) . u_t|, which changes nothing for a descent step and makes a step that went
uphill from its start (momentum carrying past a minimum) read as negative too. Over the latest
samples, ``update_slope`` is the median of r, ``update_slope_spread`` its standard deviation,
``armijo_ratio`` the median of (L(theta_{t-1}) - L(theta_t)) / |g(theta_{t-1}) . u_t| (1 for a
short step, 1/2 at the minimum along a quadratic, <= 0 when the loss rose) and ``update_size``
the size of the update relative to the parameters, |u| / |theta|, on a log scale. All are
ratios, so they do not depend on the loss scale, the gradient magnitude or the parameter count.

In a loop that steps the scheduler after ``optimizer.step()``, at call t the parameters are
theta_t and ``p.grad`` is g(theta_{t-1}). So one parameter-sized buffer is enough: it holds
theta_{t-1} (copied at call t-1), becomes u_t at call t (where g(theta_{t-1}) . u_t is read) and
gives the numerator g(theta_t) . u_t at call t+1, where the next sample starts by copying the
parameters again. A sample completes every second step, whatever the decision interval.

Cost: gradients are read on two steps per decision, the block's last two (|g|^2 on both, and
g . g_prev between them); every other step only records the loss. The only parameter-sized memory
is the one gradient kept between those two steps. On the CPU it is copied into a buffer the
tracker owns: keeping a reference instead would hold a freed gradient alive past ``zero_grad``,
and the C allocator then hands the next backward pass fresh pages to fault in, which costs far more
than the copy. On accelerators, whose caching allocators keep freed memory, the tracker keeps a
reference when the loop sets gradients to None (torch's default ``zero_grad``); if gradients are
reused in place (``zero_grad(set_to_none=False)``), their version counter shows it, and from then
on it copies them too.

A policy that reads ``grad_noise`` needs the disagreement of every pair of successive gradients in
the block, so for it the tracker reads (and keeps) the gradients on every step (``dense=True``):
one more dot product and copy per step.

A policy that reads only the loss and update features (the version-4 default) keeps no gradient:
its one parameter-sized buffer is the update chain's. A non-finite gradient is seen on the steps
that read gradients; on the others it shows up one step later, in the loss of the parameters it
has corrupted.

Host reads. `FeatureTracker.queue` leaves a step's loss (a float, or a 0-dim tensor on its
device) and its reductions where they are: one per-parameter dot product per reduction, stacked
into one small vector (on CUDA copied into pinned host memory without blocking). They are read,
and summed in double precision, by `FeatureTracker.finish`: `LRController` calls it on the next
step, when the device has usually computed them, or at once on the step that completes a
block, since the decision needs it. So between decisions a training loop never waits for the
step it has just queued, only (at worst) for the one before.

On an accelerator the squared norms come from one multi-tensor kernel and the update chain moves
its buffer with multi-tensor ops, which agree with the per-parameter loop of the CPU to float
rounding; on the CPU the loop keeps each parameter in cache while it is read.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch

FEATURE_VERSION = 5

FEATURE_NAMES: tuple[str, ...] = (
    "loss_change_step",  # relative change of the loss over the last optimizer step
    "loss_change_block",  # relative change of the loss since the previous decision
    "loss_above_best",  # how far the latest loss sits above the best loss seen so far
    "loss_rank",  # Hansen's code: +1 below the last M decisions' losses, -1 above them, else 0
    "loss_rise_fraction",  # fraction of the block's steps on which the loss went up
    "loss_noise",  # spread of the step-to-step loss changes over the recent window
    "grad_cosine",  # cosine of the block's last two gradients
    "grad_projection",  # (g_t . g_{t-1}) / |g_{t-1}|^2 of those: ~1 step too small, <0 overshoot
    "grad_norm_change",  # relative change of the gradient norm since the previous decision
    "nonfinite",  # 1 if a loss or gradient in the block was NaN or infinite
    "lr_drift",  # tanh(log10(rate / starting rate) / 3): how far the rate has been moved
    "grad_noise",  # successive gradients' disagreement: 0 equal, .5 orthogonal (noise), 1 opposite
    "batch_growth",  # tanh(log2(batch / starting batch) / 3): how far the batch has been grown
    "update_slope",  # median of r = -g(theta_t).u / |g(theta_{t-1}).u| (clipped to +-2) / 2
    "update_slope_spread",  # standard deviation of those samples of r, / 2
    "armijo_ratio",  # median of -loss change / |g(theta_{t-1}).u| (clipped to +-2) / 2
    "update_size",  # tanh((log10(|u| / |theta|) + 3) / 2): 0 at a relative step of 1e-3
    "progress",  # fraction of the run's budget spent, in [0, 1]; 0 when no budget is known
    "budget_known",  # 1 when the run's budget is known (progress means something), else 0
)
FEATURES_V1 = FEATURE_NAMES[:10]  # what a version-1 policy reads
FEATURES_V2 = FEATURE_NAMES[:11]  # what a version-2 policy reads
FEATURES_V3 = FEATURE_NAMES[:13]  # what a version-3 policy reads
FEATURES_V4 = FEATURE_NAMES[:17]  # what a version-4 policy reads
FEATURES_BY_VERSION = {
    1: FEATURES_V1,
    2: FEATURES_V2,
    3: FEATURES_V3,
    4: FEATURES_V4,
    5: FEATURE_NAMES,
}
GRADIENT_FEATURES = frozenset({"grad_cosine", "grad_projection", "grad_norm_change", "grad_noise"})
"""Features that need the tracker to keep a gradient between steps."""
UPDATE_FEATURES = frozenset(FEATURE_NAMES[13:17])
"""Features that need the update chain (one copy of the parameters)."""

OBS_DIM = len(FEATURE_NAMES)
OBS_LOW = -1.0
OBS_HIGH = 1.0

# Relative changes are spread with a log so that a 1 % change is visible next to a 50 % one.
_SPREAD = 100.0
_LOG_SPREAD = math.log1p(_SPREAD)
_TINY = 1e-300
_DRIFT_DECADES = 3.0  # lr_drift reaches tanh(1) = 0.76 after three decades of movement
_GROWTH_DOUBLINGS = 3.0  # batch_growth reaches tanh(1) = 0.76 at 8 times the starting batch


def relative_change(new: float, old: float) -> float:
    """Scale-free change from `old` to `new` in [-1, 1], defined for losses of any sign.

    For positive values it equals sign(r) * (1 - exp(-|r|)) with r = log(new / old): an odd,
    bounded function of the log ratio that needs no special case for zero or negative losses.
    """
    denom = max(abs(new), abs(old), _TINY)
    value = (new - old) / denom
    return min(1.0, max(-1.0, value))


def spread(x: float) -> float:
    """Map [-1, 1] onto [-1, 1], magnifying small magnitudes logarithmically."""
    return math.copysign(math.log1p(_SPREAD * min(abs(x), 1.0)) / _LOG_SPREAD, x)


def _finite(x: float, default: float = 0.0) -> float:
    return x if math.isfinite(x) else default


@dataclass
class StepStats:
    """What the tracker extracted from one optimizer step."""

    loss: float
    grad_norm_sq: float
    grad_dot_prev: float  # g_t . g_{t-1}; nan on the first step
    prev_grad_norm_sq: float  # |g_{t-1}|^2; nan on the first step
    finite: bool


class _Readback:
    """One step's values on their way to the host, read by `read` when they are needed.

    On CUDA the values are copied into pinned host memory without blocking, behind an event:
    `read` waits for that event only, which a step later the device has usually passed. On
    the CPU, or another device, `read` reads them directly.
    """

    __slots__ = ("_event", "_values")

    def __init__(self, terms: list[torch.Tensor]) -> None:
        device = terms[0].device
        if any(t.device != device for t in terms):  # parameters spread over several devices
            terms = [t.to(device, non_blocking=device.type != "cpu") for t in terms]
        values = torch.stack(terms) if len(terms) > 1 else terms[0]  # a loss alone: as it is
        self._event: torch.cuda.Event | None = None
        if device.type == "cuda":
            host = torch.empty(values.shape, dtype=values.dtype, pin_memory=True)
            host.copy_(values, non_blocking=True)
            self._event = torch.cuda.Event()
            self._event.record(torch.cuda.current_stream(device))
            values = host
        self._values = values

    def read(self) -> list[float]:
        if self._event is not None:
            self._event.synchronize()
        values = self._values.tolist()
        return values if isinstance(values, list) else [values]


@dataclass(slots=True)
class _PendingStep:
    """A step whose reductions are queued on the device (see `FeatureTracker.queue`)."""

    loss: float  # the loss, when it came as a float (nan when it is the last value)
    loss_in_values: bool
    values: _Readback | None  # every reduction's per-parameter terms, then the loss
    sizes: tuple[tuple[int, bool], ...]  # each reduction's number of terms, and squared
    n_grad: int  # reductions of the gradient: |g|^2 and g . g_prev, when measured
    measure: bool
    align: bool
    keep: bool
    phase: str  # the update chain's phase
    chained: bool


_SLOPE_CLIP = 2.0  # r and the Armijo ratio are clipped to +-2: beyond, "far too long" is all
_SIZE_CENTRE = 3.0  # update_size is 0 at |u| / |theta| = 1e-3, a typical healthy relative step
_SIZE_DECADES = 2.0  # ... and tanh(+-1) two decades away
_UPDATE_WINDOW = 4  # the update features read the last 4 samples (about 8 steps): two of them
# from the block just ended, the rest from the one before. A median over 4 is the mean of the
# middle two, which follows a rate that oscillates (Adam far above its stable rate alternates
# uphill and downhill steps) and still ignores one wild minibatch.


class UpdateChain:
    """Samples the slope ratio r, the Armijo ratio and |u| / |theta| with one parameter buffer.

    Fed every step with the loss, the gradients and the parameters (see the module docstring
    for the timing), it cycles through two phases: "form" (the buffer holds theta_{t-1}; it
    becomes u_t in place and g(theta_{t-1}) . u_t, |u_t|^2, |theta_t|^2 are read) and "close"
    (g(theta_t) . u_t gives r; then the buffer takes a copy of the parameters for the next
    sample). Before the first sample, and after anything that breaks the chain (a non-finite
    step, a change in which parameters have gradients), it starts with a copy.
    """

    def __init__(self) -> None:
        self._buffer: list[torch.Tensor] = []
        self._buffered: tuple[int, ...] = ()  # indices of the parameters the buffer covers
        self.reset()

    def reset(self) -> None:
        """Forget the pending sample; the next step starts a new chain with a copy."""
        self._phase = "copy"
        self._denominator = math.nan  # g(theta_{t-1}) . u_t of the pending sample
        self._loss_before = math.nan  # L(theta_{t-1}) of the pending sample
        self._size = math.nan  # log10 |u_t| / |theta_t| of the pending sample

    def products(
        self, grads: list[torch.Tensor | None], params: list[torch.Tensor]
    ) -> tuple[str, list[_Terms]]:
        """Queue this step's reductions; `finish` takes their sums once they are on the host.

        `grads` are the flat gradients (`_flat`, None where a parameter has none). Returns the
        phase the step was in and its reductions, each as per-parameter 0-dim terms (see
        `_Terms`): none for "copy", g . u, |u|^2 and |theta|^2 for "form", g . u for "close".
        """
        present = tuple(i for i, g in enumerate(grads) if g is not None)
        if self._phase != "copy" and present != self._buffered:
            self.reset()  # parameters started or stopped receiving gradients: start again
        phase = self._phase
        if phase == "copy" or not present:
            self._copy(params, present)
            return "copy", []
        dot = torch.dot
        if phase == "form":
            flats = [_flat(params[i]) for i in present]
            if any(f.shape != b.shape for f, b in zip(flats, self._buffer, strict=True)):
                self._copy(params, present)
                return "copy", []
            grads_present = [grads[i] for i in present]
            if _batched(flats):
                torch._foreach_add_(self._buffer, flats, alpha=-1.0)  # theta_{t-1} - theta_t
                torch._foreach_neg_(self._buffer)  # the buffer becomes u_t, bit for bit
                pairs = zip(grads_present, self._buffer, strict=True)
                dots = [dot(g, b) for g, b in pairs]  # type: ignore[arg-type]
                return "form", [(dots, False), _squares(self._buffer), _squares(flats)]
            dots, u_sq, p_sq = [], [], []
            for g, flat, buffer in zip(grads_present, flats, self._buffer, strict=True):
                # One parameter at a time, so that its update is still in cache for the dots.
                torch.sub(flat, buffer, out=buffer)  # the buffer becomes u_t
                dots.append(dot(g, buffer))  # type: ignore[arg-type]
                u_sq.append(dot(buffer, buffer))
                p_sq.append(dot(flat, flat))
            return "form", [(dots, False), (u_sq, False), (p_sq, False)]
        dots = []
        for buffer, i in zip(self._buffer, present, strict=True):
            g = grads[i]
            if g.shape != buffer.shape:  # type: ignore[union-attr]
                self.reset()
                return "copy", []
            dots.append(dot(g, buffer))  # type: ignore[arg-type]
        self._copy(params, present)  # after the read: the buffer starts the next sample
        return "close", [(dots, False)]

    def finish(
        self, phase: str, values: list[float], loss: float
    ) -> tuple[float, float, float] | None:
        """Advance with the synced reductions of `products`; a completed sample, if any.

        Returns (r, Armijo ratio, log10 |u| / |theta|) when the step closed a sample, with nan
        for a part that is undefined (a zero denominator), and None otherwise.
        """
        if phase == "copy":
            self._phase = "form"
            return None
        if phase == "form":
            dot, u_sq, p_sq = values
            self._denominator, self._loss_before = dot, loss
            self._size = 0.5 * math.log10(u_sq / p_sq) if u_sq > 0 and p_sq > 0 else math.nan
            self._phase = "close"
            return None
        self._phase = "form"  # the close step already copied the parameters
        d = self._denominator
        if not (math.isfinite(d) and d != 0.0):
            return None
        # Divided by -|d| rather than d: for a descent step (d < 0) the same, and for a step
        # that went uphill at its start (momentum carrying past a minimum), a loss still rising
        # at the end of the step reads as negative (overshoot), not as "too short".
        slope = _clip(-values[0] / abs(d))
        armijo = _clip(-(loss - self._loss_before) / abs(d))
        return slope, armijo, self._size

    def _copy(self, params: list[torch.Tensor], present: tuple[int, ...]) -> None:
        if present != self._buffered or len(self._buffer) != len(present):
            self._buffer = []
        flats = [_flat(params[i]) for i in present]
        buffers = []
        for j, flat in enumerate(flats):
            buffer = self._buffer[j] if j < len(self._buffer) else None
            if buffer is None or buffer.shape != flat.shape or buffer.device != flat.device:
                buffer = torch.empty_like(flat)
            buffers.append(buffer)
        if _batched(flats):
            torch._foreach_copy_(buffers, flats)
        else:
            for buffer, flat in zip(buffers, flats, strict=True):
                buffer.copy_(flat)
        self._buffer, self._buffered = buffers, present
        self._phase = "form"

    def state_dict(self) -> dict:
        return {
            "phase": self._phase,
            "buffer": [b.clone() for b in self._buffer],
            "buffered": list(self._buffered),
            "denominator": self._denominator,
            "loss_before": self._loss_before,
            "size": self._size,
        }

    def load_state_dict(self, state: dict) -> None:
        self._phase = str(state["phase"])
        self._buffer = [b.clone() for b in state["buffer"]]
        self._buffered = tuple(int(i) for i in state["buffered"])
        self._denominator = float(state["denominator"])
        self._loss_before = float(state["loss_before"])
        self._size = float(state["size"])


def _clip(x: float) -> float:
    return min(_SLOPE_CLIP, max(-_SLOPE_CLIP, x)) if math.isfinite(x) else math.nan


class FeatureTracker:
    """Computes the observation of a learning-rate controller from a training run.

    Call `update(loss, grads)` after every optimizer step and `observation()` whenever the
    controller decides; `observation()` closes the current block of steps. `update` reads the
    step's values at once; `queue` and `finish` split it, so that a loop on an accelerator can
    read a step's values one step later (see the module docstring).

    Args:
        interval: steps per decision (k); the gradient alignment is measured between the last
            two steps before each decision.
        history: number of past decisions kept for the loss rank feature (M in Hansen's paper).
        noise_window: number of past steps over which the loss noise is measured.
        dense: read the gradients on every step, so that ``grad_noise`` averages every pair of
            successive gradients in the block rather than only the last pair.
        features: the names of the features that will be read (default: all). Gradients are
            kept between steps only for the gradient features, and the parameters are copied
            only for the update features, so a selection without either costs less.

    Example:
        >>> tracker = FeatureTracker(interval=5)
        >>> for _ in range(5):
        ...     loss = model_loss(); loss.backward(); optimizer.step()
        ...     tracker.update(loss.item(), [p.grad for p in model.parameters()])
        ...     optimizer.zero_grad()
        >>> obs = tracker.observation()  # np.float32 vector of length OBS_DIM in [-1, 1]
    """

    version = FEATURE_VERSION
    names = FEATURE_NAMES

    def __init__(
        self,
        interval: int = 1,
        history: int = 5,
        noise_window: int = 10,
        dense: bool = False,
        features: Iterable[str] | None = None,
    ) -> None:
        if interval < 1:
            raise ValueError(f"interval must be >= 1, got {interval}")
        if history < 1:
            raise ValueError(f"history must be >= 1, got {history}")
        if noise_window < 2:
            raise ValueError(f"noise_window must be >= 2, got {noise_window}")
        self.interval = int(interval)
        self._copy_on_cpu = True  # see the module docstring; tests switch it off
        self.history = history
        self.noise_window = noise_window
        self.dense = bool(dense)
        selected = set(FEATURE_NAMES if features is None else features)
        unknown = sorted(selected - set(FEATURE_NAMES))
        if unknown:
            raise ValueError(f"unknown features {unknown}; valid: {list(FEATURE_NAMES)}")
        self.reads_gradients = bool(selected & GRADIENT_FEATURES)
        self.reads_updates = bool(selected & UPDATE_FEATURES)
        self._chain = UpdateChain()
        self.reset()

    def reset(self) -> None:
        """Forget the run: the next update starts a new one."""
        self._prev_grads: list[torch.Tensor | None] | None = None  # kept for the next step
        self._prev_versions: list[int] = []
        self._prev_grad_norm_sq = math.nan
        self._copy_grads = False  # switched on once gradients turn out to be reused in place
        self._buffers: list[torch.Tensor | None] = []  # owned copies, used in copy mode only
        self._last_loss = math.nan
        self._best_loss = math.inf
        self._decision_losses: deque[float] = deque(maxlen=self.history)
        self._step_changes: deque[float] = deque(maxlen=self.noise_window)
        self._block_start_loss = math.nan
        self._block_start_grad_norm = math.nan
        self._block: list[StepStats] = []
        self._decision_grad_norm: float | None = None
        self._log10_lr_change = 0.0  # sum of log10 of every factor the rate was scaled by
        self._log2_batch_change = 0.0  # likewise for the batch size
        self.reference_loss = math.nan  # mean loss of the last closed block (spike guard)
        self.steps = 0
        self._chain.reset()
        self._pending: _PendingStep | None = None  # queued, not yet read
        self._slopes: deque[float] = deque(maxlen=_UPDATE_WINDOW)  # latest samples of r
        self._armijo: deque[float] = deque(maxlen=_UPDATE_WINDOW)
        self._sizes: deque[float] = deque(maxlen=_UPDATE_WINDOW)  # log10 |u| / |theta|

    def record_lr_change(self, factor: float) -> None:
        """Note that the learning rate was just multiplied by `factor` (for ``lr_drift``)."""
        if factor > 0 and math.isfinite(factor):
            self._log10_lr_change += math.log10(factor)

    def record_batch_change(self, factor: float) -> None:
        """Note that the batch size was just multiplied by `factor` (for ``batch_growth``)."""
        if factor > 0 and math.isfinite(factor):
            self._log2_batch_change += math.log2(factor)

    @property
    def lr_change_decades(self) -> float:
        """log10(rate / starting rate), from every factor recorded since the run started."""
        return self._log10_lr_change

    @property
    def last_loss(self) -> float:
        """The latest finite loss recorded (nan before the first; a queued step not counted)."""
        return self._last_loss

    @property
    def block_length(self) -> int:
        """Number of steps recorded since the last observation, a queued one included."""
        return len(self._block) + (self._pending is not None)

    @property
    def pending(self) -> bool:
        """Whether a step is queued whose values `finish` has not read yet."""
        return self._pending is not None

    # ------------------------------------------------------------------ per step
    def update(
        self,
        loss: float | torch.Tensor,
        grads: Iterable[torch.Tensor | None],
        params: Iterable[torch.Tensor] | None = None,
    ) -> StepStats:
        """Record one optimizer step: its loss, the gradients it used and, for the update
        features, the parameters it produced (in the same order as the gradients).

        The same as `queue` followed by `finish`: it reads the step's values at once.
        """
        self.queue(loss, grads, params)
        stats = self.finish()
        assert stats is not None
        return stats

    def queue(
        self,
        loss: float | torch.Tensor,
        grads: Iterable[torch.Tensor | None],
        params: Iterable[torch.Tensor] | None = None,
    ) -> None:
        """Queue one optimizer step's reductions on their device; nothing is read yet.

        `loss` is a float or a 0-dim tensor, which stays on its device with the reductions.
        On CUDA they are copied to pinned host memory without blocking; `finish` reads them,
        waiting only if the device has not got there yet. A step still queued is finished
        first: the gradients and parameters of the step before decide what this one computes.
        """
        if self._pending is not None:
            self.finish()
        position = len(self._block)  # steps already in this block
        interval = self.interval
        # Gradients are read only where a feature needs them: the block's last step (alignment
        # with the step before, gradient norm), that step before, and the run's first step (the
        # first block's reference norm). Other steps cost nothing but the loss.
        align = position + 1 >= interval
        keep = position + 2 == interval or interval == 1 or position + 1 > interval
        if self.dense:
            align = keep = True
        measure = self.reads_gradients and (
            align or keep or (position == 0 and not self._decision_losses)
        )
        chained = self.reads_updates and params is not None
        flats: list[torch.Tensor | None] = []
        if measure or chained:  # else the gradients are not even listed
            flats = [None if g is None else _flat(g) for g in grads]
        groups: list[_Terms] = []  # each reduction's per-parameter terms
        if measure:
            groups += self._grad_products(flats, align)
        n_grad = len(groups)  # |g|^2, then g . g_prev when there was a kept gradient
        phase = "copy"
        if chained:
            phase, chain_groups = self._chain.products(flats, list(params))  # type: ignore[arg-type]
            groups += chain_groups
        self._prev_grads = None
        if measure and keep:
            # Kept now, since the loop zeroes the gradients before the next call; `finish`
            # drops them again if the step turns out not to be finite.
            self._keep_grads(flats)
        terms = [t for group, _ in groups for t in group]
        loss_value = math.nan
        if isinstance(loss, torch.Tensor):
            loss = loss.detach()
            if loss.dim():
                loss = loss.reshape(())
            if loss.dtype != torch.float32:
                loss = loss.float()  # read as the float32 it always was
            terms.append(loss)  # read last
        else:
            loss_value = float(loss)
        self._pending = _PendingStep(
            loss=loss_value,
            loss_in_values=isinstance(loss, torch.Tensor),
            values=_Readback(terms) if terms else None,
            sizes=tuple((len(group), squared) for group, squared in groups),
            n_grad=n_grad,
            measure=measure,
            align=align,
            keep=keep,
            phase=phase,
            chained=chained,
        )
        self.steps += 1

    def finish(self) -> StepStats | None:
        """Read the queued step's values (one host transfer) and fold them into the features.

        Returns what the tracker extracted from the step, or None when no step is queued.
        """
        pending, self._pending = self._pending, None
        if pending is None:
            return None
        raw = pending.values.read() if pending.values is not None else []
        loss = raw.pop() if pending.loss_in_values else pending.loss
        # The per-parameter terms are summed here, in double precision.
        values, start = [], 0
        for size, squared in pending.sizes:
            chunk = raw[start : start + size]
            values.append(sum(x * x for x in chunk) if squared else sum(chunk))
            start += size
        measure, align, keep = pending.measure, pending.align, pending.keep
        grad_norm_sq, grad_dot_prev = math.nan, math.nan
        if measure:
            grad_norm_sq = values[0] if pending.n_grad else 0.0
            grad_dot_prev = values[1] if pending.n_grad > 1 else math.nan
        chain_values = values[pending.n_grad :]
        finite = (
            math.isfinite(loss)
            and (not measure or math.isfinite(grad_norm_sq))
            and all(math.isfinite(v) for v in chain_values)
        )
        if pending.chained:
            if finite:
                self._record_update(self._chain.finish(pending.phase, chain_values, loss))
            else:
                self._chain.reset()
        stats = StepStats(
            loss=loss,
            grad_norm_sq=grad_norm_sq,
            grad_dot_prev=grad_dot_prev if align else math.nan,
            prev_grad_norm_sq=self._prev_grad_norm_sq if align else math.nan,
            finite=finite,
        )
        self._prev_grad_norm_sq = math.nan
        if finite:
            if math.isfinite(self._last_loss):
                self._step_changes.append(relative_change(loss, self._last_loss))
            if not math.isfinite(self.reference_loss):
                self.reference_loss = loss  # the run's first loss, until a block closes
            if not math.isfinite(self._block_start_loss):
                self._block_start_loss = loss
                self._block_start_grad_norm = math.sqrt(grad_norm_sq)
            self._best_loss = min(self._best_loss, loss)
            self._last_loss = loss
            if keep and self.reads_gradients:
                self._prev_grad_norm_sq = grad_norm_sq
        else:
            self._prev_grads = None  # kept by `queue`; a non-finite gradient is no reference
        self._block.append(stats)
        return stats

    def _record_update(self, sample: tuple[float, float, float] | None) -> None:
        if sample is None:
            return
        for window, value in zip((self._slopes, self._armijo, self._sizes), sample, strict=True):
            if math.isfinite(value):
                window.append(value)

    def _grad_products(self, flats: list[torch.Tensor | None], align: bool) -> list[_Terms]:
        """Per-parameter terms of |g|^2 and, when `align`, of g . g_prev (0-dim tensors)."""
        present = [flat for flat in flats if flat is not None]
        if not present:
            return []
        prev = self._usable_prev_grads(len(flats)) if align else None
        pairs = [
            (flat, p)
            for flat, p in zip(flats, prev or [None] * len(flats), strict=True)
            if flat is not None
            and p is not None
            and p.shape == flat.shape
            and p.dtype == flat.dtype
        ]
        if _batched(present):
            squares = _squares(present)
            dots = [torch.dot(flat, p) for flat, p in pairs]
        else:
            # One parameter at a time, both products while its gradient is in cache.
            partner = {id(flat): p for flat, p in pairs}
            norms, dots = [], []
            for flat in present:
                norms.append(torch.dot(flat, flat))
                if id(flat) in partner:
                    dots.append(torch.dot(flat, partner[id(flat)]))
            squares = (norms, False)
        return [squares, (dots, False)] if dots else [squares]

    def _usable_prev_grads(self, count: int) -> list[torch.Tensor | None] | None:
        """The kept gradients, or None if the loop has overwritten them in place since."""
        prev = self._prev_grads
        if prev is None or len(prev) != count:
            return None
        for p, version in zip(prev, self._prev_versions, strict=True):
            if p is not None and p._version != version:
                self._copy_grads = True
                return None
        return prev

    def _keep_grads(self, flats: list[torch.Tensor | None]) -> None:
        if len(self._buffers) != len(flats):
            self._buffers = [None] * len(flats)
        kept: list[torch.Tensor | None] = []
        for i, flat in enumerate(flats):
            if flat is None:
                kept.append(None)
                continue
            if self._copy_grads or (flat.device.type == "cpu" and self._copy_on_cpu):
                buffer = self._buffers[i]
                if buffer is None or buffer.shape != flat.shape or buffer.dtype != flat.dtype:
                    buffer = self._buffers[i] = torch.empty_like(flat)
                flat = buffer.copy_(flat)
            kept.append(flat)
        self._prev_grads = kept
        self._prev_versions = [0 if p is None else p._version for p in kept]

    # ------------------------------------------------------------------ per decision
    def observation(self, progress: float | None = None) -> np.ndarray:
        """Features of the steps since the last call, float32 in [-1, 1]; closes the block.

        Args:
            progress: the fraction of the run's budget spent so far, when the budget is known
                (clipped to [0, 1]: a run past its budget reads 1); None when it is not.
        """
        self.finish()  # a step still queued belongs to this block
        block, self._block = self._block, []
        finite_steps = [s for s in block if s.finite]
        obs = np.zeros(OBS_DIM, dtype=np.float64)
        obs[9] = 1.0 if len(finite_steps) < len(block) else 0.0
        obs[10] = math.tanh(self._log10_lr_change / _DRIFT_DECADES)
        obs[12] = math.tanh(self._log2_batch_change / _GROWTH_DOUBLINGS)
        obs[13:17] = self._update_features()
        if progress is not None and math.isfinite(progress):
            obs[17], obs[18] = min(1.0, max(0.0, progress)), 1.0
        if finite_steps:
            obs[:9] = self._finite_features(finite_steps)
            obs[11] = _gradient_disagreement(finite_steps)
            self.reference_loss = _mean([s.loss for s in finite_steps])
            self._decision_losses.append(self._last_loss)
            self._decision_grad_norm = math.sqrt(finite_steps[-1].grad_norm_sq)
        self._block_start_loss = math.nan
        self._block_start_grad_norm = math.nan
        # NaN reads 0 and infinities the bounds; done on a list, a few numpy calls fewer per
        # decision than nan_to_num and clip, with the same float32 values.
        bounded = [0.0 if math.isnan(v) else min(OBS_HIGH, max(OBS_LOW, v)) for v in obs.tolist()]
        return np.array(bounded, dtype=np.float32)

    def _update_features(self) -> list[float]:
        """update_slope, its spread, armijo_ratio and update_size over the latest samples."""
        slopes = list(self._slopes)
        spread_value = float(np.std(slopes)) / _SLOPE_CLIP if len(slopes) >= 2 else 0.0
        size = _median(list(self._sizes)) if self._sizes else math.nan
        return [
            _median(slopes) / _SLOPE_CLIP if slopes else 0.0,
            min(1.0, spread_value),
            _median(list(self._armijo)) / _SLOPE_CLIP if self._armijo else 0.0,
            math.tanh((size + _SIZE_CENTRE) / _SIZE_DECADES) if math.isfinite(size) else 0.0,
        ]

    def _finite_features(self, steps: list[StepStats]) -> list[float]:
        loss = self._last_loss
        changes = list(self._step_changes)
        # The block's reference point: the previous decision, or the block's first step.
        if self._decision_losses:
            block_change = relative_change(loss, self._decision_losses[-1])
            grad_start = self._decision_grad_norm
        else:
            block_change = relative_change(loss, self._block_start_loss)
            grad_start = self._block_start_grad_norm
        rank = 0.0
        if self._decision_losses:
            if loss < min(self._decision_losses):
                rank = 1.0
            elif loss > max(self._decision_losses):
                rank = -1.0
        recent = changes[-len(steps) :]
        cosines, projections = [], []
        for s in steps:
            if s.prev_grad_norm_sq > 0 and math.isfinite(s.grad_dot_prev):
                projections.append(s.grad_dot_prev / s.prev_grad_norm_sq)
                norms = math.sqrt(s.prev_grad_norm_sq * s.grad_norm_sq)
                if norms > 0:
                    cosines.append(s.grad_dot_prev / norms)
        grad_norm = math.sqrt(steps[-1].grad_norm_sq)
        start_norm = _finite(math.nan if grad_start is None else grad_start, grad_norm)
        return [
            spread(changes[-1]) if changes else 0.0,
            spread(block_change),
            spread(max(0.0, relative_change(loss, self._best_loss))),
            rank,
            sum(c > 0 for c in recent) / len(recent) if recent else 0.0,
            spread(float(np.std(changes))) if len(changes) >= 2 else 0.0,
            _mean(cosines),
            math.tanh(_mean(projections)),
            spread(relative_change(grad_norm, start_norm)),
        ]

    # ------------------------------------------------------------------ persistence
    def state_dict(self) -> dict:
        """Everything needed to continue the same feature stream, tensors included.

        A step still queued is finished first (its values read), so the state is complete.
        """
        self.finish()
        return {
            "version": self.version,
            "interval": self.interval,
            "copy_grads": self._copy_grads,
            "history": self.history,
            "noise_window": self.noise_window,
            "prev_grads": None if self._prev_grads is None else list(self._prev_grads),
            "prev_grad_norm_sq": self._prev_grad_norm_sq,
            "last_loss": self._last_loss,
            "best_loss": self._best_loss,
            "decision_losses": list(self._decision_losses),
            "decision_grad_norm": self._decision_grad_norm,
            "step_changes": list(self._step_changes),
            "log10_lr_change": self._log10_lr_change,
            "log2_batch_change": self._log2_batch_change,
            "dense": self.dense,
            "reference_loss": self.reference_loss,
            "block_start_loss": self._block_start_loss,
            "block_start_grad_norm": self._block_start_grad_norm,
            "block": [vars(s).copy() for s in self._block],
            "steps": self.steps,
            "chain": self._chain.state_dict(),
            "slopes": list(self._slopes),
            "armijo": list(self._armijo),
            "sizes": list(self._sizes),
        }

    def load_state_dict(self, state: dict) -> None:
        # Older states lack only the fields added since (batch, update chain), whose defaults
        # are exact for a run that never read them.
        if state.get("version") not in range(2, self.version + 1):
            raise ValueError(
                f"feature state has version {state.get('version')!r}, this tracker reads "
                f"versions 2 to {self.version}"
            )
        self.interval = int(state["interval"])
        self.history = int(state["history"])
        self.noise_window = int(state["noise_window"])
        self.reset()
        self._copy_grads = bool(state["copy_grads"])
        prev = state["prev_grads"]
        if prev is not None:
            self._prev_grads = [None if g is None else g.clone() for g in prev]
            self._prev_versions = [0 if g is None else g._version for g in self._prev_grads]
        self._prev_grad_norm_sq = float(state["prev_grad_norm_sq"])
        self._last_loss = float(state["last_loss"])
        self._best_loss = float(state["best_loss"])
        self._decision_losses.extend(float(x) for x in state["decision_losses"])
        dgn = state["decision_grad_norm"]
        self._decision_grad_norm = None if dgn is None else float(dgn)
        self._step_changes.extend(float(x) for x in state["step_changes"])
        self._log10_lr_change = float(state["log10_lr_change"])
        self._log2_batch_change = float(state.get("log2_batch_change", 0.0))
        self.dense = bool(state.get("dense", self.dense))
        self.reference_loss = float(state["reference_loss"])
        self._block_start_loss = float(state["block_start_loss"])
        self._block_start_grad_norm = float(state["block_start_grad_norm"])
        self._block = [StepStats(**s) for s in state["block"]]
        self.steps = int(state["steps"])
        if "chain" in state:
            self._chain.load_state_dict(state["chain"])
            for name in ("slopes", "armijo", "sizes"):
                getattr(self, f"_{name}").extend(float(x) for x in state[name])


def _gradient_disagreement(steps: list[StepStats]) -> float:
    """Mean over successive gradient pairs of |g - g'|^2 / (2 (|g|^2 + |g'|^2)), in [0, 1].

    Two minibatch gradients taken at nearly the same point differ by their noise: the value is
    about half the fraction of |g|^2 that is noise (0.5 for pure noise, 0 for none), and above
    0.5 only when successive gradients point against each other (overshooting).
    """
    values = []
    for s in steps:
        total = s.grad_norm_sq + s.prev_grad_norm_sq
        if total > 0 and math.isfinite(s.grad_dot_prev) and math.isfinite(total):
            values.append(0.5 - s.grad_dot_prev / total)
    return _mean(values)


_Terms = tuple[list[torch.Tensor], bool]
"""A reduction as per-parameter 0-dim terms, summed on the host; True when the terms are
norms, to be squared first (see `_squares`)."""

_FOREACH_ON_CPU = False  # tests switch it on to check the multi-tensor path against the other


def _batched(tensors: list[torch.Tensor]) -> bool:
    """Whether to use multi-tensor kernels: on an accelerator one launch per parameter costs
    more than the work; on the CPU a loop keeps each parameter in cache while it is read, and
    the sums stay bit for bit what they were."""
    return len(tensors) > 1 and (tensors[0].device.type != "cpu" or _FOREACH_ON_CPU)


def _squares(tensors: list[torch.Tensor]) -> _Terms:
    """The terms of sum |x|^2 over the tensors: dot products, or norms in one launch."""
    if _batched(tensors):
        return list(torch._foreach_norm(tensors)), True
    return [torch.dot(t, t) for t in tensors], False


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else 0.5 * (ordered[middle - 1] + ordered[middle])


def _flat(grad: torch.Tensor) -> torch.Tensor:
    """A dense 1-D view of a gradient, in at least single precision (half overflows in a dot)."""
    grad = grad.detach()
    if grad.is_sparse:
        grad = grad.to_dense()
    flat = grad.reshape(-1)
    if flat.dtype in (torch.float16, torch.bfloat16):
        flat = flat.float()
    return flat
