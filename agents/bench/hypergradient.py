"""Hypergradient descent on the learning rate (Baydin et al., ICLR 2018): the ``hypergradient``
method of `qlr.agents.bench.baselines`.

SGD-HD, SGDN-HD and Adam-HD on the inner optimizer, with the hypergradient rates beta the paper
used (1e-3 for sgd, momentum and nesterov, 1e-7 for adam) and the rate kept at or above
`qlr.agents.bench.methods.MIN_LR`. The betas are scale-dependent (``g_t . g_{t-1}`` grows with
the square of the loss scale), which is part of what a learned, scale-free controller should fix.
"""

from __future__ import annotations

import math

import torch

from qlr.agents.bench.budget import Budget
from qlr.agents.bench.methods import MIN_LR, MethodResult, new_optimizer, run_scheduled
from qlr.control import reference_lr, scale_lr
from qlr.envs.problems import Problem

__all__ = ["HYPERGRADIENT_BETAS", "Hypergradient", "hypergradient_applies", "run_hypergradient"]

HYPERGRADIENT_BETAS: dict[str, float] = {
    "sgd": 1e-3,
    "momentum": 1e-3,
    "nesterov": 1e-3,
    "adam": 1e-7,
}
"""Hypergradient rate per inner optimizer: the values of Baydin et al. (2018), scale-dependent."""


class Hypergradient:
    """Hypergradient descent on the learning rate (Baydin et al., ICLR 2018) as a step hook.

    The paper's rule is ``a_t = a_{t-1} + beta * g_t . u_{t-1}``, applied before step t, where
    ``u`` is the optimizer's update direction (``theta_{t+1} = theta_t - a_t u_t``): the
    gradient for SGD (SGD-HD), the momentum buffer for SGD with momentum, ``m_hat / (sqrt(v_hat)
    + eps)`` for Adam (Adam-HD). A hook only runs after the step, so it redoes step t with the
    new rate (``theta_{t+1} -= (a_t' - a_t) u_t``): exact, because these directions do not
    depend on the rate. The rate is kept at or above `min_lr`, so it is never negative.

    Args:
        optimizer: a ``torch.optim.SGD`` (any momentum, no weight decay) or ``torch.optim.Adam``
            (no weight decay, no amsgrad).
        beta: the hypergradient rate.
        min_lr: floor of the first group's rate.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, beta: float, min_lr: float = MIN_LR):
        kind = type(optimizer)
        if kind not in (torch.optim.SGD, torch.optim.Adam):
            raise ValueError(f"hypergradient supports SGD and Adam, not {kind.__name__}")
        for group in optimizer.param_groups:
            if group.get("weight_decay", 0) or group.get("amsgrad", False):
                raise ValueError("hypergradient here supports no weight decay and no amsgrad")
        if not beta >= 0 or not min_lr > 0:
            raise ValueError(f"need beta >= 0 and min_lr > 0, got {beta} and {min_lr}")
        self.optimizer = optimizer
        self.beta = float(beta)
        self.min_lr = float(min_lr)
        self._previous: list[torch.Tensor] | None = None  # u_{t-1}, one tensor per param
        self.lrs: list[float] = []  # the rate each step finally used

    def step(self, loss: float) -> None:
        """Adjust the rate with ``g_t . u_{t-1}`` and redo the step just taken with it."""
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        grads = [torch.zeros_like(p) if p.grad is None else p.grad for p in params]
        directions = [self._direction(p, g) for p, g in zip(params, grads, strict=True)]
        lr = reference_lr(self.optimizer)
        if self._previous is not None:
            h = sum(
                float(g.flatten().dot(u.flatten()))
                for g, u in zip(grads, self._previous, strict=True)
            )
            new_lr = max(lr + self.beta * h, self.min_lr) if math.isfinite(h) else lr
            if new_lr != lr:
                self._redo(lr, new_lr, params, directions)
                lr = new_lr
        self._previous = directions
        self.lrs.append(lr)

    def _redo(self, lr: float, new_lr: float, params: list, directions: list) -> None:
        factor = new_lr / lr
        i = 0
        with torch.no_grad():
            for group in self.optimizer.param_groups:
                old = float(group["lr"])
                for p in group["params"]:
                    p.sub_(directions[i], alpha=old * (factor - 1.0))
                    i += 1
        scale_lr(self.optimizer, factor)

    def _direction(self, p: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        """The direction u_t of the step just taken, read from the optimizer's state."""
        state = self.optimizer.state.get(p, {})
        group = next(g for g in self.optimizer.param_groups if any(q is p for q in g["params"]))
        if isinstance(self.optimizer, torch.optim.Adam):
            step = float(state["step"])
            beta1, beta2 = group["betas"]
            denom = (state["exp_avg_sq"].sqrt() / math.sqrt(1 - beta2**step)).add_(group["eps"])
            return state["exp_avg"] / (1 - beta1**step) / denom
        momentum = group.get("momentum", 0.0)
        if not momentum:
            return grad.detach().clone()
        buf = state["momentum_buffer"]
        return grad + momentum * buf if group.get("nesterov", False) else buf.clone()


def run_hypergradient(problem: Problem, optimizer: str, lr: float, budget: Budget) -> MethodResult:
    """The ``hypergradient`` method: `Hypergradient` with the optimizer's beta."""
    opt = new_optimizer(problem, optimizer, lr)
    hd = Hypergradient(opt, HYPERGRADIENT_BETAS[optimizer])
    result = run_scheduled(problem, opt, budget, hd.step)
    result.lrs = hd.lrs + result.lrs[len(hd.lrs) :]  # the rates after each redone step
    return result


def hypergradient_applies(problem: Problem, optimizer: str | None) -> str | None:
    """Why the method cannot run with `optimizer` (no beta for it), or None."""
    if optimizer not in HYPERGRADIENT_BETAS:
        return f"hypergradient supports {sorted(HYPERGRADIENT_BETAS)}, not {optimizer}"
    return None
