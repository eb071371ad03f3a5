"""Deep Q-learning from demonstrations (Hester et al., 2018) on stable-baselines3's DQN.

`DQfD` is SB3's ``DQN`` with a second, fixed replay buffer of demonstrations that stays for the
whole run. Every gradient step trains on a batch of the agent's own transitions joined by a batch
of demonstrations: the TD loss (n-step when ``n_steps > 1``, as SB3 computes it) on both, plus
on the demonstrations the large-margin loss

    J_E(Q) = max_a [Q(s, a) + margin * (a != a_E)] - Q(s, a_E),

which keeps the demonstrator's action at least `margin` above the others unless TD learning finds
a better one. `pretrain` runs that same loss on demonstrations alone before any interaction, so
the agent starts from the demonstrator's behaviour rather than from a random network.

Differences from the paper, for simplicity: one TD term (SB3's n-step return, not 1-step plus
n-step), uniform sampling instead of prioritised replay (the demonstrations get a fixed share of
every batch instead of a priority bonus), and L2 through the optimizer's weight decay.
"""

from __future__ import annotations

import numpy as np
import torch as th
import torch.nn.functional as F
from stable_baselines3 import DQN
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.type_aliases import ReplayBufferSamples
from stable_baselines3.common.utils import polyak_update


class DQfD(DQN):
    """SB3's DQN trained on its own transitions and on a fixed set of demonstrations.

    Args:
        *args: as for ``DQN``.
        demonstrations: a replay buffer holding the demonstrations (see
            `qlr.agents.learn.demonstrations.demonstration_buffer`); None trains a plain DQN.
        margin: the large margin between the demonstrated action's value and the others'.
        margin_weight: weight of the margin loss against the TD loss.
        demo_batch_size: demonstrations joined to every batch of `batch_size` own transitions.
        **kwargs: as for ``DQN``.
    """

    def __init__(
        self,
        *args,
        demonstrations: ReplayBuffer | None = None,
        margin: float = 0.8,
        margin_weight: float = 1.0,
        demo_batch_size: int = 32,
        **kwargs,
    ) -> None:
        if margin < 0 or margin_weight < 0 or demo_batch_size < 1:
            raise ValueError(
                f"need margin >= 0, margin_weight >= 0 and demo_batch_size >= 1, got {margin}, "
                f"{margin_weight}, {demo_batch_size}"
            )
        self.demonstrations = demonstrations
        self.margin = float(margin)
        self.margin_weight = float(margin_weight)
        self.demo_batch_size = int(demo_batch_size)
        super().__init__(*args, **kwargs)

    def _excluded_save_params(self) -> list[str]:
        # The demonstrations are saved once beside the run, not in every checkpoint.
        return [*super()._excluded_save_params(), "demonstrations"]

    # ------------------------------------------------------------------ losses
    def _td_losses(self, data: ReplayBufferSamples) -> th.Tensor:
        """Per-sample Huber TD errors, exactly as ``DQN.train`` computes them."""
        discounts = data.discounts if data.discounts is not None else self.gamma
        with th.no_grad():
            next_q, _ = self.q_net_target(data.next_observations).max(dim=1)
            target = data.rewards + (1 - data.dones) * discounts * next_q.reshape(-1, 1)
        current = th.gather(self.q_net(data.observations), dim=1, index=data.actions.long())
        return F.smooth_l1_loss(current, target, reduction="none").reshape(-1)

    def _margin_loss(self, data: ReplayBufferSamples) -> th.Tensor:
        q = self.q_net(data.observations)
        actions = data.actions.long().reshape(-1, 1)
        penalty = th.full_like(q, self.margin).scatter(1, actions, 0.0)
        return ((q + penalty).max(dim=1).values - q.gather(1, actions).reshape(-1)).mean()

    def demonstration_loss(self, batch_size: int) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
        """(TD losses per sample, margin loss, agreement with the demonstrator) on a demo batch."""
        assert self.demonstrations is not None
        demo = self.demonstrations.sample(batch_size, env=self._vec_normalize_env)
        with th.no_grad():
            agree = self.q_net(demo.observations).argmax(dim=1) == demo.actions.reshape(-1)
        return self._td_losses(demo), self._margin_loss(demo), agree.float().mean()

    def _gradient_step(self, loss: th.Tensor) -> None:
        self.policy.optimizer.zero_grad()
        loss.backward()
        th.nn.utils.clip_grad_norm_(self.policy.parameters(), self.max_grad_norm)
        self.policy.optimizer.step()

    def _steps_per_transition(self) -> float:
        """Gradient steps per environment transition during interaction."""
        per_rollout = self.train_freq.frequency * self.n_envs
        steps = self.gradient_steps if self.gradient_steps > 0 else per_rollout
        return steps / per_rollout

    # ------------------------------------------------------------------ training
    def train(self, gradient_steps: int, batch_size: int = 100) -> None:
        if self.demonstrations is None:
            super().train(gradient_steps, batch_size)
            return
        self.policy.set_training_mode(True)
        self._update_learning_rate(self.policy.optimizer)
        losses, margins, agreements = [], [], []
        for _ in range(gradient_steps):
            own = self.replay_buffer.sample(batch_size, env=self._vec_normalize_env)  # type: ignore[union-attr]
            demo_td, margin, agree = self.demonstration_loss(self.demo_batch_size)
            td = th.cat([self._td_losses(own), demo_td]).mean()
            loss = td + self.margin_weight * margin
            self._gradient_step(loss)
            losses.append(td.item())
            margins.append(margin.item())
            agreements.append(agree.item())
        self._n_updates += gradient_steps
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        self.logger.record("train/loss", float(np.mean(losses)))
        self.logger.record("train/margin_loss", float(np.mean(margins)))
        self.logger.record("train/demo_agreement", float(np.mean(agreements)))

    def pretrain(self, steps: int, batch_size: int | None = None) -> dict[str, float]:
        """Learn from the demonstrations alone for `steps` gradient steps (the paper's phase 1).

        The target network is copied every ``target_update_interval`` gradient steps (a
        transition count during interaction; here there are none). Returns the final losses
        and how often the greedy action agrees with the demonstrator on a random sample (up to
        4,096 transitions, drawn with replacement) of the same demonstrations it trained on: a
        measure of fit to the demonstrator, not of agreement on unseen states.
        """
        if self.demonstrations is None or steps <= 0:
            return {}
        batch_size = batch_size or self.batch_size
        self.policy.set_training_mode(True)
        interval = max(1, round(self.target_update_interval * self._steps_per_transition()))
        td_value = margin_value = 0.0
        for step in range(1, steps + 1):
            demo_td, margin, _ = self.demonstration_loss(batch_size)
            td = demo_td.mean()
            self._gradient_step(td + self.margin_weight * margin)
            td_value, margin_value = td.item(), margin.item()
            if step % interval == 0:
                polyak_update(self.q_net.parameters(), self.q_net_target.parameters(), self.tau)
        polyak_update(self.q_net.parameters(), self.q_net_target.parameters(), 1.0)
        self.policy.set_training_mode(False)
        _, _, agree = self.demonstration_loss(min(4096, self.demonstrations.size()))
        return {"td_loss": td_value, "margin_loss": margin_value, "agreement": agree.item()}
