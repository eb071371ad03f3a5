"""The built wheel: it ships the configs, the policies and ``py.typed``, and works from anywhere.

The wheel is built from a copy of the sources, installed into a fresh virtual environment, and
run from an empty folder, so nothing of the checkout can be found by accident. The dependencies
(torch, stable-baselines3, ...) come from this environment through a ``.pth`` file instead of a
download; a ``.pth`` file only adds a folder to ``sys.path`` and does not run the ``.pth`` files
in it, so this environment's editable install of qlr stays out (the test checks where qlr is
imported from).

The bare install (``pip install qlr``: torch and numpy, no extra) cannot borrow this
environment's packages, which hold every extra: it installs torch and the wheel with pip into
an environment of its own, which takes tens of seconds; it runs in the default test run, since
it is the one check that a user's ``pip install qlr`` works.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
# What the build reads: pyproject's packages and package-dir, and the README (the long description).
SOURCES = ("pyproject.toml", "README.md", "qlr", "envs", "agents", "experiments/configs")


def run(args: list[str | Path], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    return subprocess.run(
        [str(a) for a in args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, f"{result.args}\n{result.stdout}\n{result.stderr}"
    return result.stdout


def build_wheel(tmp_path: Path) -> Path:
    # A copy, so that the build's build/ and *.egg-info folders never land in the checkout.
    src = tmp_path / "src"
    for name in SOURCES:
        source, target = ROOT / name, src / name
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    dist = tmp_path / "dist"
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"]
    ok(run([*pip_wheel, "--no-index", "-w", dist, src], cwd=tmp_path))
    (wheel,) = dist.glob("qlr-*.whl")
    return wheel


def make_venv(tmp_path: Path, wheel: Path) -> Path:
    """A fresh environment holding the wheel; its dependencies are this environment's."""
    venv = tmp_path / "venv"
    ok(run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=tmp_path))
    python = venv / "bin" / "python"
    pip_install = [sys.executable, "-m", "pip", "--python", python, "install", "--no-deps"]
    ok(run([*pip_install, "--no-index", wheel], cwd=tmp_path))
    purelib = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    site = ok(run([python, "-c", purelib], cwd=tmp_path))
    ours = {sysconfig.get_paths()[key] for key in ("purelib", "platlib")}
    (Path(site.strip()) / "_dependencies.pth").write_text("\n".join(sorted(ours)) + "\n")
    return venv


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_wheel(tmp_path_factory.mktemp("wheel"))


