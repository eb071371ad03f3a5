"""`DynamicBatchSampler`: feed a `torch.utils.data.DataLoader` the batch size a controller picks."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from numbers import Integral
from typing import Any, Protocol

from torch.utils.data import Sampler


class IndexSampler(Protocol):
    """What `DynamicBatchSampler` wraps: dataset indices, and how many make an epoch.

    Every map-style torch sampler (``RandomSampler``, ``SequentialSampler``,
    ``DistributedSampler``) is one, and so is a plain list of indices.
    """

    def __iter__(self) -> Iterator[int]: ...

    def __len__(self) -> int: ...


class DynamicBatchSampler(Sampler[list[int]]):
    """A batch sampler whose batch size is read anew before every batch.

    Wraps an index sampler (``RandomSampler``, ``SequentialSampler``, a distributed sampler, ...)
    and groups its indices into batches whose size comes from `batch_size`: a callable returning
    an int, or any object with an int ``batch_size`` attribute, such as a `qlr.QLRScheduler`
    whose policy grows the batch. Pass it as ``DataLoader(dataset, batch_sampler=...)``.

    The size is read when a batch is started, so it takes effect on the next batch. With
    ``num_workers > 0`` the DataLoader prepares ``prefetch_factor * num_workers`` batches ahead,
    and a change reaches the loop that many batches later.

    Args:
        sampler: yields dataset indices; its length is the epoch.
        batch_size: the current batch size, as a callable or an object with ``batch_size``.
        drop_last: drop an epoch's final batch when it is smaller than the current size.

    Example:
        >>> scheduler = qlr.QLRScheduler(optimizer, "noise.qlr", batch_size=32)
        >>> sampler = qlr.DynamicBatchSampler(RandomSampler(dataset), scheduler)
        >>> loader = DataLoader(dataset, batch_sampler=sampler)
    """

    def __init__(
        self,
        sampler: IndexSampler,
        batch_size: Callable[[], int] | Any,
        drop_last: bool = False,
    ) -> None:
        self._read: Callable[[], object]
        if callable(batch_size):
            self._read = batch_size
        elif hasattr(batch_size, "batch_size"):
            self._read = lambda: batch_size.batch_size
        else:
            raise TypeError(
                "batch_size must be a callable returning the batch size or an object with a "
                f"batch_size attribute (e.g. a QLRScheduler), got {type(batch_size).__name__}"
            )
        if not isinstance(drop_last, bool):
            raise TypeError(f"drop_last must be a bool, got {drop_last!r}")
        self.sampler = sampler
        self.drop_last = drop_last
        self.current_batch_size()  # fail here, not in the first epoch, on a bad source

    def current_batch_size(self) -> int:
        """The size the next batch will have, as the source says now."""
        size = self._read()
        if isinstance(size, bool) or not isinstance(size, Integral) or size < 1:
            raise ValueError(f"the batch size source returned {size!r}, not a positive integer")
        return int(size)

    def __iter__(self) -> Iterator[list[int]]:
        batch: list[int] = []
        size = self.current_batch_size()
        for index in self.sampler:
            batch.append(index)
            if len(batch) >= size:
                yield batch
                batch = []
                size = self.current_batch_size()
        if batch and not self.drop_last:
            yield batch

    def __len__(self) -> int:
        """Batches per epoch at the current size (the actual count changes with the size)."""
        n, size = len(self.sampler), self.current_batch_size()
        return n // size if self.drop_last else -(-n // size)
