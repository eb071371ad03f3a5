"""Many ``qlr train`` trials with Ray Tune, on this machine or on a cluster (``qlr sweep``).

Example:
    $ qlr sweep --config experiments/configs/default.yaml \\
        --search experiments/configs/sweep_example.yaml --out runs/sweep_default
    $ qlr sweep --resume --out runs/sweep_default          # after an interruption
    $ qlr sweep --config ... --search ... --address HEAD:6379   # on a running cluster

The search file (`qlr.agents.learn.search_space`) says which config keys to vary, over which seeds,
with which search algorithm and whether to stop poor trials early. Each trial is an ordinary
`train` run in its own run directory; every periodic held-out evaluation it makes (on ``val``)
is reported to Tune as it lands, which is what an early-stopping scheduler acts on. The score
is the trial's best ``median_log10_vs_oracle`` so far (lower is better), the one its
``best_policy.qlr`` was kept for.

A sweep directory holds::

    sweep.yaml             what was run: the config's text, the --set overrides, the search
    tune/                  Ray Tune's experiment (state for --resume, per-trial results)
    trials/<trial id>/     each trial's run directory, as `qlr train` writes it (+ train.log)
    summary.md             one row per trial, best first, and the best trial's command
    trials.csv             the same rows as CSV
    best_trial.json        the best trial: its values, score, run directory, command
    best_policy.qlr        a copy of the best trial's best_policy.qlr

An interrupted sweep (Ctrl+C, a lost driver) resumes with ``--resume``: finished trials are
kept, unfinished ones continue from their latest training checkpoint. On a cluster, ``--out``
must be on a filesystem every node mounts at the same path: trials write their run
directories there.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import shlex
import shutil
import sys
import threading
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from qlr._atomic import atomic_write_bytes
from qlr.agents.bench.ray_backend import failure_reason, import_ray, ray_session
from qlr.agents.learn.config import TrainConfig, parse_yaml
from qlr.agents.learn.run_files import CONFIG_FILE, SCORE_KEY, latest_checkpoint, read_history
from qlr.agents.learn.search_space import (
    SearchSpace,
    check_against_config,
    load_search,
    search_from_dict,
    trial_config,
    trial_overrides,
    tune_param_space,
    tune_scheduler,
    tune_searcher,
)
from qlr.agents.learn.train import train

# Ray is the `ray` extra, imported where a sweep runs: `qlr --help` and `qlr sweep --help` work
# without it, and `qlr.agents.bench.ray_backend.import_ray` says how to install it.

METRIC = f"best_{SCORE_KEY}"  # what a trial reports to Tune: its best score so far
RECORD_FILE = "sweep.yaml"
TUNE_DIR = "tune"
TRIALS_DIR = "trials"
POLL_SECONDS = 1.0  # how often a trial looks for a new evaluation in its eval_history.json


# --------------------------------------------------------------------------- one trial
class TrainingThread(threading.Thread):
    """`train` in the background, so that the trial's own thread reports its evaluations.

    Tune expects a trial to report from the thread it called. `train` writes every periodic
    evaluation to ``eval_history.json`` as soon as it is made; the trial's thread reads that
    file while training runs here, so `train` itself needs no hook.
    """

    def __init__(self, config: TrainConfig, run_dir: Path, resume: bool) -> None:
        super().__init__(name=f"train {run_dir.name}", daemon=True)  # dies with a stopped trial
        self.config, self.run_dir, self.resume = config, run_dir, resume
        self.error: BaseException | None = None

    def run(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        log = self.run_dir / "train.log"  # what `qlr train` would print, kept with the run

        def echo(text: str) -> None:
            with log.open("a") as f:
                f.write(text + "\n")

        try:
            train(self.config, self.run_dir, resume=self.resume, progress_bar=False, echo=echo)
        except BaseException as err:  # raised again in the trial's thread, which Tune watches
            self.error = err


def prepare_run_dir(run_dir: Path) -> bool | None:
    """How a trial's run directory continues: None finished, True resume, False start.

    A run killed before its first checkpoint has nothing to resume from: it starts over.
    """
    if (run_dir / "summary.json").is_file():
        return None
    if (run_dir / CONFIG_FILE).is_file() and latest_checkpoint(run_dir / "checkpoints"):
        return True
    if run_dir.exists():
        shutil.rmtree(run_dir)
    return False


def evaluation_metrics(entry: Mapping[str, Any], best: float) -> dict[str, float]:
    """What Tune receives for one evaluation: its numbers and the trial's best score so far."""
    numbers = {
        key: value
        for key, value in entry.items()
        if isinstance(value, (int, float)) and not isinstance(value, bool)
    }
    return {**numbers, METRIC: best}