def test_the_wheel_ships_the_configs_the_policies_and_py_typed(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        files = set(archive.namelist())
    configs = {p.name for p in (ROOT / "experiments" / "configs").glob("*.yaml")}
    assert {"nn.yaml", "compare_tiny.yaml", "default.yaml", "tiny.yaml"} <= configs
    assert {f"qlr/configs/{name}" for name in configs} <= files
    assert "qlr/configs/__init__.py" in files
    assert {"qlr/policies/default.qlr", "qlr/policies/noise.qlr", "qlr/py.typed"} <= files
    assert {"qlr/agents/catalog.py", "qlr/envs/env.py", "qlr/integrations/lightning.py"} <= files
    assert not [f for f in files if "__pycache__" in f or f.startswith(("tests/", "experiments/"))]


def test_the_installed_wheel_runs_from_an_empty_folder(wheel: Path, tmp_path: Path) -> None:
    venv = make_venv(tmp_path, wheel)
    qlr = venv / "bin" / "qlr"
    work = tmp_path / "work"  # an empty folder: no experiments/ and no qlr/ beside the command
    work.mkdir()

    where = ok(
        run(
            [
                venv / "bin" / "python",
                "-c",
                "import qlr, qlr.agents.catalog as c; print(qlr.__file__); "
                "print(c.CONFIG_DIR); print(qlr.load_policy('default').n_actions)",
            ],
            cwd=work,
        )
    ).splitlines()
    package = (venv / "lib").resolve()
    assert Path(where[0]).resolve().is_relative_to(package), where  # the wheel, not the checkout
    assert Path(where[1]).resolve().is_relative_to(package), where
    assert int(where[2]) == 5  # the shipped policy (five factors) loads from the package data

    out = tmp_path / "c"
    compare = [qlr, "compare", "--suite", "compare_tiny", "--seeds", "1", "--jobs", "1"]
    ok(run([*compare, "--no-progress-bar", "--out", out], cwd=work))
    assert "compare_tiny" in (out / "summary.md").read_text()
    assert (out / "runs.csv").is_file()

    run_dir = tmp_path / "t"
    small = ["--set", "total_timesteps=120", "--set", "eval_freq=0", "--set", "final_eval=null"]
    ok(run([qlr, "train", "--config", "tiny", *small, "--out", run_dir, "--no-progress-bar"], work))
    assert (run_dir / "final_policy.qlr").is_file()
    assert "name: tiny" in (run_dir / "config.yaml").read_text()

    wrong = run([qlr, "compare", "--suite", "no_such_suite"], cwd=work)
    assert wrong.returncode == 2, wrong.stderr
    assert "Traceback" not in wrong.stderr
    (line,) = wrong.stderr.splitlines()
    assert "'no_such_suite'" in line and "hansen" in line
    assert sorted(p.name for p in work.iterdir()) == []  # every output went where it was told


# ------------------------------------------------------------------------------ bare install
# The import names of the `train` extra's packages, none of which a bare install has.
TRAIN_MODULES = ("yaml", "gymnasium", "stable_baselines3", "tensorboard", "sklearn", "matplotlib")
SUBCOMMANDS = ("train", "evaluate", "compare", "sweep", "export", "demo")
SCHEDULER_STEPS = """
import torch, qlr
torch.manual_seed(0)
model = torch.nn.Linear(4, 1)
optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
scheduler = qlr.QLRScheduler(optimizer)
x = torch.randn(64, 4)
y = x @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]])
rates, losses = [], []
for _ in range(40):
    loss = torch.nn.functional.mse_loss(model(x), y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    scheduler.step(loss)
    rates.append(scheduler.get_last_lr()[0])
    losses.append(loss.item())
print(qlr.__file__)
print(len(set(rates)), losses[-1] < losses[0])
"""


def make_bare_venv(tmp_path: Path, wheel: Path) -> Path:
    """A fresh environment holding the wheel and only what it requires, installed by pip."""
    venv = tmp_path / "bare"
    ok(run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=tmp_path))
    pip_install = [sys.executable, "-m", "pip", "--python", venv / "bin" / "python", "install"]
    # torch first, the build this environment runs (pip finds it where it found it before): a
    # bare `torch` requirement with no torch installed can pull a multi-GB CUDA build.
    ok(run([*pip_install, "--quiet", f"torch=={torch.__version__}"], cwd=tmp_path, timeout=900))
    ok(run([*pip_install, "--quiet", wheel], cwd=tmp_path, timeout=900))  # numpy comes with it
    return venv


def test_a_bare_install_schedules_and_its_command_names_the_extra(
    wheel: Path, tmp_path: Path
) -> None:
    venv = make_bare_venv(tmp_path, wheel)
    python, qlr = venv / "bin" / "python", venv / "bin" / "qlr"
    work = tmp_path / "work"
    work.mkdir()

    found = "import importlib.util as u; print([m for m in {!r} if u.find_spec(m)])"
    assert ok(run([python, "-c", found.format(TRAIN_MODULES)], cwd=work)).strip() == "[]"

    # The scheduler: the shipped policy loads from the package and moves the rate.
    where, moved = ok(run([python, "-c", SCHEDULER_STEPS], cwd=work)).splitlines()
    assert Path(where).resolve().is_relative_to((venv / "lib").resolve()), where
    rates, improved = moved.split()
    assert int(rates) > 1 and improved == "True", moved

    # The command: --help lists every subcommand; each one names the extra it needs.
    listing = ok(run([qlr, "--help"], cwd=work))
    for name in SUBCOMMANDS:
        assert f"    {name} " in listing, listing
    train = "needs the 'train' extra: pip install 'qlr[train]'"
    for args, line in [
        (["train"], f"qlr train: {train}"),
        (["train", "--config", "default", "--help"], f"qlr train: {train}"),
        (["compare", "--suite", "nn"], f"qlr compare: {train}"),
        (["sweep"], "qlr sweep: needs the 'train' and 'ray' extras: pip install 'qlr[train,ray]'"),
    ]:
        result = run([qlr, *args], cwd=work)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        assert result.stderr.splitlines() == [line], (args, result.stderr)
        assert not result.stdout, (args, result.stdout)
    assert sorted(p.name for p in work.iterdir()) == []
