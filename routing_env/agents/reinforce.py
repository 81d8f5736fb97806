"""REINFORCE selection module (Guan et al., IJCAI 2018), batched over the vector environment.

Reads top to bottom like a CleanRL script: a small MLP over the Dict observation gives masked action
logits and a state-value baseline; each round resets every environment of the batch and steps until each has ended
one episode (no episode is cut by the rollout's end, so none is dropped or biased); undiscounted
returns-to-go; policy gradient with the baseline, an entropy bonus, and a value regression.

On a co-trained environment (``train_backbone=True``, wrapped in
:class:`~routing_env.cotraining.CoTrainBackbone`) this is Guan et al.'s joint training: the wrapper
updates the classifiers on the cross-entropy of the exits the sampled routes took, this agent updates
the selection module by REINFORCE on the same episodes; TensorBoard shows the former (``info["backbone_loss"]``)
as ``losses/backbone_cross_entropy``.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gymnasium.vector import VectorEnv
from torch import nn
from tqdm import tqdm

from routing_env.checkpoints import load_state_dict, save_state_dict
from routing_env.costs import count_macs
from routing_env.env import terminal_info
from routing_env.validation import check_field, check_flag

from .base import Agent
from .features import input_dim, policy_input, policy_input_np
from .fused import MLPDecision
from .logger import RunLogger


@dataclass
class ReinforceArgs:
    learning_rate: float = 1e-3
    """Adam step size."""
    episodes_per_update: int = 64
    """Complete episodes per gradient step (rounded up to whole rounds of ``num_envs`` episodes)."""
    hidden: int = 64
    """Width of the two hidden layers."""
    ent_coef: float = 0.01
    """Entropy bonus weight."""
    vf_coef: float = 0.5
    """Weight of the baseline's squared error."""
    max_grad_norm: float = 0.5
    """Gradient clipping."""
    normalize_advantage: bool = True
    """Standardise advantages per update."""
    weight_decay: float = 0.0
    """Adam's L2 penalty on the policy's weights (a policy fitted to 5,000 ``val`` images overfits)."""

    def __post_init__(self) -> None:
        # each one silently wrong otherwise: a negative max_grad_norm flips the gradient (torch scales by
        # it), hidden=0 trains nothing, a string "no" for normalize_advantage is truthy
        label = "reinforce option "
        for name in ("episodes_per_update", "hidden"):
            check_field(self, name, label=label, low=1, integer=True)
        for name in ("learning_rate", "max_grad_norm"):
            check_field(self, name, label=label, above=0)
        for name in ("ent_coef", "vf_coef", "weight_decay"):
            check_field(self, name, label=label, low=0)
        self.normalize_advantage = check_flag("reinforce option normalize_advantage", self.normalize_advantage)


