"""The features a learning-rate controller observes: their names and order, what each
version reads, their bounds, and the scale-free maps their values go through.

Every feature is invariant to the scale of the loss, the size of the gradients and the number of
parameters, so one controller transfers across problems: losses enter only as relative changes,
gradients only through cosines and ratios of inner products. No feature depends on the absolute
learning rate, the step count or the total number of steps, since deployment rarely knows them;
``lr_drift`` only says how far the controller has moved the rate from where the run started
(a ratio, so it is as scale-free as the rest).

Version history: 1 had the first ten features; 2 appended ``lr_drift``; 3 appended ``grad_noise``
and ``batch_growth`` for controllers that also set the batch size; 4 appended four statistics of
the update the optimizer actually took (below); 5 appended ``progress`` and ``budget_known``,
for a run whose budget of steps is known (0 and 0 when it is not); 6 appended ``lr_ceiling``,
how close the rate sits to the ceiling the rollback guard keeps after a failure. Earlier
features never change meaning, so an older policy reads its features as a subset of the newer
ones.

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
`qlr.update_chain` samples them with one parameter-sized buffer, a sample every second step;
`qlr.features.FeatureTracker` computes every feature from a training run.
"""

from __future__ import annotations

import math

FEATURE_VERSION = 6

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
    "lr_ceiling",  # 1 - tanh(log10(ceiling / rate)) below a rate that failed; 0 with none
)
FEATURES_V1 = FEATURE_NAMES[:10]  # what a version-1 policy reads
FEATURES_V2 = FEATURE_NAMES[:11]  # what a version-2 policy reads
FEATURES_V3 = FEATURE_NAMES[:13]  # what a version-3 policy reads
FEATURES_V4 = FEATURE_NAMES[:17]  # what a version-4 policy reads
FEATURES_V5 = FEATURE_NAMES[:19]  # what a version-5 policy reads
FEATURES_BY_VERSION = {
    1: FEATURES_V1,
    2: FEATURES_V2,
    3: FEATURES_V3,
    4: FEATURES_V4,
    5: FEATURES_V5,
    6: FEATURE_NAMES,
}
GRADIENT_FEATURES = frozenset({"grad_cosine", "grad_projection", "grad_norm_change", "grad_noise"})
"""Features that need the tracker to keep a gradient between steps."""
UPDATE_FEATURES = frozenset({"update_slope", "update_slope_spread", "armijo_ratio", "update_size"})
"""Features that need the update chain (one copy of the parameters)."""


def lr_ceiling(ceiling: float | None, lr: float) -> float:
    """``lr_ceiling``: 1 - tanh(log10(ceiling / lr)); 1 at or above the ceiling, 0 with none.

    After a failure the rollback guard keeps the rate below half the rate that failed while
    that ceiling relaxes (`qlr.LRController.remember_failure`); this says how close the rate
    is to it (0.24 a decade below), as a ratio of rates, so it is as scale-free as
    ``lr_drift``. With no failure remembered it reads 0, as if the ceiling were far away.
    """
    if ceiling is None:
        return 0.0
    if not (lr > 0 and math.isfinite(lr)):
        return 1.0
    return 1.0 - math.tanh(max(0.0, math.log10(ceiling / lr)))


OBS_DIM = len(FEATURE_NAMES)
OBS_LOW = -1.0
OBS_HIGH = 1.0

# Relative changes are spread with a log so that a 1 % change is visible next to a 50 % one.
_SPREAD = 100.0
_LOG_SPREAD = math.log1p(_SPREAD)
_TINY = 1e-300


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
