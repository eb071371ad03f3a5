"""Ray: `qlr compare --backend ray` gives the local rows; `qlr sweep` trains, reports, resumes.

One real local Ray instance (2 CPUs, no dashboard, loopback only) serves the whole module.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from qlr.agents.bench.runner import execute, make_specs, run_all
from qlr.agents.bench.suites import load_suite
from qlr.agents.cli import main

pytestmark = [pytest.mark.slow, pytest.mark.ray]  # `make test` runs them: -m 'not slow or ray'

CONFIGS = Path(__file__).resolve().parent.parent / "experiments" / "configs"
TINY = CONFIGS / "tiny.yaml"
SWEEP_TINY = CONFIGS / "sweep_tiny.yaml"
MISSING_POLICY = "policy:/nonexistent/policy.qlr"  # fails at load: a deliberately failing method
# Two evaluations per trial (at ~100 and at the end), a checkpoint at ~100 transitions.
SMALL = ["total_timesteps=200", "eval_freq=100", "checkpoint_freq=100", "final_eval=null"]


@pytest.fixture(scope="module")
def ray_instance():
    """A local Ray for the module, started the way `qlr compare --backend ray` starts one."""
    from qlr.agents.bench import ray_backend

    try:
        ray_backend.import_ray(local=True)
    except ImportError:
        pytest.skip(ray_backend.INSTALL_HINT)
    ray = ray_backend.start_local(num_cpus=2)
    yield ray
    ray.shutdown()


def _without_wall_time(results: list) -> list:
    return [
        ([{k: v for k, v in row.items() if k != "wall_time"} for row in rows], curve)
        for rows, curve in results
    ]


def _same_curves(a: dict | None, b: dict | None) -> bool:
    if a is None or b is None:
        return a is b
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k], equal_nan=True) for k in a)


def test_the_local_instance_listens_on_loopback_only(ray_instance) -> None:
    host = ray_instance.get_runtime_context().gcs_address.rsplit(":", 1)[0]
    assert host == "127.0.0.1"
    assert ray_instance.util.get_node_ip_address() == "127.0.0.1"


# ---------------------------------------------------------------------------------- compare
def test_ray_backend_gives_the_local_rows_in_the_same_order(ray_instance) -> None:
    specs, _ = make_specs(load_suite("compare_tiny"))
    local = _without_wall_time(run_all(specs, jobs=1, progress=False))
    remote = _without_wall_time(run_all(specs, jobs=2, progress=False, backend="ray"))
    assert [rows for rows, _ in remote] == [rows for rows, _ in local]
    assert all(_same_curves(a, b) for (_, a), (_, b) in zip(remote, local, strict=True))


def test_compare_command_on_ray_records_a_failing_method(ray_instance, tmp_path: Path) -> None:
    out = tmp_path / "compare"
    argv = ["compare", "--suite", "compare_tiny", "--methods", "constant", MISSING_POLICY]
    argv += ["--backend", "ray", "--jobs", "2", "--out", str(out), "--no-progress-bar"]
    assert main(argv) == 0
    with (out / "runs.csv").open() as f:
        rows = list(csv.DictReader(f))
    failing = [r for r in rows if r["method"] == MISSING_POLICY]
    assert failing and all(r["status"] == "failed" for r in failing)
    assert all("PolicyFileError" in r["error"] for r in failing)
    assert all(r["status"] in ("ok", "diverged") for r in rows if r["method"] == "constant")
    assert "--backend ray" in (out / "summary.md").read_text()


def test_a_task_that_raises_or_kills_its_worker_is_a_failed_run(ray_instance) -> None:
    from qlr.agents.bench import ray_backend

    specs, _ = make_specs(replace(load_suite("compare_tiny"), methods=("constant", "cosine")))
    specs = [s for s in specs if s.method == "constant"][:4] + [
        s for s in specs if s.method == "cosine"
    ][:2]
    broken = replace(specs[0], family="no_such_family")  # raises before the method runs
    crashing = next(s for s in specs if s.method == "cosine")

    def crash_on_cosine(spec):  # a worker that dies mid-run, as on a segfault or a lost node
        if spec == crashing:
            os._exit(1)
        return execute(spec)

    results = ray_backend.run_all([*specs, broken], progress=False, execute=crash_on_cosine)
    assert len(results) == len(specs) + 1
    for spec, (rows, curve) in zip([*specs, broken], results, strict=True):
        assert all(r["method"] == spec.method and r["lr"] == spec.lr for r in rows)
        if spec is crashing or spec is broken:
            assert curve is None and all(r["status"] == "failed" for r in rows)
        else:
            assert all(r["status"] in ("ok", "diverged") for r in rows)
    crashed_rows, _ = results[specs.index(crashing)]
    assert "WorkerCrashedError" in crashed_rows[0]["error"]
    broken_rows, _ = results[-1]
    assert "no_such_family" in broken_rows[0]["error"]
    assert broken_rows[0]["budget"] == specs[0].counts[0]  # rows shaped like any failed run


# ---------------------------------------------------------------------------------- sweep
@pytest.fixture(scope="module")
def finished_sweep(ray_instance, tmp_path_factory: pytest.TempPathFactory):
    """Two trials of tiny.yaml (two learning rates), run to the end."""
    from qlr.agents.learn.sweep import record_from_files, sweep

    out = tmp_path_factory.mktemp("sweep") / "tiny"
    record = record_from_files(TINY, SWEEP_TINY, SMALL)
    return record, sweep(record, out, jobs=2)


def test_sweep_trains_every_trial_and_reports_each_evaluation(finished_sweep) -> None:
    from qlr.agents.learn.sweep import METRIC

    _, report = finished_sweep
    assert not report.interrupted and len(report.trials) == 2
    rates = set()
    for trial in report.trials:
        assert trial.status == "finished" and trial.best_score is not None
        assert trial.num_timesteps >= 200 and trial.evaluations >= 2
        rates.add(next(o for o in trial.overrides if o.startswith("dqn.learning_rate=")))
        run_dir = Path(trial.run_dir)
        assert (run_dir / "tensorboard").is_dir() and (run_dir / "checkpoints").is_dir()
        # Tune received one result per evaluation, each with the trial's best score so far
        tune_dir = next((report.out / "tune").glob(f"*{trial.trial_id}*"))
        results = [json.loads(line) for line in (tune_dir / "result.json").open()]
        assert len(results) == trial.evaluations
        assert results[-1][METRIC] == pytest.approx(trial.best_score)
    assert rates == {"dqn.learning_rate=0.001", "dqn.learning_rate=0.003"}


def test_sweep_exports_the_best_trials_policy(finished_sweep) -> None:
    from qlr.policy import load_policy

    _, report = finished_sweep
    best = report.best
    assert best is not None and best.best_score == min(t.best_score for t in report.trials)
    exported = report.out / "best_policy.qlr"
    assert exported.read_bytes() == (Path(best.run_dir) / "best_policy.qlr").read_bytes()
    policy = load_policy(exported)
    assert policy.n_actions >= 2
    details = json.loads((report.out / "best_trial.json").read_text())
    assert details["trial_id"] == best.trial_id
    assert details["command"].startswith("qlr train --config ")
    assert "dqn.learning_rate=" in details["command"]
    assert best.trial_id in (report.out / "summary.md").read_text()


def test_resuming_a_finished_sweep_trains_nothing_again(finished_sweep) -> None:
    from qlr.agents.learn.sweep import sweep

    record, report = finished_sweep
    stamps = {t.trial_id: (Path(t.run_dir) / "summary.json").stat().st_mtime for t in report.trials}
    again = sweep(record, report.out, jobs=2, resume=True)
    assert not again.interrupted and again.best.trial_id == report.best.trial_id
    for trial in again.trials:
        assert trial.status == "finished"
        assert (Path(trial.run_dir) / "summary.json").stat().st_mtime == stamps[trial.trial_id]
    with pytest.raises(FileExistsError, match="--resume"):
        sweep(record, report.out, jobs=2)
    other = replace(record, overrides=["total_timesteps=300", *SMALL[1:]])
    with pytest.raises(ValueError, match="holds a different sweep"):
        sweep(other, report.out, jobs=2, resume=True)


def _interrupt_after_first_checkpoint(trials_dir: Path, timeout: float = 600.0) -> None:
    """Stop the sweep as Ctrl+C would, once a trial has a checkpoint to resume from.

    The timeout is generous: on a loaded machine Ray takes minutes to start a trial's worker.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if list(trials_dir.glob("*/checkpoints/checkpoint_*.json")):
            break
        time.sleep(0.2)
    # Tune stops gracefully on SIGINT or SIGUSR1 and saves its state. SIGUSR1 because Tune's
    # handler for it stays installed: a late signal cannot interrupt pytest itself.
    os.kill(os.getpid(), signal.SIGUSR1)


