"""The Lightning and Hugging Face callbacks, in real (tiny) training runs on CPU."""

import subprocess
import sys

import pytest
import torch

LR = 0.01


def regression_data(n=64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=gen)
    y = x @ torch.randn(4, 1, generator=gen) + 0.1 * torch.randn(n, 1, generator=gen)
    return x, y


# ---------------------------------------------------------------------------------- imports
def test_importing_qlr_and_the_integrations_loads_no_framework():
    code = (
        "import sys, qlr, qlr.integrations, qlr.integrations.lightning, "
        "qlr.integrations.huggingface; "
        "loaded = [m for m in ('lightning', 'pytorch_lightning', 'transformers') "
        "if m in sys.modules]; "
        "assert not loaded, loaded"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize(
    "blocked, module, name",
    [
        (("lightning", "pytorch_lightning"), "qlr.integrations.lightning", "QLRCallback"),
        (("transformers",), "qlr.integrations.huggingface", "QLRTrainerCallback"),
    ],
)
def test_a_missing_framework_fails_only_on_use_and_names_itself(blocked, module, name):
    code = (
        "import sys\n"
        f"for m in {blocked!r}: sys.modules[m] = None  # as if not installed\n"
        f"import {module} as mod\n"
        "try:\n"
        f"    from {module} import {name}\n"
        "except ImportError as err:\n"
        f"    assert {blocked[0]!r} in str(err), err\n"
        "else:\n"
        "    raise AssertionError('no ImportError')\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_unknown_scheduler_arguments_fail_at_construction(make_policy):
    pytest.importorskip("lightning")
    from qlr.integrations.lightning import QLRCallback

    with pytest.raises(TypeError, match="unexpected keyword argument 'max_rate'"):
        QLRCallback(policy=make_policy(), max_rate=1.0)


# ---------------------------------------------------------------------------------- Lightning
def lightning_module(manual=False):
    import lightning.pytorch as pl

    class Regression(pl.LightningModule):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.net = torch.nn.Linear(4, 1)
            self.automatic_optimization = not manual
            self.losses = []  # every training loss, as computed

        def training_step(self, batch, batch_idx):
            x, y = batch
            loss = torch.nn.functional.mse_loss(self.net(x), y)
            self.losses.append(loss.item())
            if manual:
                opt = self.optimizers()
                opt.zero_grad()
                self.manual_backward(loss)
                opt.step()
            return loss

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=LR)

    return Regression()


def lightning_trainer(callback, max_steps=6, **kwargs):
    import lightning.pytorch as pl

    return pl.Trainer(
        max_steps=max_steps,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[callback],
        **kwargs,
    )


def lightning_loader():
    x, y = regression_data()
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=4)


@pytest.mark.filterwarnings("ignore::UserWarning:lightning")
@pytest.mark.parametrize("manual", [False, True])
def test_lightning_callback_steps_once_per_optimizer_step(make_policy, manual):
    pytest.importorskip("lightning")
    from qlr.integrations.lightning import QLRCallback

    callback = QLRCallback(policy=make_policy(favour=2, interval=2))
    module = lightning_module(manual)
    accumulate = {} if manual else {"accumulate_grad_batches": 2}
    lightning_trainer(callback, **accumulate).fit(module, lightning_loader())

    sched = callback.scheduler
    assert sched.steps == 6 and sched.decisions == 3
    # The policy doubles the rate every 2 optimizer steps: 3 decisions, x8.
    assert sched.optimizer.param_groups[0]["lr"] == pytest.approx(LR * 8)
    # The step's loss is the mean over its micro-batches, not the last (Lightning-scaled) one.
    per_step = 1 if manual else 2
    assert len(module.losses) == 6 * per_step
    tracker = sched.state_dict()["controller"]["tracker"]
    expected = sum(module.losses[-per_step:]) / per_step
    assert tracker["last_loss"] == pytest.approx(expected, rel=1e-5)
    assert tracker["decision_grad_norm"] > 0  # the gradients were still there at step time


@pytest.mark.filterwarnings("ignore::UserWarning:lightning")
def test_lightning_checkpoint_carries_the_scheduler(make_policy, tmp_path):
    pytest.importorskip("lightning")
    from qlr.integrations.lightning import QLRCallback

    policy = make_policy(favour=2, interval=2)
    first = QLRCallback(policy=policy)
    trainer = lightning_trainer(first, max_steps=3)
    trainer.fit(lightning_module(), lightning_loader())
    trainer.save_checkpoint(tmp_path / "mid.ckpt")  # step 3: half-way through a block

    second = QLRCallback(policy=policy)
    lightning_trainer(second, max_steps=6).fit(
        lightning_module(), lightning_loader(), ckpt_path=tmp_path / "mid.ckpt"
    )
    sched = second.scheduler
    # Decisions at steps 2, 4, 6 only if the half-finished block was restored (else 2 and 5).
    assert sched.steps == 6 and sched.decisions == 3
    assert sched.optimizer.param_groups[0]["lr"] == pytest.approx(LR * 8)


