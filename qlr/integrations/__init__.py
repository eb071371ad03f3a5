"""Callbacks that run a `QLRScheduler` inside training frameworks.

Importing this package imports no framework; each callback imports its framework on first use:

    from qlr.integrations.lightning import QLRCallback  # Lightning
    from qlr.integrations.huggingface import QLRTrainerCallback  # transformers.Trainer

Both names are also available from here, resolved lazily.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "QLRCallback": "qlr.integrations.lightning",
    "QLRTrainerCallback": "qlr.integrations.huggingface",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    # Resolved on access so that `import qlr.integrations` loads neither framework.
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
