"""The ``qlr`` command line: shipped configs found by name, and one-line usage errors.

The usage-error tests run the installed ``qlr`` script in a subprocess, from an empty folder
outside the checkout, as a user would.
"""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import sys
from pathlib import Path

import pytest

from qlr.agents import cli
from qlr.agents.bench.suites import load_suite
from qlr.agents.catalog import CONFIG_DIR, find_config, kind_of, names
from qlr.agents.cli import main
from qlr.agents.errors import UsageError
from qlr.agents.learn import train as train_command
from qlr.agents.learn.config import load_config

ROOT = Path(__file__).resolve().parent.parent
QLR = Path(sys.executable).parent / "qlr"  # the console script installed beside this Python


def run_qlr(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    assert QLR.is_file(), f"the qlr console script is not installed at {QLR}"
    return subprocess.run(
        [str(QLR), *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def assert_usage_error(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    """Exit status 2, one line on stderr holding every fragment, no traceback."""
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


# ------------------------------------------------------------------------------ usage errors
def test_unknown_suite_name_lists_the_shipped_suites(tmp_path: Path) -> None:
    result = run_qlr("compare", "--suite", "no_such_suite", cwd=tmp_path)
    assert_usage_error(result, "qlr compare", "'no_such_suite'", "hansen", "nn")
    assert not (tmp_path / "runs").exists()


def test_unknown_config_name_lists_the_shipped_configs(tmp_path: Path) -> None:
    result = run_qlr("train", "--config", "no_such_config", cwd=tmp_path)
    assert_usage_error(result, "qlr train", "'no_such_config'", "default", "tiny")
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    ("command", "flag", "choice"), [("train", "--config", "tiny"), ("compare", "--suite", "nn")]
)
def test_missing_file_is_named(tmp_path: Path, command: str, flag: str, choice: str) -> None:
    missing = tmp_path / "nowhere" / "missing.yaml"
    result = run_qlr(command, flag, str(missing), cwd=tmp_path)
    assert_usage_error(result, str(missing), "no such file", choice)


@pytest.mark.parametrize(
    ("command", "flag", "name", "says"),
    [
        ("compare", "--suite", "default", "is a training config"),
        ("train", "--config", "nn", "is a suite"),
    ],
)
def test_a_shipped_file_of_the_other_kind_is_refused(
    tmp_path: Path, command: str, flag: str, name: str, says: str
) -> None:
    result = run_qlr(command, flag, name, cwd=tmp_path)
    assert_usage_error(result, f"'{name}'", says)


def test_a_bad_override_is_one_line_naming_the_key(tmp_path: Path) -> None:
    result = run_qlr("train", "--config", "tiny", "--set", "env.horizn=3", cwd=tmp_path)
    assert_usage_error(result, "'horizn'", "horizon")


# ------------------------------------------------------------------------------ in process
def test_usage_errors_exit_2_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--resume", "no_such_run"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err == "qlr train: error: no_such_run holds no run to resume (no config.yaml)\n"


def test_a_bad_override_value_exits_2_naming_the_key(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--config", "tiny", "--set", "total_timesteps=-5"])
    assert exit_info.value.code == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("qlr train: error: tiny: total_timesteps must be an integer >= 1")


def test_a_bug_keeps_its_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only `UsageError` becomes a one-line exit; any other exception propagates."""

    def broken(args: object) -> int:
        raise RuntimeError("a genuine bug")

    monkeypatch.setattr(train_command, "run", broken)
    with pytest.raises(RuntimeError, match="a genuine bug"):
        main(["train", "--config", "tiny"])


def test_a_multi_line_usage_error_is_printed_on_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def refuse(args: object) -> int:
        raise UsageError("first part\n  second part")

    monkeypatch.setattr(train_command, "run", refuse)
    with pytest.raises(SystemExit, match="2"):
        main(["train"])
    assert capsys.readouterr().err == "qlr train: error: first part second part\n"


# ------------------------------------------------------------------------------ shipped configs
def test_shipped_configs_are_the_checkout_folder_in_an_editable_install() -> None:
    # One copy: the files a contributor edits are the ones found by name.
    assert CONFIG_DIR.resolve() == (ROOT / "experiments" / "configs").resolve()


def test_every_shipped_yaml_file_has_exactly_one_kind() -> None:
    suites = ["compare_tiny", "graduated", "hansen", "long", "nn", "noise_nn", "outside"]
    assert names("suite") == [*suites, "sequence"]
    assert names("train") == ["default", "noise", "tiny"]
    assert names("search") == ["sweep_example", "sweep_tiny"]
    listed = {*names("suite"), *names("train"), *names("search")}
    assert listed == {p.stem for p in CONFIG_DIR.glob("*.yaml")}


def test_configs_and_suites_load_by_name_from_any_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert load_config("tiny").name == "tiny"
    assert load_config("tiny").to_dict() == load_config(CONFIG_DIR / "tiny.yaml").to_dict()
    assert load_suite("compare_tiny").name == "compare_tiny"
    assert find_config("default", "train") == CONFIG_DIR / "default.yaml"


def test_a_path_wins_over_a_shipped_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny").write_text("total_timesteps: 7\n")  # a file called like a shipped config
    assert find_config("tiny", "train") == Path("tiny")
    assert load_config("tiny").total_timesteps == 7
    mine = tmp_path / "mine.yml"
    mine.write_text("problems: [quadratic]\nmethods: [constant]\n")
    assert load_suite(mine).name == "mine"


def test_a_file_of_the_wrong_kind_is_refused_by_path(tmp_path: Path) -> None:
    suite = tmp_path / "suite.yaml"
    suite.write_text("problems: [quadratic]\nmethods: [constant]\n")
    with pytest.raises(UsageError, match=r"is a suite .*shipped training configs: default"):
        load_config(suite)
    search = tmp_path / "search.yaml"
    search.write_text("space:\n  dqn.gamma: [0.9]\n")
    with pytest.raises(UsageError, match=r"is a search space .*shipped suites: compare_tiny"):
        load_suite(search)


def test_usage_errors_are_value_errors() -> None:
    # Library callers that caught ValueError before keep catching these.
    with pytest.raises(ValueError, match="no suite 'nope'"):
        load_suite("nope")
    with pytest.raises(ValueError, match="kind must be one of"):
        find_config("tiny", "recipe")


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        ({"problems": [], "methods": []}, "suite"),
        ({"env": {}}, "train"),
        ({"space": {}}, "search"),
        ({}, None),  # an empty training config is valid; its loader judges it
        ({"env": {}, "methods": []}, None),  # mixed: the loader lists the unknown keys
        (["env"], None),
    ],
)
def test_kind_of(data: object, kind: str | None) -> None:
    assert kind_of(data) == kind


def test_an_unknown_method_in_compare_is_one_line_naming_the_valid_ones(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit, match="^2$"):
        main(["compare", "--suite", "compare_tiny", "--methods", "constant", "magic"])
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "unknown method 'magic'" in err and "slope_rule" in err


# ------------------------------------------------------------------------------ missing extra
# (The wheel installed with no extra, in a fresh environment: tests/test_wheel.py.)
def test_without_the_train_extra_every_subcommand_is_listed_and_names_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "gymnasium", None)  # how a missing package looks to find_spec
    with pytest.raises(SystemExit, match="^0$"):
        main(["--help"])
    listing = capsys.readouterr().out
    for name in cli.SUBCOMMANDS:
        assert f"    {name} " in listing, listing
    for args in (["train", "--config", "tiny"], ["evaluate", "--help"], ["demo"]):
        with pytest.raises(SystemExit, match="^2$"):
            main(args)
        assert capsys.readouterr().err == (
            f"qlr {args[0]}: needs the 'train' extra: pip install 'qlr[train]' "
            "(gymnasium not installed)\n"
        )
    with pytest.raises(SystemExit, match="^2$"):
        main(["sweep"])
    assert "needs the 'train' and 'ray' extras: pip install 'qlr[train,ray]'" in (
        capsys.readouterr().err
    )


def test_with_the_train_extra_a_wrong_option_is_still_refused(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit, match="^2$"):
        main(["export", "a", "b", "--no-such-option"])
    assert "unrecognized arguments: --no-such-option" in capsys.readouterr().err


def test_the_command_line_knows_every_package_of_the_train_extra() -> None:
    tomllib = pytest.importorskip("tomllib")
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    extra = pyproject["project"]["optional-dependencies"]["train"]

    def canonical(name: str) -> str:
        return re.sub(r"[-_.]+", "-", name).lower()

    wanted = {canonical(re.match(r"[A-Za-z0-9._-]+", r).group(0)) for r in extra}
    providers = importlib.metadata.packages_distributions()
    covered = {canonical(d) for module in cli.TRAIN_MODULES for d in providers.get(module, [])}
    assert covered == wanted
