"""`qlr demo`: the table it prints is also recorded, as Markdown and as numbers, with --results."""

from __future__ import annotations

import json
import math
from pathlib import Path

from qlr.agents.cli import main


def test_demo_records_its_table_and_numbers(tmp_path: Path, capsys) -> None:
    results = tmp_path / "results"
    argv = ["demo", "--epochs", "2", "--optimizers", "sgd", "--out", str(tmp_path / "runs")]
    assert main([*argv, "--results", str(results)]) == 0
    printed = capsys.readouterr().out
    record = json.loads((results / "demo.json").read_text())
    table = (results / "demo.md").read_text()
    assert (results / "demo.png").stat().st_size > 0
    assert record["command"].startswith("qlr demo --epochs 2 ") and record["command"] in table
    assert [(r["optimizer"], r["schedule"]) for r in record["runs"]] == [
        ("sgd", "constant"),
        ("sgd", "cosine"),
        ("sgd", "qlr"),
        ("sgd", "qlr+budget"),
    ]
    for run in record["runs"]:
        assert len(run["train_loss"]) == len(run["lr_per_epoch"]) == len(run["steps"]) == 2
        assert run["final_train_loss"] == run["train_loss"][-1] and math.isfinite(run["final_lr"])
        # The Markdown row and the printed table show the numbers the JSON holds.
        row = (
            f"| sgd | {run['schedule']} | {run['start_lr']:.3g} | {run['final_lr']:.3g} | "
            f"{run['final_train_loss']:.4f} | {run['test_accuracy']:.1%} |"
        )
        assert row in table
        assert f"{run['final_train_loss']:.4f}" in printed
    constant, cosine, _, _ = record["runs"]
    assert constant["final_lr"] == constant["start_lr"] > cosine["final_lr"]


def test_demo_writes_no_results_unless_asked(tmp_path: Path) -> None:
    out = tmp_path / "runs"
    assert main(["demo", "--epochs", "1", "--optimizers", "adam", "--out", str(out)]) == 0
    assert (out / "demo.png").is_file()
    assert not list(tmp_path.rglob("demo.json")) and not list(tmp_path.rglob("demo.md"))
