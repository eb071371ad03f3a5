"""The files of a run directory that several parts of the learning room read or write.

Training writes them (`qlr.agents.learn.train` and its callbacks), and ``qlr export``, a resumed
run and a sweep's trials read them. They live here, beside none of those, so that each imports
them at the top of its module; nothing here needs stable-baselines3 (a model is anything with
``save``, ``save_replay_buffer`` and ``num_timesteps``).
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from qlr._atomic import atomic_save, atomic_write_bytes

CONFIG_FILE = "config.yaml"
"""The resolved config of a run, in its directory."""
MODEL_FILES = {"final": "final_model.zip", "best": "best_model.zip"}
"""The SB3 model zips a run directory holds, by the name ``qlr export --model`` gives them."""
EVAL_HISTORY_FILE = "eval_history.json"
"""Every periodic held-out evaluation of a run, appended as it is made."""
SCORE_KEY = "median_log10_vs_oracle"
"""The score of an evaluation in `EVAL_HISTORY_FILE` (lower is better; 0 = best constant rate)."""


def write_json(path: Path, data: Any) -> Path:
    """Write `data` as JSON atomically (infinities as ``Infinity``, which `json` reads back)."""
    text = json.dumps(data, indent=1, sort_keys=True, default=str)
    return atomic_save(path, lambda f: f.write(text.encode()))


def save_arrays(path: Path, arrays: Mapping[str, np.ndarray]) -> Path:
    """Write named arrays as one compressed ``.npz`` file, atomically."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **dict(arrays))
    return atomic_write_bytes(Path(path), buffer.getvalue())


def load_arrays(path: Path, names: Sequence[str]) -> dict[str, np.ndarray]:
    """The arrays `names` of a ``.npz`` file written by `save_arrays` (nothing is unpickled)."""
    with np.load(Path(path), allow_pickle=False) as data:
        missing = [name for name in names if name not in data]
        if missing:
            raise ValueError(f"{path} lacks the arrays {missing}")
        return {name: data[name] for name in names}


def read_history(run_dir: Path) -> list[dict]:
    """The periodic evaluations a run has made so far (written atomically, so never torn)."""
    path = run_dir / EVAL_HISTORY_FILE
    return json.loads(path.read_text()) if path.is_file() else []


# ---------------------------------------------------------------------------------- checkpoints
@dataclass
class Checkpoint:
    """A complete checkpoint: its JSON marker is written only after both files are in place."""

    num_timesteps: int
    model: Path
    replay_buffer: Path
    marker: Path


def checkpoint_paths(directory: Path, num_timesteps: int) -> Checkpoint:
    stem = f"{num_timesteps:09d}"
    return Checkpoint(
        num_timesteps=num_timesteps,
        model=directory / f"model_{stem}.zip",
        replay_buffer=directory / f"replay_buffer_{stem}.pkl",
        marker=directory / f"checkpoint_{stem}.json",
    )


def save_checkpoint(model: Any, directory: Path) -> Checkpoint:
    """Save the model and its replay buffer, each atomically, then the JSON marker."""
    checkpoint = checkpoint_paths(directory, int(model.num_timesteps))
    atomic_save(checkpoint.model, model.save)
    atomic_save(checkpoint.replay_buffer, model.save_replay_buffer)
    marker = {
        "num_timesteps": checkpoint.num_timesteps,
        "model": checkpoint.model.name,
        "replay_buffer": checkpoint.replay_buffer.name,
        "time": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    write_json(checkpoint.marker, marker)
    return checkpoint


def list_checkpoints(directory: Path) -> list[Checkpoint]:
    """Complete checkpoints in `directory`, oldest first."""
    found = []
    for marker in directory.glob("checkpoint_*.json"):
        try:
            steps = int(json.loads(marker.read_text())["num_timesteps"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        checkpoint = checkpoint_paths(directory, steps)
        if checkpoint.model.is_file() and checkpoint.replay_buffer.is_file():
            found.append(checkpoint)
    return sorted(found, key=lambda c: c.num_timesteps)


def latest_checkpoint(directory: Path) -> Checkpoint | None:
    """The complete checkpoint with the most timesteps, or None."""
    checkpoints = list_checkpoints(directory)
    return checkpoints[-1] if checkpoints else None


def prune_checkpoints(directory: Path, keep: int) -> None:
    """Delete all but the `keep` most recent checkpoints (marker first, so none is half-kept)."""
    for checkpoint in list_checkpoints(directory)[:-keep]:
        for path in (checkpoint.marker, checkpoint.model, checkpoint.replay_buffer):
            path.unlink(missing_ok=True)
