"""Writing files whole or not at all: a temporary file beside the target, synced, then renamed.

Every file qlr writes (policy files, checkpoints, reports, figures) goes through `atomic_save`
or `atomic_write_bytes`, so a reader, or a run resumed after a crash, sees the old file or the
complete new one, never half of one, and an interrupted save leaves no temporary file behind.
Needs nothing beyond the standard library, so `import qlr` stays torch and numpy only.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

# The process umask, read once here: os.umask can only be read by setting it, and setting it
# while another thread creates files (a sweep trains trials in threads) would give them the
# wrong permissions.
_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_save(path: str | os.PathLike, write: Callable[[IO[bytes]], object]) -> Path:
    """Call `write` on a temporary file beside `path`, sync it, then rename it over `path`.

    Args:
        path: the file to write; its folder is created when missing.
        write: called once with the open binary file (``model.save``, ``np.save``, ...).

    Returns:
        `path`, as a `Path`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; the result is an ordinary file
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` atomically (see `atomic_save`); returns `path` as a `Path`."""
    return atomic_save(path, lambda f: f.write(data))