class PolicyNet(nn.Module):
    """Masked categorical policy and value baseline over the flattened observation."""

    def __init__(self, obs_dim: int, num_actions: int, hidden: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(obs_dim)
        self.actor = nn.Sequential(nn.Linear(obs_dim, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(), nn.Linear(hidden, num_actions))
        self.critic = nn.Sequential(nn.Linear(obs_dim, hidden), nn.Tanh(), nn.Linear(hidden, 1))

    def logits(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.actor(self.norm(x)).masked_fill(~mask, -1e9)

    def value(self, x: torch.Tensor) -> torch.Tensor:
        return self.critic(self.norm(x)).squeeze(-1)


class ReinforceAgent(Agent):
    """REINFORCE with a learned baseline and an entropy bonus; masks respected."""

    name = "reinforce"

    def __init__(self, env: VectorEnv, *, seed: int = 0, **options: Any) -> None:
        super().__init__(env, seed=seed)
        fields = ReinforceArgs.__dataclass_fields__
        unknown = sorted(set(options) - set(fields))
        if unknown:
            raise TypeError(f"unknown option(s) {unknown} for agent 'reinforce'; valid: {sorted(fields)}")
        self.args = ReinforceArgs(**options)
        torch.manual_seed(seed)
        space = env.single_observation_space
        obs_dim = input_dim(space)
        self.net = PolicyNet(obs_dim, env.single_action_space.n, self.args.hidden)
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=self.args.learning_rate, weight_decay=self.args.weight_decay)
        self.generator = torch.Generator().manual_seed(seed)
        self.steps_done = 0
        """Instance-steps learned so far, over every ``learn`` call (the TensorBoard step)."""

    def options(self) -> dict[str, Any]:
        return asdict(self.args)

    @torch.no_grad()
    def predict(self, obs: dict[str, np.ndarray], env: VectorEnv) -> np.ndarray:
        mask = torch.as_tensor(obs["action_mask"]).bool()
        return self.net.logits(policy_input_np(obs), mask).argmax(dim=-1).numpy()

    def policy_module(self) -> nn.Module:
        """The deterministic policy as a module over observation tensors (for ``RoutedModel``)."""
        return _TorchPolicy(self.net)

    def policy_macs(self) -> float:
        x = torch.zeros(1, self.net.norm.normalized_shape[0])
        return float(count_macs(lambda t: self.net.actor(self.net.norm(t)), x))

    def learn(self, total_steps: int, logger: RunLogger | None = None, progress: bool = False) -> None:
        env, args = self.env, self.args
        bar = tqdm(total=total_steps, desc="reinforce", unit="step", disable=None if progress else True)  # None: off when not a terminal
        rounds = -(-args.episodes_per_update // env.num_envs)
        if self.steps_done == 0:  # seeded once: a later call goes on drawing instances where this one stopped
            env.reset(seed=self.seed)
        done_steps, start, first = 0, time.time(), self.steps_done
        backbone_loss: np.ndarray | None = None
        lam: np.ndarray | None = None
        while done_steps < total_steps:
            xs, masks, actions, returns, lives = [], [], [], [], []
            ended: dict[str, list[np.ndarray]] = {"return": [], "correct": [], "macs_fraction": [], "exit_position": []}
            terms: dict[str, list[np.ndarray]] = {}
            for _ in range(rounds):
                obs, _ = env.reset()
                live = np.ones(env.num_envs, dtype=bool)
                episode_return = np.zeros(env.num_envs)
                rewards = []
                while live.any():
                    x = policy_input_np(obs)
                    mask = torch.as_tensor(obs["action_mask"]).bool()
                    with torch.no_grad():
                        a = _sample(self.net.logits(x, mask), self.generator)
                    obs, reward, terminated, truncated, info = env.step(a.numpy())
                    xs.append(x)
                    masks.append(mask)
                    actions.append(a)
                    rewards.append(torch.as_tensor(np.where(live, reward, 0.0), dtype=torch.float32))
                    lives.append(torch.tensor(live))  # a copy: `live` is updated in place below
                    done_steps += int(live.sum())
                    bar.update(int(live.sum()))
                    episode_return += np.where(live, reward, 0.0)
                    end = live & (terminated | truncated)
                    ended["return"].append(episode_return[end])
                    final = terminal_info(info)
                    for key in ("correct", "macs_fraction", "exit_position"):
                        ended[key].append(final[key][end] if end.any() else np.zeros(0))
                    if end.any():
                        for name, totals in final["reward_terms"].items():
                            terms.setdefault(name, []).append(totals[end])
                    backbone_loss = info.get("backbone_loss", backbone_loss)
                    lam = info.get("lam", lam)
                    live &= ~(terminated | truncated)
                # undiscounted rewards-to-go of this round's episodes
                returns.extend(torch.stack(rewards).flip(0).cumsum(0).flip(0).unbind(0))
            loss_terms = self._update(xs, masks, actions, returns, lives)
            self.steps_done = first + done_steps
            if logger is not None:
                step = self.steps_done
                logger.episodes(step, *(np.concatenate(ended[k]) for k in ended),
                                terms={name: np.concatenate(parts) for name, parts in terms.items()})
                for key, value in loss_terms.items():
                    logger.scalar(f"losses/{key}", value, step)
                if backbone_loss is not None and np.isfinite(backbone_loss[0]):  # co-trained (CoTrainBackbone)
                    logger.scalar("losses/backbone_cross_entropy", float(backbone_loss[0]), step)
                if lam is not None:  # budget targeting (target_macs): the price the environment has adapted
                    logger.scalar("charts/lam", float(lam[0]), step)
                logger.scalar("charts/SPS", done_steps / max(time.time() - start, 1e-9), step)
        bar.close()

    def _update(
        self,
        xs: list[torch.Tensor],
        masks: list[torch.Tensor],
        actions: list[torch.Tensor],
        returns: list[torch.Tensor],
        lives: list[torch.Tensor],
    ) -> dict[str, float]:
        """One gradient step on the live steps of complete episodes."""
        args = self.args
        live = torch.cat(lives)
        ret = torch.cat(returns)[live]
        x = torch.cat(xs)[live]
        mask = torch.cat(masks)[live]
        a = torch.cat(actions)[live]
        logp_all = torch.log_softmax(self.net.logits(x, mask), dim=-1)
        logp = logp_all.gather(1, a[:, None]).squeeze(1)
        entropy = -(logp_all.exp() * logp_all.masked_fill(~mask, 0.0)).sum(-1).mean()
        value = self.net.value(x)
        advantage = (ret - value).detach()
        if args.normalize_advantage and len(advantage) > 1:
            advantage = (advantage - advantage.mean()) / (advantage.std() + 1e-8)
        policy_loss = -(logp * advantage).mean()
        value_loss = ((ret - value) ** 2).mean()
        loss = policy_loss + args.vf_coef * value_loss - args.ent_coef * entropy
        if not torch.isfinite(loss):  # a NaN step would spoil the policy and, in a joint run, its next checkpoint
            raise FloatingPointError(f"reinforce: the loss is {loss.item()} (policy {policy_loss.item()}, value "
                                     f"{value_loss.item()}, entropy {entropy.item()}); nothing of it is applied")
        self.optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(self.net.parameters(), args.max_grad_norm, error_if_nonfinite=True)  # a finite loss, non-finite gradients
        self.optimizer.step()
        return {"policy_loss": policy_loss.item(), "value_loss": value_loss.item(), "entropy": entropy.item()}

    def training_state(self) -> dict[str, Any]:
        """Everything ``learn`` needs to go on exactly where it stopped (a plain dict of tensors)."""
        return {
            "net": self.net.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "steps_done": self.steps_done,
        }

    def load_training_state(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["net"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        self.steps_done = int(state["steps_done"])

    def save(self, directory: str | Path) -> None:
        super().save(directory)
        save_state_dict(self.net.state_dict(), Path(directory) / "policy.pt")

    def load_state(self, directory: Path) -> None:
        self.net.load_state_dict(load_state_dict(Path(directory) / "policy.pt"))


class _TorchPolicy(nn.Module):
    """Masked action logits of a :class:`PolicyNet` from a dict of observation tensors."""

    def __init__(self, net: PolicyNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.net.logits(policy_input(obs), obs["action_mask"].bool())

    def fused_decision(self) -> MLPDecision | None:
        """The same decision for one input in one compiled call (:class:`~routing_env.agents.fused.MLPDecision`)."""
        return MLPDecision.of(list(self.net.actor), norm=self.net.norm, masked=True)


def _sample(logits: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Sample from a categorical over ``logits`` with an explicit generator (reproducible)."""
    probs = torch.softmax(logits, dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)