def run_trial(
    params: dict[str, Any], *, base: dict[str, Any], overrides: list[str], trials_dir: str
) -> None:
    """Tune's function trainable: train one trial and report each held-out evaluation.

    Args:
        params: the trial's values (dotted config keys and ``seed``), chosen by Tune.
        base: the sweep's config, as parsed YAML (sent to the workers: no shared config file).
        overrides: the sweep's ``--set`` strings.
        trials_dir: where the trials' run directories go (absolute; shared on a cluster).
    """
    from ray import tune

    config = trial_config(base, overrides, params)
    run_dir = Path(trials_dir) / tune.get_context().get_trial_id()
    mode = prepare_run_dir(run_dir)
    thread = None
    if mode is not None:
        thread = TrainingThread(config, run_dir, resume=mode)
        thread.start()
    reported, best = 0, math.inf
    while True:
        if thread is not None:
            thread.join(POLL_SECONDS)
        training = thread is not None and thread.is_alive()
        # Read after checking: once training has ended, this read holds every evaluation.
        history = read_history(run_dir)
        for entry in history[reported:]:
            if training and entry["num_timesteps"] >= config.total_timesteps:
                # The end-of-training evaluation waits for `train` to write its final files:
                # a scheduler may stop the trial on any report, which ends this process.
                break
            best = min(best, entry[SCORE_KEY])
            tune.report(evaluation_metrics(entry, best))
            reported += 1
        if not training:
            break
    if thread is not None and thread.error is not None:
        raise thread.error
    if not history:
        raise RuntimeError(f"{run_dir}: training made no held-out evaluation to report")


# --------------------------------------------------------------------------- the sweep
@dataclass
class SweepRecord:
    """What a sweep runs, as saved in ``sweep.yaml`` and read back by ``--resume``."""

    config_path: str
    config_text: str
    overrides: list[str]
    search: dict[str, Any]

    def base(self) -> dict[str, Any]:
        data = parse_yaml(self.config_text) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{self.config_path}: the top level of a config must be a mapping")
        data.setdefault("name", Path(self.config_path).stem)
        return data

    def search_space(self) -> SearchSpace:
        return search_from_dict(self.search, where="search")

    def dump(self) -> str:
        return yaml.safe_dump(asdict(self), sort_keys=False)

    @classmethod
    def read(cls, path: Path) -> SweepRecord:
        return cls(**yaml.safe_load(path.read_text()))


@dataclass
class TrialRow:
    """One trial of a finished (or interrupted) sweep."""

    trial_id: str
    overrides: list[str]
    status: str  # finished, stopped early, interrupted, failed
    evaluations: int
    num_timesteps: int
    best_score: float | None
    best_at: int | None
    run_dir: str
    error: str = ""


@dataclass
class SweepReport:
    """What `sweep` produced."""

    out: Path
    trials: list[TrialRow]
    best: TrialRow | None
    interrupted: bool
    files: list[Path] = field(default_factory=list)


def sweep(
    record: SweepRecord,
    out: str | os.PathLike,
    *,
    address: str | None = None,
    jobs: int = 1,
    resume: bool = False,
    command: str = "",
) -> SweepReport:
    """Run (or resume) the sweep `record` describes into `out`, then export its best policy.

    Args:
        record: the config, its overrides and the search (see `record_from_files`).
        out: the sweep directory; on a cluster, on a filesystem every node mounts.
        address: ``HOST:PORT`` of a running Ray cluster; None starts Ray here with `jobs` CPUs.
        resume: continue the sweep in `out`; its own record must equal `record`.
        command: the command line, for the summary's header.

    Raises:
        FileExistsError: `out` holds a sweep and `resume` is False.
        FileNotFoundError: `resume` is True and `out` holds no sweep to continue.
        ValueError: `record` differs from the sweep being resumed, or fails its checks.
    """
    out = Path(out).resolve()
    search = record.search_space()
    base_config = check_against_config(search, record.base(), record.overrides, "search")
    import_ray(local=address is None)  # first: it sets how a local Ray listens, Tune imports Ray
    from ray import tune

    restore = _claim(out, record, resume)

    trainable = tune.with_resources(
        tune.with_parameters(
            run_trial,
            base=record.base(),
            overrides=list(record.overrides),
            trials_dir=str(out / TRIALS_DIR),
        ),
        {"cpu": search.cpus_per_trial},
    )
    with ray_session(address, jobs):
        if restore:
            tuner = tune.Tuner.restore(
                str(out / TUNE_DIR), trainable, resume_unfinished=True, resume_errored=True
            )
        else:
            tuner = tune.Tuner(
                trainable,
                param_space=tune_param_space(search, base_config.seed),
                tune_config=tune.TuneConfig(
                    metric=METRIC,
                    mode="min",
                    search_alg=tune_searcher(search),
                    scheduler=tune_scheduler(search, base_config),
                    num_samples=search.num_samples,
                    max_concurrent_trials=search.max_concurrent_trials,
                    reuse_actors=False,  # a stopped trial's actor goes, and its training with it
                ),
                run_config=tune.RunConfig(name=TUNE_DIR, storage_path=str(out), verbose=1),
            )
        results = tuner.fit()
    trials = [_trial_row(result, out / TRIALS_DIR) for result in results]
    interrupted = any(t.status == "interrupted" for t in trials)
    return _report(out, record, trials, interrupted, command)


