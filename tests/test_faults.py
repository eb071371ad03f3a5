"""Fault tolerance: a SIGKILLed `qlr train` resumes, and a scheduler resumes in a fresh process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from qlr import QLRScheduler
from qlr.agents.learn.callbacks import latest_checkpoint
from qlr.policy import Policy, save_policy

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "experiments" / "configs" / "tiny.yaml"
TOTAL = 600


def _train_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "qlr.agents.cli", "train", *args, "--no-progress-bar"]


def _env() -> dict[str, str]:
    # One thread per child: the machine is shared and tiny tensors gain nothing from more.
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


# ---------------------------------------------------------------------------------- qlr train
def test_a_killed_training_run_resumes_to_the_same_total(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    overrides = [f"total_timesteps={TOTAL}", "checkpoint_freq=150", "eval_freq=0"]
    overrides += ["final_eval=null"]
    command = _train_command("--config", str(TINY), "--out", str(run_dir))
    for item in overrides:
        command += ["--set", item]
    child = subprocess.Popen(
        command, env=_env(), cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 120
    try:
        # Poll the marker, not the model: the marker is written last, after model and buffer.
        while not list((run_dir / "checkpoints").glob("checkpoint_*.json")):
            assert child.poll() is None, child.stderr.read().decode() if child.stderr else ""
            assert time.monotonic() < deadline, "no checkpoint within 120 s"
            time.sleep(0.01)
        child.send_signal(signal.SIGKILL)
        assert child.wait(timeout=30) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert not (run_dir / "summary.json").exists()  # killed before the end
    killed_at = latest_checkpoint(run_dir / "checkpoints")
    assert killed_at is not None and killed_at.num_timesteps < TOTAL
    # What a kill in the middle of a save leaves behind; the resume must clear it away.
    (run_dir / "checkpoints" / ".model_999.zip.x1y2.tmp").write_bytes(b"half a model")

    done = subprocess.run(
        _train_command("--resume", str(run_dir)),
        env=_env(),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["num_timesteps"] >= TOTAL
    assert summary["session_timesteps"] == summary["num_timesteps"] - killed_at.num_timesteps
    last = latest_checkpoint(run_dir / "checkpoints")
    assert last is not None and last.num_timesteps == summary["num_timesteps"]
    assert [p for p in run_dir.rglob("*") if ".tmp" in p.name] == []


# ---------------------------------------------------------------------------------- scheduler
# Rebuilds the test's model, optimizer and scheduler from scratch, loads the saved state and
# prints the rates of the next steps: argv = policy path, state path, steps.
_CONTINUE = """
import json, sys
import torch
from qlr import QLRScheduler

torch.set_num_threads(1)
policy, state_path, steps = sys.argv[1], sys.argv[2], int(sys.argv[3])
torch.manual_seed(0)
model = torch.nn.Linear(8, 1)
optimizer = torch.optim.SGD(model.parameters(), lr=0.001, momentum=0.9)
scheduler = QLRScheduler(optimizer, policy=policy, min_lr=1e-4, max_lr=10.0)
state = torch.load(state_path, weights_only=True)
model.load_state_dict(state["model"])
optimizer.load_state_dict(state["optimizer"])
scheduler.load_state_dict(state["scheduler"])
x, y = state["x"], state["y"]
lrs = []
for _ in range(steps):
    optimizer.zero_grad()
    loss = torch.nn.functional.mse_loss(model(x), y)
    loss.backward()
    optimizer.step()
    scheduler.step(loss)
    lrs.append(optimizer.param_groups[0]["lr"])
print(json.dumps(lrs))
"""


def _run_steps(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: QLRScheduler,
    x: torch.Tensor,
    y: torch.Tensor,
    steps: int,
) -> list[float]:
    lrs = []
    for _ in range(steps):
        optimizer.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        optimizer.step()
        scheduler.step(loss)
        lrs.append(optimizer.param_groups[0]["lr"])
    return lrs


def test_scheduler_state_resumes_identically_in_a_fresh_process(
    tmp_path: Path, make_policy: Callable[..., Policy]
) -> None:
    policy = save_policy(make_policy(seed=5, interval=3), tmp_path / "random.qlr")
    torch.manual_seed(0)
    model = torch.nn.Linear(8, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.001, momentum=0.9)
    scheduler = QLRScheduler(optimizer, policy=policy, min_lr=1e-4, max_lr=10.0)
    x = torch.randn(64, 8, generator=torch.Generator().manual_seed(1))
    y = x @ torch.linspace(-1, 1, 8).unsqueeze(1) + 0.1
    # 13 steps: mid-interval (interval 3), so the tracker's partial window must come back too;
    # early, while this policy still raises the rate (later it holds, or cuts after a blow-up).
    _run_steps(model, optimizer, scheduler, x, y, 13)
    state = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "x": x,
        "y": y,
    }
    torch.save(state, tmp_path / "state.pt")

    steps = 80
    expected = _run_steps(model, optimizer, scheduler, x, y, steps)
    done = subprocess.run(
        [sys.executable, "-c", _CONTINUE, str(policy), str(tmp_path / "state.pt"), str(steps)],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert scheduler.decisions >= 30  # the comparison covers many decisions
    assert len(set(expected)) > 1  # the policy really moved the rate
    assert got == expected
