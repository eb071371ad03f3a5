"""The local process pool that `qlr evaluate` and `qlr compare` run their runs on."""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import torch

Item = TypeVar("Item")
Result = TypeVar("Result")


def single_thread_worker() -> None:
    """Worker processes share the cores: one torch thread each avoids oversubscription."""
    torch.set_num_threads(1)


def run_parallel(
    function: Callable[[Item], Result],
    items: Sequence[Item],
    jobs: int = 1,
    progress: bool = False,
    desc: str = "runs",
) -> list[Result]:
    """``[function(item) for item in items]``, in `jobs` worker processes when more than one.

    Workers are spawned, not forked (no forked torch state), and run torch on one thread each.
    Results come back in the order of `items` whatever order the workers finish in.

    Args:
        function: a module-level function (worker processes import it by name).
        items: picklable arguments, one call each.
        jobs: worker processes; 1 or fewer runs everything in this process.
        progress: show a progress bar (one tick per finished item).
        desc: the progress bar's label.
    """
    bar = _progress_bar(len(items), desc) if progress else None
    try:
        if jobs <= 1:
            out = []
            for item in items:
                out.append(function(item))
                if bar is not None:
                    bar.update()
            return out
        with mp.get_context("spawn").Pool(jobs, initializer=single_thread_worker) as pool:
            chunk = max(1, len(items) // (32 * jobs))
            tasks = ((function, i, item) for i, item in enumerate(items))
            # unordered, so one slow run does not hold the bar back; put back in order after
            done: dict[int, Result] = {}
            for i, result in pool.imap_unordered(_call_indexed, tasks, chunk):
                done[i] = result
                if bar is not None:
                    bar.update()
        return [done[i] for i in range(len(items))]
    finally:
        if bar is not None:
            bar.close()


def _call_indexed(task: tuple[Callable[[Any], Any], int, Any]) -> tuple[int, Any]:
    function, index, item = task
    return index, function(item)


def _progress_bar(total: int, desc: str) -> Any:
    # tqdm only when a bar is drawn: the command line imports this module to start.
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="run")