def record_from_files(
    config: str | os.PathLike, search: str | os.PathLike, overrides: Sequence[str] = ()
) -> SweepRecord:
    """A `SweepRecord` from a config file, a search file and ``--set`` overrides."""
    return SweepRecord(
        config_path=str(config),
        config_text=Path(config).read_text(),
        overrides=list(overrides),
        search=load_search(search).to_dict(),
    )


def _claim(out: Path, record: SweepRecord, resume: bool) -> bool:
    """Check that `out` is free (a new sweep) or holds this very sweep (a resumed one).

    Returns whether Tune has a state to restore; a sweep stopped before Tune saved any starts
    again from the beginning, as nothing of it was kept.
    """
    from ray.tune import Tuner

    record_file = out / RECORD_FILE
    if not resume:
        if record_file.exists():
            raise FileExistsError(f"{out} already holds a sweep; continue it with --resume")
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(record_file, record.dump().encode())
        return False
    if not record_file.is_file():
        raise FileNotFoundError(f"{out} holds no sweep to resume (no {RECORD_FILE})")
    saved = SweepRecord.read(record_file)
    if (saved.config_text, saved.overrides, saved.search) != (
        record.config_text,
        record.overrides,
        record.search,
    ):
        raise ValueError(
            f"{out} holds a different sweep (config, --set or search differ); resume it with "
            "'--resume --out' alone, or start a new one in another --out"
        )
    return Tuner.can_restore(str(out / TUNE_DIR))


def _trial_row(result: Any, trials_dir: Path) -> TrialRow:
    """A trial's row, from Tune's result and the trial's run directory."""
    trial_id = result.metrics.get("trial_id") or Path(result.path).name
    run_dir = trials_dir / trial_id
    history = read_history(run_dir)
    best = min(history, key=lambda e: e[SCORE_KEY]) if history else None
    if result.error is not None:
        status = "failed"
    elif (run_dir / "summary.json").is_file():
        status = "finished"
    elif result.metrics.get("done"):  # Tune marks the result a scheduler stopped on as done
        status = "stopped early"
    else:  # the sweep stopped under it; --resume continues it
        status = "interrupted"
    error = ""
    if result.error is not None:
        error = failure_reason(result.error)
    return TrialRow(
        trial_id=trial_id,
        overrides=trial_overrides(result.config),
        status=status,
        evaluations=len(history),
        num_timesteps=history[-1]["num_timesteps"] if history else 0,
        best_score=None if best is None else best[SCORE_KEY],
        best_at=None if best is None else best["num_timesteps"],
        run_dir=str(run_dir),
        error=error,
    )


def _report(
    out: Path, record: SweepRecord, trials: list[TrialRow], interrupted: bool, command: str
) -> SweepReport:
    """Write the summary and, when a trial has a best policy, export it."""
    scored = [t for t in trials if t.best_score is not None]
    scored.sort(key=lambda t: (t.best_score, t.trial_id))  # ties: the first trial
    best = next((t for t in scored if (Path(t.run_dir) / "best_policy.qlr").is_file()), None)
    files = [out / "summary.md"]
    if best is not None:
        policy = Path(best.run_dir) / "best_policy.qlr"
        atomic_write_bytes(out / "best_policy.qlr", policy.read_bytes())
        details = {**best.__dict__, "policy": str(policy), "command": train_command(record, best)}
        atomic_write_bytes(out / "best_trial.json", json.dumps(details, indent=1).encode())
        files += [out / "best_trial.json", out / "best_policy.qlr"]
    ordered = scored + [t for t in trials if t.best_score is None]
    text = format_summary(record, ordered, best, interrupted, command)
    atomic_write_bytes(out / "summary.md", text.encode())
    atomic_write_bytes(out / "trials.csv", trials_csv(ordered).encode())
    files.insert(1, out / "trials.csv")
    return SweepReport(out, ordered, best, interrupted, files)


def train_command(record: SweepRecord, trial: TrialRow) -> str:
    """The ``qlr train`` command that trains `trial` again on its own."""
    parts = ["qlr", "train", "--config", record.config_path]
    for text in [*record.overrides, *trial.overrides]:
        parts += ["--set", text]
    return " ".join(shlex.quote(p) for p in parts)