# ---------------------------------------------------------------------------------- Hugging Face
class DictRegression(torch.nn.Module):
    """A model in the Trainer's convention: keyword inputs, ``{"loss": ...}`` with labels."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Linear(4, 1)
        self.losses = []

    def forward(self, x, labels=None):
        out = self.net(x)
        if labels is None:
            return {"logits": out}
        loss = torch.nn.functional.mse_loss(out, labels)
        if self.training:
            self.losses.append(loss.item())
        return {"loss": loss, "logits": out}


def hf_train(callback, tmp_path, **overrides):
    pytest.importorskip("accelerate")  # the Trainer needs it
    from transformers import Trainer, TrainingArguments

    x, y = regression_data()
    data = [{"x": xi, "labels": yi} for xi, yi in zip(x, y, strict=True)]
    options = dict(
        output_dir=str(tmp_path),
        max_steps=6,
        per_device_train_batch_size=4,
        gradient_accumulation_steps=2,
        learning_rate=LR,
        report_to=[],
        use_cpu=True,
        lr_scheduler_type="constant",
        save_strategy="no",
        logging_strategy="no",
        disable_tqdm=True,
    )
    options.update(overrides)
    model = DictRegression()
    trainer = Trainer(
        model=model,
        args=TrainingArguments(**options),
        train_dataset=data,
        callbacks=[callback],
    )
    trainer.train()
    return trainer, model


def test_hf_callback_steps_once_per_optimizer_step(make_policy, tmp_path):
    pytest.importorskip("transformers")
    from qlr.integrations.huggingface import QLRTrainerCallback

    callback = QLRTrainerCallback(policy=make_policy(favour=2, interval=2))
    trainer, model = hf_train(callback, tmp_path)

    sched = callback.scheduler
    assert len(model.losses) == 12  # 6 optimizer steps of 2 micro-batches
    assert sched.steps == 6 and sched.decisions == 3
    # x8, and the Trainer's own constant schedule kept it instead of resetting it.
    assert sched.optimizer.param_groups[0]["lr"] == pytest.approx(LR * 8)
    assert trainer.lr_scheduler.get_last_lr()[0] == pytest.approx(LR * 8)
    tracker = sched.state_dict()["controller"]["tracker"]
    assert tracker["last_loss"] == pytest.approx(sum(model.losses[-2:]) / 2, rel=1e-5)
    assert tracker["decision_grad_norm"] > 0  # read before the Trainer zeroed the gradients
    assert not model._forward_hooks  # the loss hook is gone after training


def test_hf_callback_warns_about_a_decaying_schedule_and_composes_with_it(make_policy, tmp_path):
    pytest.importorskip("transformers")
    from qlr.integrations.huggingface import QLRTrainerCallback

    callback = QLRTrainerCallback(policy=make_policy(favour=2, interval=2))
    with pytest.warns(UserWarning, match="'linear' schedule"):
        trainer, _ = hf_train(callback, tmp_path, lr_scheduler_type="linear", max_steps=4)
    # Two decisions scaled the schedule's base rate; linear decay ends at 0 after step 4.
    assert trainer.lr_scheduler.base_lrs[0] == pytest.approx(LR * 4)


def test_hf_callback_rejects_a_warmup_from_zero(make_policy, tmp_path):
    pytest.importorskip("transformers")
    from qlr.integrations.huggingface import QLRTrainerCallback

    callback = QLRTrainerCallback(policy=make_policy(favour=2, interval=2))
    with pytest.raises(ValueError, match="warmup"):
        hf_train(callback, tmp_path, lr_scheduler_type="constant_with_warmup", warmup_steps=2)


# ---------------------------------------------------------------------------------- budgets
PROGRESS_FEATURES = ("loss_change_block", "progress", "budget_known")


@pytest.mark.filterwarnings("ignore::UserWarning:lightning")
def test_lightning_hands_its_step_budget_to_the_scheduler(make_policy):
    """3 epochs of 16 batches, 2 accumulated per optimizer step: 24 optimizer steps."""
    pytest.importorskip("lightning")
    from qlr.integrations.lightning import QLRCallback

    callback = QLRCallback(policy=make_policy(favour=1, interval=3, features=PROGRESS_FEATURES))
    trainer = lightning_trainer(callback, max_steps=-1, max_epochs=3, accumulate_grad_batches=2)
    trainer.fit(lightning_module(), lightning_loader())
    sched = callback.scheduler
    assert sched.controller.total_steps == 24 and sched.steps == 24
    obs = sched.last_observation  # at the last decision, after 24 of 24 steps
    assert obs[1] == pytest.approx(1.0) and obs[2] == 1.0
    policy = make_policy(interval=2, features=PROGRESS_FEATURES)
    explicit = QLRCallback(policy=policy, total_steps=None)
    lightning_trainer(explicit, max_steps=4).fit(lightning_module(), lightning_loader())
    assert explicit.scheduler.controller.total_steps is None  # told not to: no budget
    assert explicit.scheduler.last_observation[2] == 0.0


def test_hugging_face_hands_its_step_budget_to_the_scheduler(make_policy, tmp_path):
    """2 epochs of 16 micro-batches, 2 accumulated per optimizer step: 16 optimizer steps."""
    pytest.importorskip("transformers")
    from qlr.integrations.huggingface import QLRTrainerCallback

    policy = make_policy(favour=1, interval=4, features=PROGRESS_FEATURES)
    callback = QLRTrainerCallback(policy=policy)
    hf_train(callback, tmp_path, max_steps=-1, num_train_epochs=2)
    sched = callback.scheduler
    assert sched.controller.total_steps == 16 and sched.steps == 16
    assert sched.last_observation[1] == pytest.approx(1.0) and sched.last_observation[2] == 1.0
