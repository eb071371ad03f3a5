"""The update features: statistics of the update the optimizer took, from one parameter buffer.

The update features (``update_slope``, ``update_slope_spread``, ``armijo_ratio``,
``update_size``, defined in `qlr.feature_set`) need, for the update u_t = theta_t - theta_{t-1},
the slope of the loss along it before and after the step: g(theta_{t-1}) . u_t and
g(theta_t) . u_t. `UpdateChain` samples them; `UpdateSamples` keeps the latest samples and
computes the four features over them, for `qlr.features.FeatureTracker`.

In a loop that steps the scheduler after ``optimizer.step()``, at call t the parameters are
theta_t and ``p.grad`` is g(theta_{t-1}). So one parameter-sized buffer is enough: it holds
theta_{t-1} (copied at call t-1), becomes u_t at call t (where g(theta_{t-1}) . u_t is read) and
gives the numerator g(theta_t) . u_t at call t+1, where the next sample starts by copying the
parameters again. A sample completes every second step, whatever the decision interval.
"""

from __future__ import annotations

import math
from collections import deque
from enum import Enum

import numpy as np
import torch

from qlr._readback import Terms, flat_param, squares, use_foreach

SLOPE_CLIP = 2.0
"""The slope ratio r and the Armijo ratio are clipped to +-2 (beyond, "far too long" is all
there is to say); the update features divide them by it, so they read in [-1, 1]."""
_SIZE_CENTRE = 3.0  # update_size is 0 at |u| / |theta| = 1e-3, a typical healthy relative step
_SIZE_DECADES = 2.0  # ... and tanh(+-1) two decades away
_UPDATE_WINDOW = 4  # the update features read the last 4 samples (about 8 steps): two of them
# from the block just ended, the rest from the one before. A median over 4 is the mean of the
# middle two, which follows a rate that oscillates (Adam far above its stable rate alternates
# uphill and downhill steps) and still ignores one wild minibatch.


class ChainPhase(Enum):
    """Where the chain stands; the value is what a state dict records."""

    COPY = "copy"  # nothing usable in the buffer: the next step copies the parameters
    FORM = "form"  # the buffer holds theta_{t-1}; the next step turns it into u_t
    CLOSE = "close"  # the buffer holds u_t; the next step reads g(theta_t) . u_t


