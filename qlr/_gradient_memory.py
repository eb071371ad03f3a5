"""`GradientMemory`: the one gradient a step keeps for the next, and the products that read it.

The gradient features compare the block's last two gradients (g_t . g_{t-1}, |g|^2), so one
gradient is kept between those two steps; it is the only parameter-sized memory they need. On
the CPU it is copied into a buffer owned here: keeping a reference instead would hold a freed
gradient alive past ``zero_grad``, and the C allocator then hands the next backward pass fresh
pages to fault in, which costs far more than the copy. On accelerators, whose caching
allocators keep freed memory, a reference is kept when the loop sets gradients to None
(torch's default ``zero_grad``); if gradients are reused in place
(``zero_grad(set_to_none=False)``), their version counter shows it, and from then on they are
copied too.
"""

from __future__ import annotations

import torch

from qlr._readback import Terms, squares, use_foreach


class GradientMemory:
    """Keeps a step's gradients for the next step and takes |g|^2 and g . g_prev.

    Args:
        copy: True copies a kept gradient into a buffer owned here, False keeps a reference
            (copying from the first time the loop is seen to reuse gradients in place), None
            chooses by device: copies on the CPU, references on accelerators.
        foreach: take the norms with one multi-tensor kernel; None chooses by device (see
            `qlr._readback.use_foreach`).
    """

    def __init__(self, copy: bool | None = None, foreach: bool | None = None) -> None:
        self.copy = copy
        self.foreach = foreach
        self.reset()

    def reset(self) -> None:
        """Keep nothing, and forget that the loop was seen to reuse gradients in place."""
        self._kept: list[torch.Tensor | None] | None = None
        self._versions: list[int] = []
        self.reused_in_place = False  # switched on once gradients turn out to be reused
        self._buffers: list[torch.Tensor | None] = []  # owned copies, used in copy mode only

    @property
    def kept(self) -> list[torch.Tensor | None] | None:
        """The gradients kept by the last `keep`, None for a parameter without one."""
        return self._kept

    def forget(self) -> None:
        """Drop the kept gradients (a non-finite one is no reference for the next step)."""
        self._kept = None

    def products(self, flats: list[torch.Tensor | None], align: bool) -> list[Terms]:
        """Per-parameter terms of |g|^2 and, when `align`, of g . g_prev (0-dim tensors)."""
        present = [g for g in flats if g is not None]
        if not present:
            return []
        prev = self._usable(len(flats)) if align else None
        pairs = [
            (g, p)
            for g, p in zip(flats, prev or [None] * len(flats), strict=True)
            if g is not None and p is not None and p.shape == g.shape and p.dtype == g.dtype
        ]
        if use_foreach(present, self.foreach):
            norms = squares(present, self.foreach)
            dots = [torch.dot(g, p) for g, p in pairs]
        else:
            # One parameter at a time, both products while its gradient is in cache.
            partner = {id(g): p for g, p in pairs}
            terms, dots = [], []
            for g in present:
                terms.append(torch.dot(g, g))
                if id(g) in partner:
                    dots.append(torch.dot(g, partner[id(g)]))
            norms = (terms, False)
        return [norms, (dots, False)] if dots else [norms]

    def keep(self, flats: list[torch.Tensor | None]) -> None:
        """Keep these gradients for the next step, by copy or by reference (see `copy`)."""
        if len(self._buffers) != len(flats):
            self._buffers = [None] * len(flats)
        kept: list[torch.Tensor | None] = []
        for i, g in enumerate(flats):
            if g is None:
                kept.append(None)
                continue
            by_device = g.device.type == "cpu" if self.copy is None else self.copy
            if self.reused_in_place or by_device:
                buffer = self._buffers[i]
                if buffer is None or buffer.shape != g.shape or buffer.dtype != g.dtype:
                    buffer = self._buffers[i] = torch.empty_like(g)
                g = buffer.copy_(g)
            kept.append(g)
        self._kept = kept
        self._versions = [0 if p is None else p._version for p in kept]

    def restore(self, kept: list[torch.Tensor | None] | None, reused_in_place: bool) -> None:
        """Start from saved gradients (copied, so the saved ones are never written)."""
        self.reset()
        self.reused_in_place = reused_in_place
        if kept is not None:
            self._kept = [None if g is None else g.clone() for g in kept]
            self._versions = [0 if g is None else g._version for g in self._kept]

    def _usable(self, count: int) -> list[torch.Tensor | None] | None:
        """The kept gradients, or None if the loop has overwritten them in place since."""
        prev = self._kept
        if prev is None or len(prev) != count:
            return None
        for p, version in zip(prev, self._versions, strict=True):
            if p is not None and p._version != version:
                self.reused_in_place = True
                return None
        return prev
