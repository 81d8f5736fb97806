"""The built-in terms, each a small frozen :class:`RewardFn`: accuracy (correctness, cross-entropy,
BlockDrop's, a dense one), compute (per episode or per step, a hinge) and the invalid-action penalty;
``source`` names the paper a formulation comes from, where it has one. A new term goes here; one that gets a spec name also goes into
``specs.py`` (:data:`~routing_env.rewards.specs.BUILDERS` and ``REWARD_DESCRIPTIONS``)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .base import Outcome, RewardFn, Terms


@dataclass(frozen=True)
class Correctness(RewardFn):
    """``correct`` if the terminal prediction is right, else ``incorrect``."""

    uses_cross_entropy = False
    terminal_only = True
    source = "Guan et al., IJCAI 2018"

    correct: float = 1.0
    incorrect: float = 0.0

    def terms(self, outcome: Outcome) -> Terms:
        value = np.where(outcome.correct, self.correct, self.incorrect)
        return {"correct": np.where(outcome.terminated, value, 0.0)}


@dataclass(frozen=True)
class NegCrossEntropy(RewardFn):
    """``-cross_entropy`` of the chosen exit at termination."""

    terminal_only = True

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

    @property
    def terminal_only(self) -> bool:  # type: ignore[override]
        return not self.per_step

    def terms(self, outcome: Outcome) -> Terms:
        if self.per_step:
            return {"compute": -self.lam * outcome.step_cost_fraction}
        return {"compute": np.where(outcome.terminated, -self.lam * outcome.cost_fraction, 0.0)}


@dataclass(frozen=True)
class BlockDropReward(RewardFn):
    """BlockDrop (Wu et al. 2018): ``1 - min(cost_fraction, 1)²`` if correct, else ``-gamma``.

    The cap matters where a route can cost more than the reference (a cascade that runs every member
    pays 1.42 of ResNet-56 alone): uncapped, a right answer there would score below a wrong one."""

    uses_cross_entropy = False
    terminal_only = True
    source = "Wu et al., BlockDrop, CVPR 2018"

    gamma: float = 1.0

    def __post_init__(self) -> None:
        if not 0 <= self.gamma < float("inf"):
            raise ValueError(f"BlockDrop's gamma (the penalty of a wrong answer) must be a finite number >= 0, got {self.gamma}")

    def terms(self, outcome: Outcome) -> Terms:
        value = np.where(outcome.correct, 1.0 - np.minimum(outcome.cost_fraction, 1.0) ** 2, -self.gamma)
        return {"blockdrop": np.where(outcome.terminated, value, 0.0)}


@dataclass(frozen=True)
class InvalidActionPenalty(RewardFn):
    """``-penalty`` on each step whose action was invalid (``invalid_action="penalize"``)."""

    uses_cross_entropy = False

    penalty: float = 0.1

    def terms(self, outcome: Outcome) -> Terms:
        return {"invalid": np.where(outcome.invalid, -self.penalty, 0.0)}


@dataclass(frozen=True)
class HingePenalty(RewardFn):
    """``−lam · max(0, macs_fraction − budget)`` at termination: compute is free up to a budget and
    priced beyond it (a soft version of the hard ``max_macs``)."""

    uses_cross_entropy = False
    terminal_only = True
    source = "hinge-loss budget penalty, as in budgeted dynamic networks (e.g. Bejnordi et al., ICLR 2020)"

    lam: float
    budget: float = 0.5

    def __post_init__(self) -> None:
        if not self.lam >= 0 or not self.budget > 0:
            raise ValueError(f"hinge penalty needs lam >= 0 and budget > 0, got {self.lam} and {self.budget}")

    def terms(self, outcome: Outcome) -> Terms:
        over = np.maximum(outcome.cost_fraction - self.budget, 0.0)
        return {"compute": np.where(outcome.terminated, -self.lam * over, 0.0)}


@dataclass(frozen=True)
class DenseConfidence(RewardFn):
    """A dense reward per step: the change in the true class's probability minus the step's compute
    ``−lam · step_cost_fraction`` (MACs unless the environment prices another cost); the episode's sum
    is the final head's ``p(y)`` minus the first one's (0 where no head is read at the start, as on a
    dynamic ResNet), minus ``lam · cost_fraction``."""

    uses_cross_entropy = False
    uses_probs = True
    source = "dense progress reward, cf. SkipNet's hybrid RL (Wang et al., ECCV 2018) and Runtime Neural Pruning (Lin et al., NeurIPS 2017)"

    lam: float

    def __post_init__(self) -> None:
        if not self.lam >= 0:
            raise ValueError(f"lam must be >= 0, got {self.lam}")

    def terms(self, outcome: Outcome) -> Terms:
        rows = np.arange(len(outcome.label))
        gain = outcome.probs_after[rows, outcome.label] - outcome.probs_before[rows, outcome.label]
        return {"progress": gain, "compute": -self.lam * outcome.step_cost_fraction}