class UpdateChain:
    """Samples the slope ratio r, the Armijo ratio and |u| / |theta| with one parameter buffer.

    The buffer is a copy of the parameters in their own dtype (this rank's shards under
    sharded training): u = theta_t - theta_{t-1} of two nearby values of one format is exact
    in that format, and the products are taken in at least single precision.

    Fed every step with the loss, the gradients and the parameters (see the module docstring
    for the timing), it cycles through two phases: `ChainPhase.FORM` (the buffer holds
    theta_{t-1}; it becomes u_t in place and g(theta_{t-1}) . u_t, |u_t|^2, |theta_t|^2 are
    read) and `ChainPhase.CLOSE` (g(theta_t) . u_t gives r; then the buffer takes a copy of the
    parameters for the next sample). Before the first sample, and after anything that breaks
    the chain (a non-finite step, a change in which parameters have gradients), it starts with
    a copy (`ChainPhase.COPY`).

    Args:
        foreach: move the buffer and take the norms with multi-tensor kernels; None chooses by
            device (see `qlr._readback.use_foreach`).
    """

    def __init__(self, foreach: bool | None = None) -> None:
        self.foreach = foreach
        self._buffer: list[torch.Tensor] = []
        self._buffered: tuple[int, ...] = ()  # indices of the parameters the buffer covers
        self.reset()

    def reset(self) -> None:
        """Forget the pending sample; the next step starts a new chain with a copy."""
        self._phase = ChainPhase.COPY
        self._denominator = math.nan  # g(theta_{t-1}) . u_t of the pending sample
        self._loss_before = math.nan  # L(theta_{t-1}) of the pending sample
        self._size = math.nan  # log10 |u_t| / |theta_t| of the pending sample

    def products(
        self, grads: list[torch.Tensor | None], params: list[torch.Tensor]
    ) -> tuple[ChainPhase, list[Terms]]:
        """Queue this step's reductions; `finish` takes their sums once they are on the host.

        `grads` are the flat gradients (`qlr._readback.flat`, None where a parameter has none).
        Returns the phase the step was in and its reductions, each as per-parameter 0-dim terms
        (see `qlr._readback.Terms`): none for a copy, g . u, |u|^2 and |theta|^2 for a step
        that forms u, g . u for one that closes the sample.
        """
        present = tuple(i for i, g in enumerate(grads) if g is not None)
        if self._phase is not ChainPhase.COPY and present != self._buffered:
            self.reset()  # parameters started or stopped receiving gradients: start again
        phase = self._phase
        if phase is ChainPhase.COPY or not present:
            self._copy(params, present)
            return ChainPhase.COPY, []
        dot = torch.dot
        if phase is ChainPhase.FORM:
            flats = [flat_param(params[i]) for i in present]
            if any(f.shape != b.shape for f, b in zip(flats, self._buffer, strict=True)):
                self._copy(params, present)
                return ChainPhase.COPY, []
            grads_present = [grads[i] for i in present]
            if use_foreach(flats, self.foreach):
                torch._foreach_add_(self._buffer, flats, alpha=-1.0)  # theta_{t-1} - theta_t
                torch._foreach_neg_(self._buffer)  # the buffer becomes u_t, bit for bit
                pairs = zip(grads_present, self._buffer, strict=True)
                dots = [dot(g, _like(b, g)) for g, b in pairs]  # type: ignore[arg-type]
                u_sq, p_sq = squares(self._buffer, self.foreach), squares(flats, self.foreach)
                return ChainPhase.FORM, [(dots, False), u_sq, p_sq]
            dots, u_terms, p_terms = [], [], []
            for g, theta, buffer in zip(grads_present, flats, self._buffer, strict=True):
                # One parameter at a time, so that its update is still in cache for the dots.
                torch.sub(theta, buffer, out=buffer)  # the buffer becomes u_t
                u, theta = _like(buffer, g), _like(theta, g)  # type: ignore[arg-type]
                dots.append(dot(g, u))  # type: ignore[arg-type]
                u_terms.append(dot(u, u))
                p_terms.append(dot(theta, theta))
            return ChainPhase.FORM, [(dots, False), (u_terms, False), (p_terms, False)]
        dots = []
        for buffer, i in zip(self._buffer, present, strict=True):
            g = grads[i]
            if g.shape != buffer.shape:  # type: ignore[union-attr]
                self.reset()
                return ChainPhase.COPY, []
            dots.append(dot(g, _like(buffer, g)))  # type: ignore[arg-type]
        self._copy(params, present)  # after the read: the buffer starts the next sample
        return ChainPhase.CLOSE, [(dots, False)]

    def finish(
        self, phase: ChainPhase, values: list[float], loss: float
    ) -> tuple[float, float, float] | None:
        """Advance with the synced reductions of `products`; a completed sample, if any.

        Returns (r, Armijo ratio, log10 |u| / |theta|) when the step closed a sample, with nan
        for a part that is undefined (a zero denominator), and None otherwise.
        """
        if phase is ChainPhase.COPY:
            self._phase = ChainPhase.FORM
            return None
        if phase is ChainPhase.FORM:
            dot, u_sq, p_sq = values
            self._denominator, self._loss_before = dot, loss
            self._size = 0.5 * math.log10(u_sq / p_sq) if u_sq > 0 and p_sq > 0 else math.nan
            self._phase = ChainPhase.CLOSE
            return None
        self._phase = ChainPhase.FORM  # the close step already copied the parameters
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
        flats = [flat_param(params[i]) for i in present]
        buffers = []
        for j, theta in enumerate(flats):
            buffer = self._buffer[j] if j < len(self._buffer) else None
            if (
                buffer is None
                or buffer.shape != theta.shape
                or buffer.dtype != theta.dtype
                or buffer.device != theta.device
            ):
                buffer = torch.empty_like(theta)
            buffers.append(buffer)
        if use_foreach(flats, self.foreach):
            torch._foreach_copy_(buffers, flats)
        else:
            for buffer, theta in zip(buffers, flats, strict=True):
                buffer.copy_(theta)
        self._buffer, self._buffered = buffers, present
        self._phase = ChainPhase.FORM

    def restart(self) -> None:
        """Drop the buffer too (a restored chain): the next step starts a sample with a copy."""
        self.reset()
        self._buffer, self._buffered = [], ()

    @property
    def numel(self) -> int:
        """Elements the buffer holds."""
        return sum(b.numel() for b in self._buffer)


def _like(tensor: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """`tensor` in `other`'s dtype, for a dot product of the two (a half buffer, float grads)."""
    return tensor if tensor.dtype == other.dtype else tensor.to(other.dtype)


def _clip(x: float) -> float:
    return min(SLOPE_CLIP, max(-SLOPE_CLIP, x)) if math.isfinite(x) else math.nan


class UpdateSamples:
    """The latest samples of an `UpdateChain`, and the four update features over them."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget every sample (a new run)."""
        self.slopes: deque[float] = deque(maxlen=_UPDATE_WINDOW)  # latest samples of r
        self.armijo: deque[float] = deque(maxlen=_UPDATE_WINDOW)
        self.sizes: deque[float] = deque(maxlen=_UPDATE_WINDOW)  # log10 |u| / |theta|

    def record(self, sample: tuple[float, float, float] | None) -> None:
        """Keep a sample that `UpdateChain.finish` completed (its finite parts; None: none)."""
        if sample is None:
            return
        for window, value in zip((self.slopes, self.armijo, self.sizes), sample, strict=True):
            if math.isfinite(value):
                window.append(value)

    def features(self) -> dict[str, float]:
        """update_slope, its spread, armijo_ratio and update_size over the latest samples."""
        slopes = list(self.slopes)
        spread_value = float(np.std(slopes)) / SLOPE_CLIP if len(slopes) >= 2 else 0.0
        size = _median(list(self.sizes)) if self.sizes else math.nan
        return {
            "update_slope": _median(slopes) / SLOPE_CLIP if slopes else 0.0,
            "update_slope_spread": min(1.0, spread_value),
            "armijo_ratio": _median(list(self.armijo)) / SLOPE_CLIP if self.armijo else 0.0,
            "update_size": (
                math.tanh((size + _SIZE_CENTRE) / _SIZE_DECADES) if math.isfinite(size) else 0.0
            ),
        }


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else 0.5 * (ordered[middle - 1] + ordered[middle])
