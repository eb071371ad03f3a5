"""Saving matplotlib figures whole: rendered in memory, then written atomically."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from qlr._atomic import atomic_write_bytes


def save_figure(fig: Any, path: Path, dpi: int = 110) -> Path:
    """Write `fig` as PNG to `path`; an interrupted run never leaves half an image behind."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    atomic_write_bytes(Path(path), buffer.getvalue())
    return Path(path)
