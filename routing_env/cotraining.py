"""Co-training: the backbone learns from the episodes a policy routes (Guan et al.'s joint training).

An environment built with ``train_backbone=True`` runs its own copy of the backbone live and reports,
for every episode that ends, its instance, its route and its exit (terminal info keys ``instance``,
``route``, ``exit_position``). Training is the training loop's business, not ``step``'s: the loop
attaches :class:`CoTrainBackbone` (a vector wrapper; :class:`CoTrainBackboneEnv` for one episode),
which hands the ended episodes to a :class:`BackboneTrainer`. Every ``update_every`` ended episodes,
the trainer takes one SGD step on the cross-entropy of the exits those episodes took, recomputed with
gradients (:meth:`~routing_env.backbones.base.Executor.loss`). ``gym.make`` and ``gym.make_vec`` attach
the wrapper for ``train_backbone=True``; the environment classes themselves never train, and every
evaluation environment is frozen (:func:`routing_env.experiments.evaluation_env`).

With REINFORCE on the selection module this is Guan et al.'s joint objective: the classifiers descend
the cross-entropy of the routes the policy sampled, the policy ascends accuracy − λ·compute.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import VectorWrapper
from torch import nn

from .backbones.base import SKIP_CHOICE
from .env import BACKBONE_TARGETS, RoutingEnv, RoutingVectorEnv, terminal_info


@dataclass(frozen=True)
class CoTraining:
    """How the backbone is co-trained (the ``backbone_lr``, ``backbone_update_every`` and
    ``backbone_targets`` options)."""

    lr: float = 0.01
    """Learning rate of the backbone's SGD (momentum 0.9)."""
    update_every: int = 32
    """One optimizer step per this many ended episodes, however many end in one environment step."""
    targets: str = "exit"
    """One of :data:`~routing_env.env.BACKBONE_TARGETS`. Under ``exit`` a cascade's first member only ever learns from the
    instances it keeps, the easy ones, and unlearns being unsure of the rest, which is the signal the
    policy routes on; under ``heads`` every member learns from every instance that reached it."""

    def __post_init__(self) -> None:
        if not self.lr > 0 or isinstance(self.update_every, bool) or not isinstance(self.update_every, int) or self.update_every < 1:
            raise ValueError(f"backbone_lr must be > 0 and backbone_update_every an integer >= 1, got {self.lr!r} and {self.update_every!r}")
        if self.targets not in BACKBONE_TARGETS:
            raise ValueError(f"unknown backbone_targets {self.targets!r}; expected one of {BACKBONE_TARGETS}")


