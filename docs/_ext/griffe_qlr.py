"""How the API reference finds qlr's public names without importing anything.

mkdocstrings reads the source statically (griffe). Two things in qlr's layout are invisible to a
static reader, and this extension supplies them:

* ``qlr.envs`` and ``qlr.agents`` live in folders outside ``qlr/``
  (``[tool.setuptools.package-dir]`` in pyproject.toml maps them), so they are loaded from those
  folders and attached under ``qlr``.
* ``QLRCallback`` and ``QLRTrainerCallback`` are built on first use, on top of the framework's
  callback class (the integrations import no framework before that). Their documented
  behaviour is the logic class they are built from, so the reference shows that class under
  the public name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import griffe

ROOT = Path(__file__).resolve().parents[2]

# The subpackages of qlr that live in other folders (pyproject.toml, package-dir).
MAPPED = {"envs": "envs", "agents": "agents"}

# module: {public name: the class it is built from}
BUILT_ON_FIRST_USE = {
    "integrations.lightning": {"QLRCallback": "_QLRCallbackLogic"},
    "integrations.huggingface": {"QLRTrainerCallback": "_QLRTrainerCallbackLogic"},
}


class QLRLayout(griffe.Extension):
    def on_package(self, *, pkg: griffe.Module, loader: griffe.GriffeLoader, **kwargs: Any) -> None:
        if pkg.name != "qlr":
            return
        for name, folder in MAPPED.items():
            if name not in pkg.members and (ROOT / folder / "__init__.py").exists():
                pkg.set_member(name, loader.load(ROOT / folder, try_relative_path=True))
        for module_path, names in BUILT_ON_FIRST_USE.items():
            module = pkg[module_path]
            for public, logic in names.items():
                if public in module.members:  # defined in the source: nothing to supply
                    continue
                if logic not in module.members:
                    raise KeyError(
                        f"{module.path}.{logic}, which {public} is built from, is gone: "
                        f"update BUILT_ON_FIRST_USE in {__file__}"
                    )
                module.set_member(public, griffe.Alias(public, module[logic], parent=module))
