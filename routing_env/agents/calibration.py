"""A learned policy's greedy cost, calibrated to a budget on ``val`` (issue 14's budget targets).

``target_macs`` holds the cost of the episodes an agent *samples* at the budget (dual ascent), but a
policy is scored greedily, and a cascade's greedy policy can spend far from its sampled self (its
routes cost 0.10, 0.42 or 1.42 of ResNet-56, and the argmax flips between them). :class:`ExitBias`
adds one number to the policy's EXIT score: raising it can only make a route end sooner, so every
image's cost, and the mean, falls as the bias rises. :func:`calibrate_exit_bias` bisects for the
smallest bias whose greedy cost on ``val`` is within the budget, as the threshold baseline tunes τ
for ``target_macs_fraction`` — an operating point chosen on ``val``, then reported on ``test``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from gymnasium.vector import VectorEnv

from routing_env.core import EXIT
from routing_env.evaluation import route_split

from .base import Agent

BIAS_RANGE = 30.0
"""The bisection's bracket, ± this (logits and Q-values of our agents stay well inside it)."""


class ExitBias(Agent):
    """``policy``'s greedy decisions with ``bias`` added to the EXIT score (its ``policy_module``'s
    scores, whose argmax its ``predict`` takes; an invalid argmax takes the environment's fallback, as
    stepping the environment would). At ``bias=0`` it acts as ``policy`` does. It is not saved as an
    agent of its own: :func:`~routing_env.experiments.baselines.calibrated_row` recreates it from a
    run's policy and records the bias."""

    name = "exit-bias"

    def __init__(self, env: VectorEnv, *, seed: int = 0, policy: Agent, bias: float = 0.0) -> None:
        super().__init__(env, seed=seed)
        if not hasattr(policy, "policy_module"):
            raise ValueError(f"agent {policy.name!r} has no policy_module (action scores), so its EXIT cannot be biased")
        self.policy, self.bias = policy, float(bias)
        self.module = policy.policy_module()

    @torch.no_grad()
    def predict(self, obs: dict[str, np.ndarray], env: VectorEnv) -> np.ndarray:
        scores = self.module({k: torch.as_tensor(v) for k, v in obs.items()}).clone()
        # only where EXIT is allowed: an invalid EXIT falls back to a RUN, so biasing it there would
        # lengthen routes (an unmasked policy's scores, before the first head, on a dynamic ResNet)
        exit_valid = torch.as_tensor(obs["action_mask"][:, EXIT]).bool()
        scores[:, EXIT] += self.bias * exit_valid
        return scores.argmax(dim=1).numpy().astype(np.int64)

    def policy_macs(self) -> float:
        return self.policy.policy_macs()

    def options(self) -> dict[str, Any]:
        return {"policy": self.policy.name, "bias": self.bias}


def greedy_cost(agent: Agent, env: VectorEnv) -> float:
    """Mean MACs fraction of ``agent``'s greedy routes over ``env``'s split."""
    return float(route_split(agent, env).macs_fraction.mean())


def calibrate_exit_bias(policy: Agent, val: VectorEnv, target: float, iterations: int = 24) -> ExitBias:
    """``policy`` with the smallest EXIT bias (to ``2·BIAS_RANGE / 2**iterations``) whose greedy mean
    MACs fraction on ``val`` is at most ``target``; the bracket's end if none in it is (the cheapest it
    can do)."""
    low, high = -BIAS_RANGE, BIAS_RANGE
    if greedy_cost(ExitBias(val, policy=policy, bias=low), val) <= target:
        return ExitBias(val, policy=policy, bias=low)
    for _ in range(iterations):  # invariant: cost(low) > target; cost(high) <= target, or high is the bracket's end
        middle = (low + high) / 2
        if greedy_cost(ExitBias(val, policy=policy, bias=middle), val) <= target:
            high = middle
        else:
            low = middle
    return ExitBias(val, policy=policy, bias=high)