def format_summary(
    record: SweepRecord,
    trials: list[TrialRow],
    best: TrialRow | None,
    interrupted: bool,
    command: str,
) -> str:
    """Markdown: the command, one row per trial (best score first), the best trial."""
    lines = [f"# Sweep of {record.config_path}", ""]
    if command:
        lines += [f"`{command}`", ""]
    lines += [
        f"Score: the trial's best held-out `{SCORE_KEY}` on its periodic evaluations "
        "(lower is better).",
        "",
        "| trial | values | status | evaluations | transitions | best score | at |",
        "|---|---|---|---|---|---|---|",
    ]
    for t in trials:
        score = "" if t.best_score is None else f"{t.best_score:+.3f}"
        status = t.status if not t.error else f"{t.status}: {t.error}"
        values = " ".join(t.overrides).replace("|", "\\|")
        lines.append(
            f"| {t.trial_id} | `{values}` | {status} | {t.evaluations} | {t.num_timesteps:,} "
            f"| {score} | {'' if t.best_at is None else f'{t.best_at:,}'} |"
        )
    lines.append("")
    if best is None:
        lines.append("No trial made a held-out evaluation: no best policy.")
    else:
        lines += [
            f"Best: trial {best.trial_id}, score {best.best_score:+.3f} at {best.best_at:,} "
            f"transitions; its policy is `{best.run_dir}/best_policy.qlr` (copied to "
            "`best_policy.qlr`). Train it again alone with:",
            "",
            f"    {train_command(record, best)}",
        ]
    if interrupted:
        lines += ["", "The sweep was interrupted; continue it with `qlr sweep --resume --out ...`."]
    return "\n".join(lines) + "\n"


def trials_csv(trials: Sequence[TrialRow]) -> str:
    """The trial rows as CSV text (for scripts that read a sweep's outcome)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(TrialRow.__dataclass_fields__))
    writer.writeheader()
    for t in trials:
        writer.writerow({**t.__dict__, "overrides": " ".join(t.overrides)})
    return buffer.getvalue()


# --------------------------------------------------------------------------- CLI
def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="the config every trial starts from")
    parser.add_argument("--search", type=Path, help="the search file (see sweep_example.yaml)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value for every trial, e.g. --set total_timesteps=50000",
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="the sweep directory (default runs/sweep_<config>)"
    )
    parser.add_argument(
        "--address",
        default=None,
        metavar="HOST:PORT",
        help="join this running Ray cluster instead of starting Ray here",
    )
    parser.add_argument(
        "--jobs", type=int, default=os.cpu_count() or 1, help="CPUs of a Ray started here"
    )
    parser.add_argument(
        "--resume", action="store_true", help="continue the sweep in --out after an interruption"
    )


def run(args: argparse.Namespace) -> int:
    record = _record_from_args(args)
    out = args.out or Path("runs") / f"sweep_{Path(record.config_path).stem}"
    parts = ["qlr", "sweep"]
    for flag, value in (("--config", args.config), ("--search", args.search)):
        parts += [flag, str(value)] if value is not None else []
    for text in args.overrides:
        parts += ["--set", text]
    parts += ["--out", str(out)] + (["--address", args.address] if args.address else [])
    parts += ["--resume"] if args.resume else []
    command = " ".join(shlex.quote(p) for p in parts)
    try:
        report = sweep(
            record, out, address=args.address, jobs=args.jobs, resume=args.resume, command=command
        )
    except ImportError as err:  # Ray is missing: a missing extra, as `qlr.agents.cli` says it
        print(f"qlr sweep: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    except (FileExistsError, FileNotFoundError, ValueError) as err:
        raise SystemExit(f"qlr sweep: {err}") from None
    print(format_summary(record, report.trials, report.best, report.interrupted, command))
    print(f"outputs in {out}: " + ", ".join(p.name for p in report.files))
    return 130 if report.interrupted else 0


def _record_from_args(args: argparse.Namespace) -> SweepRecord:
    """The sweep to run: from --config/--search/--set, or the one saved in --out (--resume)."""
    if args.resume and args.config is None and args.search is None and not args.overrides:
        if args.out is None:
            raise SystemExit("qlr sweep: --resume alone needs --out, the sweep's directory")
        record_file = args.out / RECORD_FILE
        if not record_file.is_file():
            raise SystemExit(f"qlr sweep: {args.out} holds no sweep to resume")
        return SweepRecord.read(record_file)
    if args.config is None or args.search is None:
        raise SystemExit("qlr sweep: give --config and --search (or --resume --out SWEEP_DIR)")
    try:
        return record_from_files(args.config, args.search, args.overrides)
    except (OSError, ValueError) as err:
        raise SystemExit(f"qlr sweep: {err}") from None
