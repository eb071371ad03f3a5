"""What importing qlr loads at run time.

The static layers (`qlr.agents.learn` -> `qlr.agents.bench` -> `qlr.envs` -> `qlr`, and which
third-party packages each may import) are import-linter contracts in pyproject.toml, checked by
`make lint`. These tests check what those contracts cannot see: the modules a fresh interpreter
really holds after an import, through third-party packages and `importlib` included.
"""

import subprocess
import sys


def test_import_qlr_loads_no_training_dependencies():
    """A user who deploys a scheduler needs only torch and numpy."""
    code = (
        "import sys, qlr; "
        "heavy = [m for m in ('gymnasium', 'stable_baselines3', 'tensorboard', 'yaml', 'sklearn', "
        "'ray') "
        "if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_local_compare_backend_and_the_cli_never_load_ray():
    """Ray is an optional extra: `qlr --help` and a local compare run without it.

    The command line finds its subcommands with `importlib`, which no static contract follows.
    """
    code = (
        "import sys; from qlr.agents.cli import build_parser; build_parser(); "
        "from qlr.agents.bench.runner import make_specs, run_all; "
        "from qlr.agents.bench.suites import load_suite; "
        "specs, _ = make_specs(load_suite('compare_tiny')); run_all(specs[:2], progress=False); "
        "assert 'ray' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
