"""The training configs and benchmark suites, installed as the package ``qlr.configs``.

This folder is where they are edited; pyproject.toml maps it to ``qlr.configs`` and ships its
YAML files as package data, so ``qlr train --config default`` and ``qlr compare --suite nn`` find
them by name from any folder, in a checkout and in an installed wheel alike. The file makes the
folder a regular package, which the editable install needs to import it.
"""
