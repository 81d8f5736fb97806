"""Budget targeting: λ adapted by dual ascent so that a policy's mean cost converges to a target.

With ``target_macs=f`` the environment prices compute at a λ it adapts from the episodes it sees
(a Lagrangian relaxation of ``E[cost_fraction] = f``, the cost in MACs unless ``cost=`` prices it otherwise, as in constrained RL such as RCPO, Tessler et al.
ICLR 2019): after every step in which episodes end, ``λ ← λ + lr · Σ (cost of each ended episode − f)``: one small
step per episode, slower than the policy learns (the two-timescale condition of primal-dual methods).
A policy that spends too much sees compute get dearer until it spends ``f`` on average; one that spends
less sees λ fall, below 0 if need be (compute is then paid for), so that an operating point lands at the
chosen budget, not merely under it. Any agent trains toward the budget, since the price lives in the
environment; ``info["lam"]`` reports it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .rewards import Outcome, RewardFn, Terms
from .validation import check_number

LAM_LIMIT = 100.0
"""|λ| is clipped here: a target no policy can reach (below the cheapest route, above the dearest) would
otherwise drive λ without bound."""


class DualAscent:
    """The adapted price λ of compute for a target mean cost (a fraction of the reference cost: MACs
    unless ``cost=`` prices otherwise). The checks are ``EnvConfig``'s, for a ``DualAscent`` built alone."""

    def __init__(self, target: float, lam: float = 0.0, lr: float = 1e-4) -> None:
        self.target = float(check_number("target_macs", target, above=0))
        self.lr = float(check_number("target_lr", lr, above=0))
        lam = check_number("lam", lam)
        self.lam = float(np.clip(lam, -LAM_LIMIT, LAM_LIMIT))  # within the clip from the start, as after every step
        self.episodes = 0
        self.cost_sum = 0.0
        """Episodes seen and their total cost (means over a window: differences of two readings)."""

    def update(self, costs: np.ndarray) -> None:
        """One ascent step on the costs of the episodes that just ended."""
        if len(costs) == 0:
            return
        self.lam = float(np.clip(self.lam + self.lr * float(np.sum(costs - self.target)), -LAM_LIMIT, LAM_LIMIT))
        self.episodes += len(costs)
        self.cost_sum += float(np.sum(costs))


@dataclass(frozen=True)
class LagrangianPenalty(RewardFn):
    """``−λ · cost_fraction`` at termination, with λ read from a :class:`DualAscent` at each step."""

    uses_cross_entropy = False
    terminal_only = True
    source = "Lagrangian relaxation by dual ascent (RCPO, Tessler et al., ICLR 2019)"

    ascent: DualAscent

    def terms(self, outcome: Outcome) -> Terms:
        return {"lagrangian": np.where(outcome.terminated, -self.ascent.lam * outcome.cost_fraction, 0.0)}
