"""The ``qlr`` command line: ``qlr train | evaluate | compare | sweep | export | combine |
improve | demo``.

Each subcommand lives in its own module with two functions, ``configure(parser)`` and
``run(args) -> int``. Modules import their heavy dependencies inside ``run`` so that
``qlr --help`` answers at once.

A bare ``pip install qlr`` (torch and numpy) has the command too: ``qlr --help`` lists every
subcommand, and one whose extra is not installed says so in one line on stderr, with the
command that installs it, and exits with status 2. Its module is not imported then, since it
would fail on the first missing package.

A user's mistake (an unknown suite or config name, a missing file, a file of the wrong kind)
raises `qlr.agents.errors.UsageError`; `main` prints its message as one line on stderr and exits
with status 2, as argparse does for a bad option. Every other exception is a bug and keeps its
traceback.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from collections.abc import Callable

from qlr.agents.errors import UsageError

# name: (module, help, the extras it needs)
SUBCOMMANDS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "train": (
        "qlr.agents.learn.train",
        "train a DQN learning-rate controller from a config",
        ("train",),
    ),
    "evaluate": ("qlr.agents.bench.evaluate", "score a policy on held-out problems", ("train",)),
    "compare": (
        "qlr.agents.bench.compare",
        "run a benchmark suite of methods x problems x seeds",
        ("train",),
    ),
    "sweep": ("qlr.agents.learn.sweep", "many `qlr train` trials with Ray Tune", ("train", "ray")),
    "export": (
        "qlr.agents.learn.export",
        "write a run's Q-network to a deployable policy file",
        ("train",),
    ),
    "combine": (
        "qlr.agents.learn.combine",
        "combine policy files into an ensemble that may defer to the slope rule",
        ("train",),
    ),
    "improve": (
        "qlr.agents.learn.rollouts",
        "fit a policy to paired rollouts: the slope rule, overruled where copies of the run say so",
        ("train",),
    ),
    "demo": ("qlr.agents.demo", "a short demonstration on bundled data", ("train",)),
}

TRAIN_MODULES = (
    "yaml",
    "gymnasium",
    "stable_baselines3",
    "tensorboard",
    "tqdm",
    "rich",
    "matplotlib",
    "sklearn",
)
"""The import names of the ``train`` extra's packages (pyproject.toml), which every subcommand
needs. Ray (``qlr sweep``, ``qlr compare --backend ray``) is looked for where it is used."""


def missing_modules(modules: tuple[str, ...] = TRAIN_MODULES) -> list[str]:
    """The `modules` that are not installed, found without importing any of them."""
    return [name for name in modules if importlib.util.find_spec(name) is None]


def needs_extra_message(command: str, extras: tuple[str, ...], missing: list[str]) -> str:
    """The one line a subcommand prints when the ``train`` extra is not (fully) installed."""
    quoted = " and ".join(f"'{extra}'" for extra in extras)
    line = (
        f"qlr {command}: needs the {quoted} extra{'s' if len(extras) > 1 else ''}: "
        f"pip install 'qlr[{','.join(extras)}]'"
    )
    if len(missing) < len(TRAIN_MODULES):  # a partial install: say what it lacks
        line += f" ({', '.join(missing)} not installed)"
    return line


def _needs_extra(
    command: str, extras: tuple[str, ...], missing: list[str]
) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        print(needs_extra_message(command, extras, missing), file=sys.stderr)
        raise SystemExit(2)

    return run


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qlr", description="Learning-rate controllers learned with deep Q-learning."
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    missing = missing_modules()
    for name, (module_name, help_text, extras) in SUBCOMMANDS.items():
        more = [extra for extra in extras if extra != "train"]
        if missing:
            # Listed, and `qlr NAME ...` (any arguments, --help too) answers with the install
            # command: its module would fail on the first missing import, and without it the
            # options cannot even be described.
            sub = subparsers.add_parser(
                name, help=f"{help_text} (needs qlr[{','.join(extras)}])", add_help=False
            )
            sub.set_defaults(_run=_needs_extra(name, extras, missing), _any_arguments=True)
            continue
        if more:
            help_text = f"{help_text} (needs qlr[{','.join(more)}])"
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            if err.name != module_name:
                raise
            continue  # a subcommand whose module is not part of this version
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        module.configure(sub)
        sub.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the ``qlr`` command line; returns the exit status.

    Raises:
        SystemExit: status 2 on a usage error or a missing extra, after one line on stderr
            (argparse's own errors exit the same way).
    """
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown and not getattr(args, "_any_arguments", False):
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")  # as parse_args does
    try:
        return int(args._run(args) or 0)
    except UsageError as err:
        # One line, whatever the message holds, so that scripts can show or parse it.
        message = " ".join(str(err).split())
        print(f"qlr {args.command}: error: {message}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    sys.exit(main())