def test_an_interrupted_sweep_resumes_from_the_trials_checkpoints(
    ray_instance, tmp_path: Path
) -> None:
    from qlr.agents.learn.sweep import TRIALS_DIR, record_from_files, sweep

    out = tmp_path / "sweep"
    record = record_from_files(TINY, SWEEP_TINY, ["total_timesteps=600", *SMALL[1:]])
    watcher = threading.Thread(target=_interrupt_after_first_checkpoint, args=(out / TRIALS_DIR,))
    watcher.start()
    try:
        first = sweep(record, out, jobs=2)
    finally:
        watcher.join()
    assert first.interrupted
    assert {t.status for t in first.trials} <= {"interrupted", "finished"}
    assert any(t.status == "interrupted" for t in first.trials)
    resumed = sweep(record, out, jobs=2, resume=True)
    assert not resumed.interrupted
    assert [t.status for t in resumed.trials] == ["finished", "finished"]
    assert all(t.num_timesteps >= 600 for t in resumed.trials)
    logs = [(Path(t.run_dir) / "train.log").read_text() for t in resumed.trials]
    assert any("resuming" in log for log in logs)  # from its checkpoint, not from scratch
    assert (out / "best_policy.qlr").is_file()


def test_asha_stops_the_trials_that_trail(ray_instance, tmp_path: Path) -> None:
    from qlr.agents.learn.sweep import record_from_files, sweep

    # The same training under four evaluation settings: scores that differ, deterministically,
    # the first setting scoring best (the highest start: the rollback guard brings back what
    # it overshoots, and the lower starts end further from the best constant). ASHA judges a
    # trial at a rung against the trials that reached that rung before it, so trials in
    # parallel would make its decisions depend on which one got there first: one trial at a
    # time, in the order listed, fixes them. The budget is long beside the rungs (100, 200,
    # 400, 800 transitions), so a stop reaches a trial long before its training could end on
    # its own.
    search = tmp_path / "asha.yaml"
    search.write_text(
        "space: {eval.initial_lrs: [[1e-1], [1e-2], [1e-3], [1e-4]]}\n"
        "scheduler: {name: asha, grace_period: 100, reduction_factor: 2}\n"
        "max_concurrent_trials: 1\n"
    )
    total = 1000
    record = record_from_files(TINY, search, [f"total_timesteps={total}", *SMALL[1:]])
    report = sweep(record, tmp_path / "sweep", jobs=2)
    assert not report.interrupted and len(report.trials) == 4
    first, *later = sorted(report.trials, key=lambda t: t.trial_id)
    assert first.overrides[0] == "eval.initial_lrs=[0.1]"
    assert first.status == "finished" and first.num_timesteps >= total
    assert report.best.trial_id == first.trial_id
    for trial in later:  # each trails the first at every rung it reaches, so each is stopped
        summary = [(t.overrides, t.status, t.num_timesteps, t.best_score) for t in report.trials]
        assert trial.best_score > first.best_score, summary
        assert trial.status == "stopped early", summary
        assert trial.num_timesteps < total
        assert not (Path(trial.run_dir) / "summary.json").exists()
