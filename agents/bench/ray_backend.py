"""Ray for ``qlr compare --backend ray`` and ``qlr sweep``: sessions, and compare runs as tasks.

Without an address, a Ray instance is started on this machine for the duration of the command
(``num_cpus`` CPUs, no dashboard, listening on the loopback interface only) and stopped at the
end. With an address (``HOST:PORT`` of a head node started by ``ray start --head``), the
command joins that cluster as a driver and leaves it running. A Ray that this process has
already initialised (a test fixture, a notebook) is used as it is.

Each compare run (one `CompareSpec`) becomes one Ray task that calls the same `execute` as the
local backend (`qlr.agents.bench.runner.execute`, which the runner hands in), on one torch
thread, so the rows are the same as a local run's. Results are collected by index: the rows come
back in the order of the specs, whichever task finished first. A task that raises outside the
method (the method's own exceptions are caught by `execute`) or whose worker dies is recorded
as a ``failed`` run with the reason (`qlr.agents.bench.runs.failed_result`); the other runs
complete.

Ray is an optional extra (``pip install 'qlr[ray]'``): it is imported here, inside functions,
and nowhere else, so ``import qlr`` and the local backend never need it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import traceback
from collections.abc import Callable, Iterator, Sequence
from types import ModuleType

from tqdm.auto import tqdm

from qlr.agents.bench.runs import CompareSpec, Result, failed_result
from qlr.agents.bench.workers import single_thread_worker

INSTALL_HINT = "the Ray backend needs the 'ray' extra: pip install 'qlr[ray]'"
# A crashed worker is retried once: on a cluster a node can go away under a task, while a run
# that kills its worker every time (out of memory, a segfault) should not be tried forever.
MAX_RETRIES = 1
# Ray's local node listens on the address it thinks other nodes reach it by; with "cluster
# mode" off it takes the loopback address, so a local instance is not reachable from outside.
# Ray reads this when it is first imported.
_LOCAL_ONLY_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def import_ray(local: bool = False) -> ModuleType:
    """Import Ray, or fail with the command that installs it.

    Args:
        local: a Ray instance will be started on this machine only; when Ray is not imported
            yet, it is told to listen on the loopback interface.

    Raises:
        ImportError: Ray (with Tune) is not installed.
    """
    if local and "ray" not in sys.modules:
        os.environ.setdefault(_LOCAL_ONLY_ENV, "0")
    try:
        import ray
    except ModuleNotFoundError as err:
        raise ImportError(INSTALL_HINT) from err
    return ray


def start_local(num_cpus: int) -> ModuleType:
    """Start a Ray instance on this machine: `num_cpus` CPUs, no dashboard, quiet workers."""
    ray = import_ray(local=True)
    ray.init(
        address="local",  # a new instance, even where `ray start` left a cluster running
        num_cpus=max(1, num_cpus),
        include_dashboard=False,
        log_to_driver=False,  # the runs print nothing worth a line per worker in the terminal
        logging_level=logging.WARNING,
    )
    return ray


@contextlib.contextmanager
def ray_session(address: str | None = None, num_cpus: int = 1) -> Iterator[ModuleType]:
    """Ray, joined to the cluster at `address` or started here with `num_cpus` CPUs.

    A Ray that is already initialised in this process is used and left running; one started
    or joined here is shut down (a local instance stopped, a cluster left) at the end.
    """
    ray = import_ray(local=address is None)
    if ray.is_initialized():
        yield ray
        return
    if address is None:
        start_local(num_cpus)
    else:
        ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
    try:
        yield ray
    finally:
        ray.shutdown()


def _execute_in_worker(execute: Callable[[CompareSpec], Result], spec: CompareSpec) -> Result:
    """One compare run inside a Ray worker, on one torch thread as in the local worker pool."""
    single_thread_worker()
    return execute(spec)


def failure_reason(err: BaseException) -> str:
    """One line saying why a task failed, in the form `execute` records a failing method.

    A `RayTaskError` carries the task's own exception as its ``cause``: that exception is
    reported, as the local backend would. Ray's own errors (a crashed worker, a lost node) are
    reported under their Ray names.
    """
    cause = getattr(err, "cause", None)
    if isinstance(cause, BaseException):
        err = cause
    line = traceback.format_exception_only(type(err), err)[-1]
    return " ".join(line.split())[:300]


def run_all(
    specs: Sequence[CompareSpec],
    jobs: int = 1,
    progress: bool = True,
    address: str | None = None,
    *,
    execute: Callable[[CompareSpec], Result],
) -> list[Result]:
    """Execute every spec as a Ray task; results in the order of `specs`.

    A task that raises outside the method, or whose worker dies, gives the rows of
    `qlr.agents.bench.runs.failed_result`.

    Args:
        specs: the runs, as `qlr.agents.bench.runner.make_specs` lists them.
        jobs: CPUs of the Ray instance started here (ignored when joining a cluster, whose
            nodes bring their own).
        progress: show a progress bar.
        address: ``HOST:PORT`` of a running cluster's head node; None starts Ray here.
        execute: what a task runs per spec (`qlr.agents.bench.runner.execute` for a suite).
    """
    with ray_session(address, jobs) as ray:
        task = ray.remote(num_cpus=1, max_retries=MAX_RETRIES)(_execute_in_worker)
        execute_ref = ray.put(execute)
        index = {task.remote(execute_ref, spec): i for i, spec in enumerate(specs)}
        done: dict[int, Result] = {}
        pending = list(index)
        with tqdm(total=len(specs), desc="qlr compare", unit="run", disable=not progress) as bar:
            while pending:
                ready, pending = ray.wait(pending, num_returns=min(len(pending), 64), timeout=1.0)
                for ref in ready:
                    i = index[ref]
                    try:
                        done[i] = ray.get(ref)
                    except ray.exceptions.RayError as err:
                        done[i] = failed_result(specs[i], failure_reason(err))
                    bar.update()
    return [done[i] for i in range(len(specs))]
