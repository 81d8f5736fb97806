"""Rewards of one's own for a reward-shaping study, in one readable file.

    PYTHONPATH=examples routing-env study --backbone tiny-cascade \\
        --rewards 'accuracy,my_rewards:wrong_answer_penalty[penalty=1],my_rewards:depth_shaped[scale=0.5]' \\
        --lams 0.05,0.2 --seeds 0,1,2 --agent reinforce --steps 20000 --out runs/my-study

A reward is a :class:`routing_env.rewards.RewardFn`: ``terms(outcome)`` returns named arrays over the
step's episodes, and the environment adds them up (``info["reward_terms"]`` holds each term summed
over the episode). ``module.path:name[key=value,...]`` names a function or class of an importable
module and calls it as ``name(lam, key=value, ...)``, so one function serves a whole grid of its
parameter, and the spec string, parameters included, is what a run's ``config.json`` records. The
first line of the function's docstring is what ``study.md`` says the reward is.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from routing_env.rewards import ComputePenalty, Correctness, Outcome, RewardFn


@dataclass(frozen=True)
class DepthShaping(RewardFn):
    """Potential-based shaping ``scale · (γΦ(s') − Φ(s))`` with Φ the share of the decision points
    passed, ``position / N``, and Φ = 0 after the end (Ng et al. 1999). The episode starts at point 0,
    so with γ = 1 the shaping sums to zero on every episode: the optimal policy is unchanged, while each
    step that goes deeper is paid at once and paid back at the exit."""

    uses_cross_entropy = False  # spares the environment the cross-entropy it would compute for us
    source = "Ng, Harada, Russell, ICML 1999 (potential-based shaping), by depth"

    gamma: float = 1.0
    scale: float = 1.0

    def terms(self, outcome: Outcome) -> dict[str, np.ndarray]:
        before = outcome.position_before / outcome.num_stages
        after = np.where(outcome.terminated, 0.0, outcome.position_after / outcome.num_stages)
        return {"depth": self.scale * (self.gamma * after - before)}


def depth_shaped(lam: float, scale: float = 1.0, gamma: float = 1.0) -> RewardFn:
    """accuracy plus shaping by depth (Φ = position / N)"""
    return Correctness() + ComputePenalty(lam) + DepthShaping(gamma, scale)


def wrong_answer_penalty(lam: float, penalty: float = 1.0) -> RewardFn:
    """1 if right, −penalty if wrong, minus λ·macs_fraction"""
    if not penalty >= 0:
        raise ValueError(f"penalty must be >= 0 (a wrong answer must not earn more than nothing), got {penalty}")
    return Correctness(correct=1.0, incorrect=-penalty) + ComputePenalty(lam)
