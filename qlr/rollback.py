"""`Snapshot`: the last good state of a run, to roll back to when a step overflows or diverges.

A guard that only cuts the rate acts after the damage: the scheduler reads a step one step
later, so by the time a non-finite loss or a loss spike is seen, the parameters may already be
infinite and the run is lost whatever the rate. `QLRScheduler` therefore keeps copies of the
parameters and of the optimizer's state, and on a non-finite loss or gradient, or a real
divergence, it restores them before cutting the rate.

A state is known to be good only once the losses computed from it are seen: the parameters a
decision leaves are judged by the next block's losses. So a snapshot is taken as a candidate
(`save`), becomes the state to return to once the block after it was good (`confirm`), and
only a confirmed state is restored. That needs two copies: the confirmed one and the candidate.

Memory: two copies of the parameters and of the optimizer's state (for Adam, its two moments
and step counts), on their own device, or on the host with ``device="cpu"``; under sharded
training, this rank's shards only. Time: one copy of all of it at every snapshot, made in place
into buffers allocated once; nothing between snapshots.
"""

from __future__ import annotations

from typing import Any

import torch


class _Copy:
    """One copy of the parameters and the optimizer's state, refreshed in place."""

    def __init__(self, device: torch.device | None) -> None:
        self.device = device
        self.params: list[torch.Tensor] = []
        self.state: list[dict[str, Any]] = []

    def take(self, optimizer: torch.optim.Optimizer, params: list[torch.Tensor]) -> None:
        if len(self.params) != len(params) or any(
            kept.shape != p.shape or kept.dtype != p.dtype
            for kept, p in zip(self.params, params, strict=True)
        ):
            self.params = [self._new(p) for p in params]
        else:
            for kept, p in zip(self.params, params, strict=True):
                kept.copy_(p.detach())
        previous = self.state
        self.state = []
        for i, p in enumerate(params):
            before = previous[i] if i < len(previous) else {}
            saved: dict[str, Any] = {}
            for key, value in optimizer.state.get(p, {}).items():
                old: Any = before.get(key)
                if not torch.is_tensor(value):
                    saved[key] = value
                elif torch.is_tensor(old) and old.shape == value.shape and old.dtype == value.dtype:
                    saved[key] = old.copy_(value)
                else:
                    saved[key] = self._new(value)
            self.state.append(saved)

    def put_back(self, optimizer: torch.optim.Optimizer, params: list[torch.Tensor]) -> None:
        for p, kept in zip(params, self.params, strict=True):
            p.detach().copy_(kept)
        for p, saved in zip(params, self.state, strict=True):
            if not saved:  # the optimizer had no state for it yet: it starts afresh again
                optimizer.state.pop(p, None)
                continue
            current = optimizer.state[p]
            for key, value in saved.items():
                target = current.get(key)
                if not torch.is_tensor(value):
                    current[key] = value
                elif torch.is_tensor(target) and target.shape == value.shape:
                    target.copy_(value)
                else:  # a copy of its own: the optimizer must never write into the saved one
                    current[key] = value.to(
                        p.device if target is None else target.device, copy=True
                    )
            for key in [k for k in current if k not in saved]:
                del current[key]

    @property
    def nbytes(self) -> int:
        tensors = list(self.params) + [
            v for s in self.state for v in s.values() if torch.is_tensor(v)
        ]
        return sum(t.numel() * t.element_size() for t in tensors)

    def _new(self, tensor: torch.Tensor) -> torch.Tensor:
        copy = tensor.detach().clone()
        return copy if self.device is None else copy.to(self.device)


class Snapshot:
    """The confirmed good state of a run and a candidate, of an optimizer's parameters and state.

    Args:
        optimizer: the optimizer whose parameters (every param group's) and state are kept.
        device: where the copies live: None for each tensor's own device, or e.g. ``"cpu"`` to
            keep them in host memory (slower to take and restore on an accelerator).
    """

    def __init__(
        self, optimizer: torch.optim.Optimizer, device: str | torch.device | None = None
    ) -> None:
        self.optimizer = optimizer
        device = None if device is None else torch.device(device)
        self._good = _Copy(device)
        self._candidate = _Copy(device)
        self.saved = False  # whether a confirmed state exists
        self.pending = False  # whether a candidate awaits confirmation

    def _tracked(self) -> list[torch.Tensor]:
        return [p for group in self.optimizer.param_groups for p in group["params"]]

    @torch.no_grad()
    def save(self) -> None:
        """Copy the parameters and the optimizer's state as the candidate."""
        self._candidate.take(self.optimizer, self._tracked())
        self.pending = True

    def confirm(self) -> None:
        """The candidate proved good: it becomes the state `restore` returns to."""
        if self.pending:
            self._good, self._candidate = self._candidate, self._good
            self.saved, self.pending = True, False

    def discard(self) -> None:
        """Forget the candidate (the block after it failed) and, after a restored state dict,
        nothing is confirmed either."""
        self.pending = False

    @torch.no_grad()
    def restore(self) -> None:
        """Put the confirmed parameters and optimizer state back, in place, bit for bit."""
        if self.saved:
            self._good.put_back(self.optimizer, self._tracked())
        self.pending = False

    @property
    def nbytes(self) -> int:
        """Bytes the copies hold."""
        return self._good.nbytes + self._candidate.nbytes
