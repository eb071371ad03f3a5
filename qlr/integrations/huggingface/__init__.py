"""Hugging Face integration: `QLRTrainerCallback` drives a `QLRScheduler` inside ``Trainer``.

Importing this module needs no transformers; the class is loaded on first use::

    from qlr.integrations.huggingface import QLRTrainerCallback  # ImportError if absent

How the loss gets there: ``Trainer`` calls ``lr_scheduler.step()`` without arguments and hands
no loss to callbacks. The callback therefore registers a forward hook on the model that keeps
the loss of every training forward pass (``outputs.loss``, ``outputs["loss"]``, or
``outputs[0]`` of a tuple when ``labels`` were passed), and at ``on_optimizer_step``, after each
real optimizer step and before the gradients are zeroed, it steps the scheduler with the loss of
the accumulated micro-batches: their mean, or their sum when the Trainer passed
``num_items_in_batch`` (the model then normalised each micro-batch by the whole step's count).
Models whose loss the Trainer computes outside ``forward`` (``compute_loss_func``, label
smoothing) are not supported: the callback raises at the first step.

The Trainer's own scheduler: it keeps running and would overwrite qlr's rate every step. The
callback multiplies the ``base_lrs`` of the Trainer's ``LambdaLR`` (every named
``lr_scheduler_type`` except ``reduce_lr_on_plateau``) by each change qlr makes, so the rate is
the Trainer's schedule times qlr's factor and the Trainer logs the rate really used. qlr was
trained to set the rate alone: pass ``lr_scheduler_type="constant"`` with no warmup; any other
schedule draws a warning, and a warmup, which starts the rate at 0, an error.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from qlr.integrations import missing_framework

if TYPE_CHECKING:
    from qlr.integrations.huggingface._callback import QLRTrainerCallback


def trainer_callback_class() -> type[QLRTrainerCallback]:
    """The `QLRTrainerCallback` class, a ``transformers.TrainerCallback``.

    Raises:
        ImportError: transformers is not installed.
    """
    try:
        # Tried first, so that only a missing transformers reads as one.
        from transformers import TrainerCallback  # noqa: F401
    except ImportError as err:
        raise missing_framework(
            "QLRTrainerCallback", "transformers", "transformers", name="transformers"
        ) from err
    from qlr.integrations.huggingface._callback import QLRTrainerCallback

    return QLRTrainerCallback


def __getattr__(name: str) -> Any:
    # Resolved on first access, so that importing this module imports no transformers.
    if name == "QLRTrainerCallback":
        return trainer_callback_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
