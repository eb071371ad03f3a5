"""How one step's reductions are computed on their device and reach the host.

A reduction (|g|^2, g . g_prev, g . u, ...) is kept as per-parameter terms: 0-dim tensors, one
per parameter, left on the device where they were computed. `Readback` stacks a step's terms
into one small vector (on CUDA copied into pinned host memory without blocking) and `read`
brings them over and sums them, in double precision, when they are needed. `FeatureTracker`
reads a step's values on the next step, when the device has usually computed them, so a
training loop never waits for the step it has just queued, only (at worst) for the one before.

On an accelerator the squared norms come from one multi-tensor kernel and the update chain moves
its buffer with multi-tensor ops, which agree with the per-parameter loop of the CPU to float
rounding; on the CPU the loop keeps each parameter in cache while it is read (see
`use_foreach`).

Under distributed training the stacked vector is summed over the process group by one
all-reduce, started here and waited for in `read` (see `qlr.distributed`).
"""

from __future__ import annotations

from typing import Any

import torch

from qlr.distributed import GroupSum, local_tensor

Terms = tuple[list[torch.Tensor], bool]
"""A reduction as per-parameter 0-dim terms, summed on the host; True when the terms are
norms, to be squared first (see `squares`)."""


def use_foreach(tensors: list[torch.Tensor], foreach: bool | None = None) -> bool:
    """Whether to use multi-tensor kernels for `tensors`.

    `foreach` decides when it is set; None chooses by device, as torch's optimizers do: on an
    accelerator one launch per parameter costs more than the work, while on the CPU a loop
    keeps each parameter in cache while it is read, and the sums stay bit for bit what they
    were. A single tensor never needs them.
    """
    if len(tensors) <= 1:
        return False
    return tensors[0].device.type != "cpu" if foreach is None else foreach


def squares(tensors: list[torch.Tensor], foreach: bool | None = None) -> Terms:
    """The terms of sum |x|^2 over the tensors: dot products, or norms in one launch."""
    if use_foreach(tensors, foreach):
        return list(torch._foreach_norm(tensors)), True
    return [torch.dot(t, t) for t in tensors], False


def flat(grad: torch.Tensor) -> torch.Tensor:
    """A dense 1-D view of a gradient (this rank's shard of a DTensor), in at least single
    precision (half overflows in a dot)."""
    grad = local_tensor(grad.detach())
    if grad.is_sparse:
        grad = grad.to_dense()
    view = grad.reshape(-1)
    if view.dtype in (torch.float16, torch.bfloat16):
        view = view.float()
    return view


def flat_param(param: torch.Tensor) -> torch.Tensor:
    """A 1-D view of a parameter (this rank's shard of a DTensor), in its own dtype."""
    return local_tensor(param.detach()).reshape(-1)


class Readback:
    """One step's reductions and loss on their way to the host, read by `read` when needed.

    On CUDA the values are copied into pinned host memory without blocking, behind an event:
    `read` waits for that event only, which a step later the device has usually passed. On
    the CPU, or another device, `read` reads them directly. A float loss stays on the host; a
    0-dim tensor loss travels with the reductions, last.
    """

    __slots__ = ("_event", "_group", "_loss", "_replicated", "_sizes", "_values", "_work")

    def __init__(
        self,
        groups: list[Terms],
        loss: float | torch.Tensor,
        group: GroupSum | None = None,
        replicated: bool = True,
    ) -> None:
        self._group, self._replicated = group, replicated
        if group is not None:  # squares before the sum over ranks: norms of shards do not add
            groups = [([t * t for t in ts], False) if sq else (ts, sq) for ts, sq in groups]
        terms = [t for group_terms, _ in groups for t in group_terms]
        self._sizes = tuple((len(group_terms), squared) for group_terms, squared in groups)
        self._loss: float | None = None  # None: the loss is the last of the values
        if isinstance(loss, torch.Tensor):
            loss = loss.detach()
            if loss.dim():
                loss = loss.reshape(())
            if loss.dtype != torch.float32:
                loss = loss.float()  # read as the float32 it always was
            terms.append(loss)
        elif group is not None:  # every rank's loss counts towards the one all of them read
            terms.append(torch.tensor(float(loss), device=group.device))
        else:
            self._loss = float(loss)
        self._event: torch.cuda.Event | None = None
        self._values: torch.Tensor | None = None
        self._work: Any = None
        if not terms:  # a float loss and no reductions: nothing to read
            return
        device = terms[0].device if group is None else group.device
        if any(t.device != device for t in terms):  # parameters spread over several devices
            terms = [t.to(device, non_blocking=device.type != "cpu") for t in terms]
        # Stacked even when alone under a group: the all-reduce writes in place, and the loss
        # tensor is the loop's own.
        values = torch.stack(terms) if len(terms) > 1 or group is not None else terms[0]
        if group is not None:
            self._work = group.start(values)
        if device.type == "cuda":
            if self._work is not None:
                self._work.wait()  # orders the copy after the all-reduce; the host goes on
                self._work = None
            host = torch.empty(values.shape, dtype=values.dtype, pin_memory=True)
            host.copy_(values, non_blocking=True)
            self._event = torch.cuda.Event()
            self._event.record(torch.cuda.current_stream(device))
            values = host
        self._values = values

    def read(self) -> tuple[list[float], float]:
        """Each reduction's sum, in the order queued, and the loss (one host transfer)."""
        raw: list[float] = []
        if self._values is not None:
            if self._work is not None:
                self._work.wait()
            if self._event is not None:
                self._event.synchronize()
            values = self._values.tolist()
            raw = values if isinstance(values, list) else [values]
        loss = raw.pop() if self._loss is None else self._loss
        if self._group is not None:  # sums over the ranks: the mean loss, the model's products
            loss /= self._group.world_size
            if self._replicated:
                raw = [x / self._group.world_size for x in raw]
        # The per-parameter terms are summed here, in double precision.
        sums, start = [], 0
        for size, squared in self._sizes:
            chunk = raw[start : start + size]
            sums.append(sum(x * x for x in chunk) if squared else sum(chunk))
            start += size
        return sums, loss
