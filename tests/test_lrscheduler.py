"""`QLRScheduler` as a torch scheduler: the base class, and Lightning driving it unaided."""

import pytest
import torch

from qlr import QLRScheduler

LR = 0.01


def test_it_is_a_torch_scheduler_stepped_like_reduce_on_plateau(make_policy):
    optimizer = torch.optim.SGD(torch.nn.Linear(3, 1).parameters(), lr=LR)
    scheduler = QLRScheduler(optimizer, policy=make_policy(favour=2, interval=2))
    assert isinstance(scheduler, torch.optim.lr_scheduler.LRScheduler)
    # Stepped with a metric, as ReduceLROnPlateau is: frameworks pass the monitored loss.
    assert isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
    assert optimizer.param_groups[0]["lr"] == LR  # construction never changes the rate
    assert scheduler.base_lrs == [LR]
    for _ in range(4):
        scheduler.step(1.0)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(LR * 4)
    assert scheduler.get_last_lr() == pytest.approx([LR * 4])
    assert scheduler.last_epoch == 4


def lightning_module(scheduler_config):
    import lightning.pytorch as pl

    class Regression(pl.LightningModule):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.net = torch.nn.Linear(4, 1)
            self.lrs = []

        def training_step(self, batch, batch_idx):
            x, y = batch
            loss = torch.nn.functional.mse_loss(self.net(x), y)
            self.log("train_loss", loss)
            self.lrs.append(self.optimizers().param_groups[0]["lr"])
            return loss

        def configure_optimizers(self):
            optimizer = torch.optim.SGD(self.parameters(), lr=LR)
            config = scheduler_config(optimizer)
            return {"optimizer": optimizer, "lr_scheduler": config}

    return Regression()


@pytest.mark.filterwarnings("ignore::UserWarning:lightning")
def test_lightning_drives_it_from_configure_optimizers_without_a_callback(make_policy):
    pl = pytest.importorskip("lightning.pytorch")
    policy = make_policy(favour=2, interval=2)  # doubles the rate every second step
    schedulers = []

    def config(optimizer):
        schedulers.append(QLRScheduler(optimizer, policy=policy))
        return {"scheduler": schedulers[-1], "interval": "step", "monitor": "train_loss"}

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(64, 4, generator=gen)
    y = x.sum(dim=1, keepdim=True)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=8)
    module = lightning_module(config)
    trainer = pl.Trainer(
        max_steps=6,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, loader)
    (scheduler,) = schedulers
    assert scheduler.steps == 6 and scheduler.decisions == 3
    assert module.lrs == pytest.approx([LR, LR, 2 * LR, 2 * LR, 4 * LR, 4 * LR])
    assert scheduler.optimizer.param_groups[0]["lr"] == pytest.approx(8 * LR)
