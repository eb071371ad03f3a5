"""How the API reference finds qlr's public names without importing anything.

mkdocstrings reads the source statically (griffe). Two things in qlr's layout are invisible to a
static reader, and this extension supplies them:

* ``qlr.envs`` and ``qlr.agents`` live in folders outside ``qlr/``
  (``[tool.setuptools.package-dir]`` in pyproject.toml maps them), so they are loaded from those
  folders and attached under ``qlr``.
* ``QLRCallback`` is built on first use, on top of Lightning's callback class (the module
  imports no framework before that). Its documented behaviour is the logic class it is built
  from, so the reference shows that class under the public name.

``QLRTrainerCallback`` needs nothing from here: it is a class in the source
(``qlr/integrations/huggingface/_callback.py``), which ``qlr.integrations.huggingface`` imports
under ``TYPE_CHECKING`` and loads on first access at run time. Griffe reads that import as an
alias, so the reference finds the class under its public name.
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
