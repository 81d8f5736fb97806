"""Reward strategies (docs/design.md §4), batched: every term is an array over the episodes of a step.

A reward function maps an :class:`Outcome` to ``(reward, terms)``; ``terms`` names each component
(``info["reward_terms"]``) and ``reward`` is their sum. Functions compose with ``+``.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Outcome:
    """What happened in one step, for B episodes. Terminal fields are meaningful where ``terminated``."""

    terminated: np.ndarray
    """(B,) bool: the episode ended with EXIT this step."""
    correct: np.ndarray
    """(B,) bool: the prediction is right (terminal steps)."""
    cross_entropy: np.ndarray
    """(B,) float: cross-entropy of the chosen exit's logits against the label (terminal steps; 0 elsewhere;
    NaN when the reward function says it does not use it)."""
    macs_fraction: np.ndarray
    """(B,) float: MACs of the whole episode so far / reference MACs."""
    step_macs_fraction: np.ndarray
    """(B,) float: MACs charged to this step / reference MACs (the first step carries the prefix)."""
    invalid: np.ndarray
    """(B,) bool: the action was replaced by a valid one."""
    potential_before: np.ndarray
    """(B,) float: max softmax probability before the step (0 when no head was evaluated)."""
    potential_after: np.ndarray
    """(B,) float: the same after the step."""


Terms = dict[str, np.ndarray]


class RewardFn(abc.ABC):
    """A reward: ``fn(outcome) -> (reward, terms)``.

    ``uses_cross_entropy`` (default ``True``) tells the environment whether to compute
    ``outcome.cross_entropy``; a reward that sets it ``False`` receives NaN there.
    """

    uses_cross_entropy: bool = True

    @abc.abstractmethod
    def terms(self, outcome: Outcome) -> Terms:
        """The named components of the reward."""

    def __call__(self, outcome: Outcome) -> tuple[np.ndarray, Terms]:
        terms = self.terms(outcome)
        reward = np.zeros(len(outcome.terminated), dtype=np.float64)
        for value in terms.values():
            reward += value
        return reward, terms

    def __add__(self, other: RewardFn) -> RewardFn:
        return Sum(self, other)


class Sum(RewardFn):
    """The sum of several reward functions; term names must not clash."""

    def __init__(self, *parts: RewardFn) -> None:
        self.parts: tuple[RewardFn, ...] = tuple(
            q for p in parts for q in (p.parts if isinstance(p, Sum) else (p,))
        )

    @property
    def uses_cross_entropy(self) -> bool:  # type: ignore[override]
        return any(part.uses_cross_entropy for part in self.parts)

    def terms(self, outcome: Outcome) -> Terms:
        out: Terms = {}
        for part in self.parts:
            for name, value in part.terms(outcome).items():
                if name in out:
                    raise ValueError(f"reward term {name!r} appears twice in {self!r}")
                out[name] = value
        return out

    def __repr__(self) -> str:
        return " + ".join(repr(p) for p in self.parts)


@dataclass(frozen=True)
class Correctness(RewardFn):
    """``correct`` if the terminal prediction is right, else ``incorrect``."""

    uses_cross_entropy = False

    correct: float = 1.0
    incorrect: float = 0.0

    def terms(self, outcome: Outcome) -> Terms:
        value = np.where(outcome.correct, self.correct, self.incorrect)
        return {"correct": np.where(outcome.terminated, value, 0.0)}


@dataclass(frozen=True)
class NegCrossEntropy(RewardFn):
    """``-cross_entropy`` of the chosen exit at termination."""

    def terms(self, outcome: Outcome) -> Terms:
        return {"cross_entropy": np.where(outcome.terminated, -outcome.cross_entropy, 0.0)}


@dataclass(frozen=True)
class ComputePenalty(RewardFn):
    """``-lam · macs_fraction``, charged at termination or per step as spent (same undiscounted sum)."""

    uses_cross_entropy = False

    lam: float
    per_step: bool = False

    def __post_init__(self) -> None:
        if not self.lam >= 0:
            raise ValueError(f"lam must be >= 0, got {self.lam}")

    def terms(self, outcome: Outcome) -> Terms:
        if self.per_step:
            return {"compute": -self.lam * outcome.step_macs_fraction}
        return {"compute": np.where(outcome.terminated, -self.lam * outcome.macs_fraction, 0.0)}


@dataclass(frozen=True)
class BlockDropReward(RewardFn):
    """BlockDrop (Wu et al. 2018): ``1 - macs_fraction²`` if correct, else ``-gamma``."""

    uses_cross_entropy = False

    gamma: float = 1.0

    def terms(self, outcome: Outcome) -> Terms:
        value = np.where(outcome.correct, 1.0 - np.minimum(outcome.macs_fraction, 1.0) ** 2, -self.gamma)
        return {"blockdrop": np.where(outcome.terminated, value, 0.0)}


@dataclass(frozen=True)
class InvalidActionPenalty(RewardFn):
    """``-penalty`` on each step whose action was invalid (``invalid_action="penalize"``)."""

    uses_cross_entropy = False

    penalty: float = 0.1

    def terms(self, outcome: Outcome) -> Terms:
        return {"invalid": np.where(outcome.invalid, -self.penalty, 0.0)}


@dataclass(frozen=True)
class ConfidenceShaping(RewardFn):
    """Potential-based shaping ``F = γΦ(s') − Φ(s)`` (Ng et al. 1999), Φ = max softmax probability.

    Φ is 0 after termination, so with ``gamma=1`` the shaping sums to ``-Φ(s_0)`` on every episode and
    leaves the optimal policy unchanged while rewarding steps that raise confidence.
    """

    uses_cross_entropy = False

    gamma: float = 1.0
    scale: float = 1.0

    def terms(self, outcome: Outcome) -> Terms:
        after = np.where(outcome.terminated, 0.0, outcome.potential_after)
        return {"shaping": self.scale * (self.gamma * after - outcome.potential_before)}


REWARD_SPECS = (
    "accuracy",
    "accuracy-per-step",
    "cross-entropy",
    "cross-entropy-per-step",
    "blockdrop",
    "accuracy-shaped",
)


def make_reward(spec: str | RewardFn, lam: float) -> RewardFn:
    """A reward function from an object or a spec string (see ``REWARD_SPECS``).

    ``accuracy``: ``1[correct] − λ·macs_fraction`` at the end (the default); ``-per-step`` charges the
    compute as it is spent; ``cross-entropy``: ``−CE − λ·macs_fraction``; ``blockdrop``: BlockDrop's
    ``1 − macs_fraction²`` or ``−γ`` with ``γ = λ``; ``accuracy-shaped``: ``accuracy`` plus
    confidence shaping.
    """
    if isinstance(spec, RewardFn):
        return spec
    if not isinstance(spec, str):
        raise TypeError(f"reward must be a RewardFn or one of {REWARD_SPECS}, got {spec!r}")
    if not lam >= 0:
        raise ValueError(f"lam must be >= 0, got {lam}")
    builders = {
        "accuracy": lambda: Correctness() + ComputePenalty(lam),
        "accuracy-per-step": lambda: Correctness() + ComputePenalty(lam, per_step=True),
        "cross-entropy": lambda: NegCrossEntropy() + ComputePenalty(lam),
        "cross-entropy-per-step": lambda: NegCrossEntropy() + ComputePenalty(lam, per_step=True),
        "blockdrop": lambda: BlockDropReward(gamma=lam),
        "accuracy-shaped": lambda: Correctness() + ComputePenalty(lam) + ConfidenceShaping(),
    }
    if spec not in builders:
        raise ValueError(f"unknown reward {spec!r}; expected one of {REWARD_SPECS} or a RewardFn")
    return builders[spec]()
