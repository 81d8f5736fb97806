"""Potential-based shaping (Ng, Harada, Russell 1999): ``F = γΦ(s') − Φ(s)`` with Φ a function of the
softmax the agent sees. With ``γ = 1`` an episode's shaping sums to ``−Φ(s_0)``, so the optimal policy is
unchanged; the reward study asks whether it speeds learning."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..validation import check_number
from .base import Outcome, RewardFn, Terms


@dataclass(frozen=True)
class ConfidenceShaping(RewardFn):
    """Potential-based shaping ``F = γΦ(s') − Φ(s)`` (Ng et al. 1999), Φ = max softmax probability.

    Φ is 0 after termination, so with ``gamma=1`` the shaping sums to ``-Φ(s_0)`` on every episode and
    leaves the optimal policy unchanged while rewarding steps that raise confidence.
    """

    uses_cross_entropy = False
    source = "Ng, Harada, Russell, ICML 1999 (potential-based shaping)"

    gamma: float = 1.0
    scale: float = 1.0

    def __post_init__(self) -> None:
        check_shaping(self.gamma, self.scale)

    def terms(self, outcome: Outcome) -> Terms:
        after = np.where(outcome.terminated, 0.0, outcome.potential_after)
        return {"shaping": self.scale * (self.gamma * after - outcome.potential_before)}


def check_shaping(gamma: float, scale: float) -> None:
    """A shaping's γ is a discount, in [0, 1] (a negative one rewards a fall in confidence), and its
    scale a finite number."""
    check_number("gamma", gamma, low=0, high=1, hint=" (the shaping's discount)")
    check_number("scale", scale)


def potential(probs: np.ndarray, kind: str) -> np.ndarray:
    """Φ of a batch of softmax rows (B, C): ``max-prob``, ``margin`` (top-1 minus top-2) or
    ``neg-entropy`` (−H, in [−log C, 0]); 0 for rows with no head evaluated yet (all zeros)."""
    seen = probs.sum(axis=1) > 0
    if kind == "max-prob":
        value = probs.max(axis=1)
    elif kind == "margin":
        top = np.sort(probs, axis=1)
        value = top[:, -1] - top[:, -2]
    elif kind == "neg-entropy":
        with np.errstate(divide="ignore", invalid="ignore"):
            value = np.where(probs > 0, probs * np.log(probs), 0.0).sum(axis=1)
    else:
        raise ValueError(f"unknown potential {kind!r}; expected one of {POTENTIALS}")
    return np.where(seen, value, 0.0)


POTENTIALS = ("max-prob", "margin", "neg-entropy")


@dataclass(frozen=True)
class PotentialShaping(RewardFn):
    """Potential-based shaping ``F = γΦ(s') − Φ(s)`` (Ng et al. 1999) with Φ one of :data:`POTENTIALS`
    of the softmax the agent sees: the confidence margin, or the negative entropy. Φ is 0 after
    termination, so with ``gamma=1`` an episode's shaping sums to ``−Φ(s_0)``: the optimal policy is
    unchanged (a test checks the sum on both families)."""

    uses_cross_entropy = False
    uses_probs = True
    source = "Ng, Harada, Russell, ICML 1999 (potential-based shaping)"

    potential: str = "margin"
    gamma: float = 1.0
    scale: float = 1.0

    def __post_init__(self) -> None:
        if self.potential not in POTENTIALS:
            raise ValueError(f"unknown potential {self.potential!r}; expected one of {POTENTIALS}")
        check_shaping(self.gamma, self.scale)

    def terms(self, outcome: Outcome) -> Terms:
        after = np.where(outcome.terminated, 0.0, potential(outcome.probs_after, self.potential))
        return {"shaping": self.scale * (self.gamma * after - potential(outcome.probs_before, self.potential))}
