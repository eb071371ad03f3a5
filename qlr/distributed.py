"""Deciding together: the statistics of a step, summed over the ranks of a process group.

Under data-parallel training every rank runs its own scheduler on its own micro-batch. For the
ranks to keep one learning rate, every number a decision or a guard reads must be the same on
every rank. So each step's small vector of statistics (its loss and its inner products) is
summed over the group with one all-reduce, started when the step is queued and waited for when
it is read, a step later (at once on a decision's step): between decisions a rank never waits
on the collective of the step it has just queued.

The loss is averaged over the ranks: the loss of the whole batch. The inner products depend on
how the parameters are held:

* replicated (DDP, ZeRO-style optimizers, which keep every parameter whole on every rank): the
  ranks hold the same parameters and gradients, so each rank's products are already the whole
  model's, and the sum over ranks is divided by their number;
* sharded (FSDP2's ``fully_shard``, every parameter a DTensor split over the ranks): each rank
  forms the products of its shards, and their sum over the ranks is the whole model's.

A model that mixes the two (``fully_shard`` applied to some submodules and not the root) is not
supported: its replicated parameters would count once per rank.
"""

from __future__ import annotations

from typing import Any

import torch


def default_group() -> Any | None:
    """The default process group when torch.distributed runs with more than one rank."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return None
    group = torch.distributed.group.WORLD
    return group if torch.distributed.get_world_size(group) > 1 else None


def local_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """The part of `tensor` this process holds: a DTensor's local shard, else the tensor."""
    to_local = getattr(tensor, "to_local", None)
    return to_local() if to_local is not None else tensor


def is_sharded(tensor: torch.Tensor) -> bool:
    """Whether `tensor` is a DTensor split over ranks (rather than held whole on each)."""
    placements = getattr(tensor, "placements", None)
    return placements is not None and any(p.is_shard() for p in placements)


class GroupSum:
    """Sums small vectors over the ranks of a process group, without blocking the caller.

    Args:
        group: the process group (`torch.distributed`), e.g. from `default_group`.
    """

    def __init__(self, group: Any) -> None:
        self.group = group
        self.world_size = int(torch.distributed.get_world_size(group))
        # The device a collective of this group runs on: NCCL's take CUDA tensors only.
        nccl = torch.distributed.get_backend(group) == "nccl"
        self.device = torch.device(f"cuda:{torch.cuda.current_device()}" if nccl else "cpu")

    def start(self, values: torch.Tensor) -> Any:
        """Begin summing `values` in place over the group; returns the handle to wait on."""
        return torch.distributed.all_reduce(values, group=self.group, async_op=True)
