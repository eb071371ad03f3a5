"""Distributed training on two CPU processes (gloo, loopback): every rank decides alike.

Each rank trains on its own micro-batches, so the losses the ranks see differ: the scheduler
must sum its statistics over the group for the ranks to keep one rate. Under FSDP2 each rank
holds a shard of every parameter (a DTensor), and the inner products are summed shard by shard,
so on the same data a sharded run sees what a replicated (DDP) run sees.
"""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

WORLD = 2
STEPS = 60
START_LR = 1e-3


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _model() -> torch.nn.Module:
    torch.manual_seed(0)  # the same initial parameters on every rank and in every mode
    return torch.nn.Sequential(
        torch.nn.Linear(8, 32),
        torch.nn.Tanh(),
        torch.nn.Linear(32, 32),
        torch.nn.Tanh(),
        torch.nn.Linear(32, 1),
    )


def _train(rank: int, mode: str, port: int, out: str) -> None:
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        from qlr import QLRScheduler

        model = _model()
        full_numel = sum(p.numel() for p in model.parameters())
        if mode == "ddp":
            model = torch.nn.parallel.DistributedDataParallel(model)
        elif mode == "fsdp":
            from torch.distributed.fsdp import fully_shard

            fully_shard(model)
        optimizer = torch.optim.Adam(model.parameters(), lr=START_LR)
        scheduler = QLRScheduler(optimizer)
        gen = torch.Generator().manual_seed(100 + rank)  # each rank its own micro-batches
        target = torch.linspace(-1, 1, 8).unsqueeze(1)
        lrs, observations = [], []
        for _ in range(STEPS):
            x = torch.randn(16, 8, generator=gen)
            y = torch.sin(x @ target) + 0.05 * torch.randn(16, 1, generator=gen)
            optimizer.zero_grad()
            loss = torch.nn.functional.mse_loss(model(x), y)
            loss.backward()
            optimizer.step()
            scheduler.step(loss)
            lrs.append(float(optimizer.param_groups[0]["lr"]))
            if scheduler.decisions > len(observations):
                observations.append(scheduler.last_observation.tolist())
        local_numel = sum(
            getattr(p, "to_local", lambda p=p: p)().numel() for p in model.parameters()
        )
        torch.save(
            {
                "lrs": lrs,
                "observations": observations,
                "buffer_numel": scheduler.controller.tracker.buffer_numel,
                "local_numel": local_numel,
                "full_numel": full_numel,
            },
            os.path.join(out, f"{mode}-{rank}.pt"),
        )
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Both modes, two ranks each: {mode: [rank 0's record, rank 1's record]}."""
    out = tmp_path_factory.mktemp("distributed")
    records = {}
    for mode in ("ddp", "fsdp"):
        mp.spawn(_train, args=(mode, _free_port(), str(out)), nprocs=WORLD, join=True)
        records[mode] = [torch.load(out / f"{mode}-{rank}.pt") for rank in range(WORLD)]
    return records


@pytest.mark.parametrize("mode", ["ddp", "fsdp"])
def test_every_rank_keeps_the_same_rate_at_every_step(runs, mode):
    first, second = runs[mode]
    assert first["lrs"] == second["lrs"]
    assert first["observations"] == second["observations"]
    assert len(set(first["lrs"])) > 2, "the rate never moved: the test shows nothing"


def test_sharded_training_sees_what_replicated_training_sees(runs):
    ddp, fsdp = runs["ddp"][0], runs["fsdp"][0]
    decisions = 4
    assert len(ddp["observations"]) >= decisions
    for seen_ddp, seen_fsdp in zip(
        ddp["observations"][:decisions], fsdp["observations"][:decisions], strict=True
    ):
        assert seen_fsdp == pytest.approx(seen_ddp, abs=1e-4)
    steps = decisions * (len(ddp["lrs"]) // len(ddp["observations"]))
    assert fsdp["lrs"][:steps] == pytest.approx(ddp["lrs"][:steps], rel=1e-6)


def test_a_sharded_rank_keeps_a_buffer_the_size_of_its_shard(runs):
    for record in runs["fsdp"]:
        assert 0 < record["buffer_numel"] <= record["local_numel"] < record["full_numel"]
