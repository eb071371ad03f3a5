"""`import qlr` stays light: a user who deploys a scheduler needs only torch and numpy."""

import subprocess
import sys


def test_import_qlr_loads_no_training_dependencies():
    code = (
        "import sys, qlr; "
        "heavy = [m for m in ('gymnasium', 'stable_baselines3', 'tensorboard', 'yaml', 'sklearn', "
        "'ray') "
        "if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_qlr_core_never_imports_envs_or_agents():
    import re
    from pathlib import Path

    import qlr

    upward = re.compile(r"^\s*(from|import)\s+qlr\.(envs|agents)\b", re.MULTILINE)
    for path in Path(qlr.__file__).parent.rglob("*.py"):
        assert not upward.search(path.read_text()), path.name


def test_bench_never_imports_learn():
    """`qlr.agents.learn` may use the benchmarks; the benchmarks never need the training side."""
    import re
    from pathlib import Path

    import qlr.agents.bench

    package = Path(qlr.agents.bench.__file__).parent
    modules = sorted(p.stem for p in package.glob("*.py") if p.stem != "__init__")
    assert {"compare", "evaluate", "baselines", "report"} <= set(modules)
    upward = re.compile(r"^\s*(from|import)\s+qlr\.agents\.learn\b", re.MULTILINE)
    for path in package.glob("*.py"):
        assert not upward.search(path.read_text()), path.name
    # Loading every bench module (lazy imports included once a suite runs) pulls in no training
    # code and not stable-baselines3.
    code = (
        "import importlib, sys; "
        f"[importlib.import_module('qlr.agents.bench.' + m) for m in {modules!r}]; "
        "from qlr.agents.bench.compare import load_suite, make_specs, run_all; "
        "specs, _ = make_specs(load_suite('compare_tiny')); run_all(specs[:2], progress=False); "
        "loaded = [m for m in sys.modules "
        "if m.startswith('qlr.agents.learn') or m.startswith('stable_baselines3')]; "
        "assert not loaded, loaded"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_local_compare_backend_and_the_cli_never_load_ray():
    """Ray is an optional extra: `qlr --help` and a local compare run without it."""
    code = (
        "import sys; from qlr.agents.cli import build_parser; build_parser(); "
        "from qlr.agents.bench.compare import load_suite, make_specs, run_all; "
        "specs, _ = make_specs(load_suite('compare_tiny')); run_all(specs[:2], progress=False); "
        "assert 'ray' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
