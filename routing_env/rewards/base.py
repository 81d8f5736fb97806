"""What every reward is built from: the :class:`Outcome` of a step, the :class:`RewardFn` interface, and
their sum (``fn_a + fn_b``). A reward of one's own subclasses :class:`RewardFn` and returns named terms."""

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
    probs_before: np.ndarray | None = None
    """(B, C): the softmax the agent saw before the step (zeros when no head was evaluated); only for
    rewards that declare ``uses_probs``, else ``None``."""
    probs_after: np.ndarray | None = None
    """(B, C): the same after the step."""
    label: np.ndarray | None = None
    """(B,) int: the true class (``uses_probs`` rewards only)."""
    cost_fraction: np.ndarray = None  # type: ignore[assignment]
    """(B,) float: the priced cost of the whole episode so far / the reference's, what compute terms
    charge (:mod:`routing_env.latency`); ``macs_fraction`` when not given (``cost="macs"``)."""
    step_cost_fraction: np.ndarray = None  # type: ignore[assignment]
    """(B,) float: the priced cost charged to this step / the reference's; ``step_macs_fraction`` when not given."""
    position_before: np.ndarray | None = None
    """(B,) int: the decision point the step was taken at, 0 … ``num_stages`` (the observation's
    ``position``), so that a reward can price or shape by depth (a potential of the position)."""
    position_after: np.ndarray | None = None
    """(B,) int: the decision point after the step (on a terminal step, where EXIT was taken; the head
    that predicted is at ``exit_position``, which may lie before it)."""
    num_stages: int | None = None
    """N, the number of stages: ``position / num_stages`` is the share of the decision points passed."""

    def __post_init__(self) -> None:
        if self.cost_fraction is None:
            object.__setattr__(self, "cost_fraction", self.macs_fraction)
        if self.step_cost_fraction is None:
            object.__setattr__(self, "step_cost_fraction", self.step_macs_fraction)


Terms = dict[str, np.ndarray]


class RewardFn(abc.ABC):
    """A reward: ``fn(outcome) -> (reward, terms)``.

    ``uses_cross_entropy`` (default ``True``) tells the environment whether to compute
    ``outcome.cross_entropy``; a reward that sets it ``False`` receives NaN there. ``uses_probs``
    (default ``False``) asks for ``probs_before``, ``probs_after`` and ``label``. ``terminal_only``
    (default ``False``) declares every term zero before the terminal step, so the environment need
    not sum the terms over an episode for ``info["reward_terms"]`` (the last step's are the
    episode's); only a class's own declaration counts (:func:`terminal_only`), so a subclass that adds
    a per-step term is summed. A reward returns the same term names on every step. ``source`` names
    the paper a formulation comes from (``routing-env rewards --json`` lists it).
    """

    uses_cross_entropy: bool = True
    uses_probs: bool = False
    terminal_only: bool = False
    source: str = ""

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


def terminal_only(fn: RewardFn) -> bool:
    """Whether every term of ``fn`` is zero before the terminal step, as its class itself declares
    (``RewardFn.terminal_only`` set in the class body, not inherited; a ``Sum``: every part)."""
    if isinstance(fn, Sum):
        return all(terminal_only(part) for part in fn.parts)
    return "terminal_only" in type(fn).__dict__ and bool(fn.terminal_only)


class Sum(RewardFn):
    """The sum of several reward functions; term names must not clash."""

    def __init__(self, *parts: RewardFn) -> None:
        self.parts: tuple[RewardFn, ...] = tuple(
            q for p in parts for q in (p.parts if isinstance(p, Sum) else (p,))
        )

    @property
    def uses_cross_entropy(self) -> bool:  # type: ignore[override]
        return any(part.uses_cross_entropy for part in self.parts)

    @property
    def uses_probs(self) -> bool:  # type: ignore[override]
        return any(part.uses_probs for part in self.parts)

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