def heads_on_route(
    instances: np.ndarray, routes: np.ndarray, exits: np.ndarray, head_positions: np.ndarray,
    head_after_skip: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ended episodes as one (instance, route, exit) row per head their route evaluated up to their exit:
    a head at point ``p`` when ``p <= exit`` and, unless the backbone evaluates heads after a SKIP too
    (``spec.head_after_skip``: a dynamic ResNet; a cascade's head belongs to the member it skipped), the
    block before it ran. The loss of the rows is the cross-entropy of every head the episode passed,
    its exit head included."""
    rows, positions = [], []
    for p in np.asarray(head_positions).tolist():
        evaluated = exits >= p
        if p > 0 and not head_after_skip:
            evaluated &= routes[:, p - 1] != SKIP_CHOICE
        rows.append(np.flatnonzero(evaluated))
        positions.append(np.full(int(evaluated.sum()), p, dtype=exits.dtype))
    order = np.concatenate(rows)
    return instances[order], routes[order], np.concatenate(positions)


class BackboneTrainer:
    """SGD on the cross-entropy of the exits that ended episodes took (the classifier part of Guan et
    al.'s joint objective, estimated on the routes the policy sampled).

    Args:
        module: the network whose parameters are trained (kept ``requires_grad=False`` between steps,
            so that the environment's own forward passes build no graph).
        loss: ``loss(instances, routes, exits)``, the mean cross-entropy recomputed with gradients.
        config: learning rate and cadence.
    """

    def __init__(
        self,
        module: nn.Module,
        loss: Callable[[np.ndarray, np.ndarray, np.ndarray], torch.Tensor],
        config: CoTraining,
        head_positions: np.ndarray | None = None,
        head_after_skip: bool = False,
    ) -> None:
        if config.targets == "heads" and head_positions is None:
            raise ValueError("backbone_targets='heads' needs the backbone's head positions")
        self.module = module
        self.loss = loss
        self.config = config
        self.head_positions = head_positions
        self.head_after_skip = head_after_skip
        self.parameters = list(module.parameters())
        self.optimizer = torch.optim.SGD(self.parameters, lr=config.lr, momentum=0.9)
        self.pending: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self.updates = 0
        self.last_loss = float("nan")

    @classmethod
    def of(cls, env: RoutingEnv | RoutingVectorEnv, config: CoTraining | None = None) -> BackboneTrainer:
        """The trainer of a live environment (``train_backbone=True``), with its ``backbone_lr`` and
        ``backbone_update_every`` unless ``config`` says otherwise."""
        if not env.config.train_backbone:
            raise ValueError("co-training needs an environment built with train_backbone=True (the live, trainable backbone)")
        core = env.core
        config = config or CoTraining(env.config.backbone_lr, env.config.backbone_update_every, env.config.backbone_targets)
        return cls(core.backbone.module, core.executor.loss, config, core.head_positions, core.backbone.spec.head_after_skip)

    @property
    def num_pending(self) -> int:
        return sum(len(p[0]) for p in self.pending)

    def record(self, instances: np.ndarray, routes: np.ndarray, exits: np.ndarray) -> None:
        """Ended episodes; one optimizer step for each full ``update_every`` of them, in order."""
        self.pending.append((np.array(instances), np.array(routes), np.array(exits)))
        every = self.config.update_every
        if self.num_pending < every:
            return
        instances, routes, exits = (np.concatenate(column) for column in zip(*self.pending))
        full = len(instances) // every * every
        for start in range(0, full, every):
            chunk = slice(start, start + every)
            self.update(instances[chunk], routes[chunk], exits[chunk])
        self.pending = [(instances[full:], routes[full:], exits[full:])] if full < len(instances) else []

    def update(self, instances: np.ndarray, routes: np.ndarray, exits: np.ndarray) -> None:
        """One optimizer step on these episodes."""
        if self.config.targets == "heads":
            instances, routes, exits = heads_on_route(instances, routes, exits, self.head_positions, self.head_after_skip)
        for p in self.parameters:
            p.requires_grad_(True)
        try:
            with torch.enable_grad():
                loss = self.loss(instances, routes, exits)
                if not torch.isfinite(loss):  # a NaN step would spoil every member it reaches, and the next checkpoint
                    raise FloatingPointError(f"co-training: the backbone's loss is {float(loss.detach())} after {self.updates} updates; "
                                             "nothing of it is applied")
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.optimizer.step()
        finally:
            for p in self.parameters:
                p.requires_grad_(False)
        self.updates += 1
        self.last_loss = float(loss.detach())


class _Forwarding:
    """What a routing wrapper passes through from the environment it wraps."""

    env: Any

    @property
    def config(self) -> Any:
        return self.env.unwrapped.config

    @property
    def routing(self) -> Any:
        return self.env.unwrapped.routing

    @property
    def num_instances(self) -> int:
        return self.env.unwrapped.num_instances

    def action_masks(self) -> np.ndarray:
        return self.env.unwrapped.action_masks()

    def backbone_state_dict(self) -> dict[str, torch.Tensor]:
        return self.env.unwrapped.backbone_state_dict()


class CoTrainBackbone(_Forwarding, VectorWrapper):
    """Co-train a live vector environment's backbone from the episodes that end in it.

    Adds ``info["backbone_loss"]`` (the last step's loss, NaN before the first) and
    ``info["backbone_updates"]`` to every step. Works under every autoreset mode.
    """

    def __init__(self, env: gym.vector.VectorEnv, config: CoTraining | None = None) -> None:
        super().__init__(env)
        self.trainer = BackboneTrainer.of(env.unwrapped, config)

    def step(self, actions: Any) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(actions)
        ended = terminal_info(info)
        mask = ended.get("_instance")
        if mask is not None and mask.any():
            self.trainer.record(ended["instance"][mask], ended["route"][mask], ended["exit_position"][mask])
        every = np.ones(self.num_envs, dtype=bool)
        info["backbone_loss"], info["_backbone_loss"] = np.full(self.num_envs, self.trainer.last_loss), every
        info["backbone_updates"], info["_backbone_updates"] = np.full(self.num_envs, self.trainer.updates), every
        return obs, reward, terminated, truncated, info


class CoTrainBackboneEnv(_Forwarding, gym.Wrapper):
    """:class:`CoTrainBackbone` for a single-episode :class:`~routing_env.env.RoutingEnv`."""

    def __init__(self, env: gym.Env, config: CoTraining | None = None) -> None:
        super().__init__(env)
        self.trainer = BackboneTrainer.of(env.unwrapped, config)

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        if terminated:
            self.trainer.record(np.array([info["instance"]]), info["route"][None], np.array([info["exit_position"]]))
        info["backbone_loss"], info["backbone_updates"] = self.trainer.last_loss, self.trainer.updates
        return obs, reward, terminated, truncated, info
