"""The configs shipped with qlr, found by name, and what kind of file each one is.

``experiments/configs/`` is where they are edited; it installs as the package ``qlr.configs``
(pyproject.toml), so a checkout and an installed wheel find the same files by name. Three kinds
of YAML file live there, told apart by their top-level keys:

* ``suite``: a benchmark suite for ``qlr compare --suite`` (``problems``, ``methods``);
* ``train``: a training config for ``qlr train --config`` (``env``, ``dqn``);
* ``search``: a search space for ``qlr sweep --search`` (``space``).

Example:
    >>> find_config("nn", "suite").name
    'nn.yaml'
    >>> names("train")
    ['default', 'noise', 'tiny']
"""

from __future__ import annotations

import importlib.resources
import os
from pathlib import Path
from typing import Any

import yaml

from qlr.agents.errors import UsageError

KINDS: dict[str, str] = {
    "suite": "suite",
    "train": "training config",
    "search": "search space",
}
# The top-level keys that make a file one kind (any one of them suffices).
MARKERS: dict[str, tuple[str, ...]] = {
    "suite": ("problems", "methods"),
    "train": ("env", "dqn"),
    "search": ("space",),
}
# Where each kind is used, for the message that a file of another kind was given.
USED_BY: dict[str, str] = {
    "suite": "qlr compare --suite",
    "train": "qlr train --config",
    "search": "qlr sweep --search",
}
SUFFIXES = (".yaml", ".yml")


def _config_dir() -> Path:
    root = importlib.resources.files("qlr.configs")
    # A wheel installs unpacked and an editable install points at the checkout: both give a
    # folder. Only a zipped import would not, and then names cannot be listed as files.
    if not isinstance(root, Path):
        raise RuntimeError(f"qlr.configs is not a folder on disk ({root!r}); install qlr unzipped")
    return root


CONFIG_DIR: Path = _config_dir()
"""The folder of the shipped configs: ``experiments/configs`` in a checkout, ``qlr/configs`` in
an installed wheel."""


def kind_of(data: Any) -> str | None:
    """The kind of a parsed YAML file: the one kind whose keys it has, else None.

    A mapping with the keys of no kind (an empty training config, say) or of several is None:
    the loader of the kind asked for reports what is wrong with it.
    """
    if not isinstance(data, dict):
        return None
    kinds = [kind for kind, keys in MARKERS.items() if any(key in data for key in keys)]
    return kinds[0] if len(kinds) == 1 else None


def _file_kind(path: Path) -> str | None:
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError:
        return None  # the loader reports the syntax error with its position
    return kind_of(data)


def shipped() -> dict[str, str | None]:
    """Every shipped config's name (the file's stem) and its kind."""
    files = sorted(p for p in CONFIG_DIR.iterdir() if p.suffix in SUFFIXES and p.is_file())
    return {p.stem: _file_kind(p) for p in files}


def names(kind: str) -> list[str]:
    """The names of the shipped configs of `kind` (``suite``, ``train`` or ``search``)."""
    _check_kind(kind)
    return [name for name, found in shipped().items() if found == kind]


def find_config(name: str | os.PathLike[str], kind: str) -> Path:
    """The YAML file meant by `name`: a path to a file, or the name of a shipped config.

    Args:
        name: a path to a YAML file, or a bare name such as ``"nn"`` or ``"default"`` (no folder,
            no suffix) looked up in `CONFIG_DIR`.
        kind: what the caller reads: ``"suite"``, ``"train"`` or ``"search"``.

    Returns:
        The file. A file whose top-level keys are plainly another kind's is refused; one with no
        kind's keys is returned, for the loader to judge.

    Raises:
        UsageError: no such file; no shipped config of that name; a file of another kind. The
            message names what was given and lists the shipped configs of `kind`.
    """
    _check_kind(kind)
    text = os.fspath(name)
    path = Path(text)
    label = KINDS[kind]
    if path.is_file():
        _check_file_kind(path, kind, text)
        return path
    choices = ", ".join(names(kind))
    bare = path.suffix not in SUFFIXES and os.sep not in text and "/" not in text
    if not bare:
        what = "a folder, not a file" if path.is_dir() else "no such file"
        raise UsageError(f"no {label} {text!r}: {what}; shipped {label}s: {choices}")
    candidate = CONFIG_DIR / f"{text}.yaml"
    if not candidate.is_file():
        raise UsageError(f"no {label} {text!r}: not a YAML file, nor a shipped {label} ({choices})")
    _check_file_kind(candidate, kind, text)
    return candidate


def _check_file_kind(path: Path, kind: str, given: str) -> None:
    found = _file_kind(path)
    if found is None or found == kind:
        return
    keys = " or ".join(MARKERS[kind])
    raise UsageError(
        f"{given!r} is a {KINDS[found]} (for {USED_BY[found]}), not a {KINDS[kind]} (which has "
        f"{keys}); shipped {KINDS[kind]}s: {', '.join(names(kind))}"
    )


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {list(KINDS)}, got {kind!r}")
