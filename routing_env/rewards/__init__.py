"""Reward strategies (docs/design.md §4), batched: every term is an array over the episodes of a step.

A reward function maps an :class:`Outcome` to ``(reward, terms)``; ``terms`` names each component
per step, and ``reward`` is their sum; summed over an episode they are its terminal
``info["reward_terms"]``. Functions compose with ``+``.

Where each part lives, one strategy object per reward as Jumanji keeps them:

- ``base.py``: :class:`Outcome`, the :class:`RewardFn` interface and :class:`Sum`;
- ``terms.py``: the accuracy and compute terms (the seed paper's, BlockDrop's, a hinge, a dense one)
  and the invalid-action penalty;
- ``shaping.py``: potential-based shaping and its potentials;
- ``specs.py``: the spec strings that name rewards, and :func:`make_reward`, which builds them.
"""

from .base import Outcome, RewardFn, Sum, Terms, terminal_only
from .shaping import POTENTIALS, ConfidenceShaping, PotentialShaping, check_shaping, potential
from .specs import (
    BUILDERS,
    REWARD_DESCRIPTIONS,
    REWARD_SPECS,
    builtin_reward,
    canonical_spec,
    custom_reward,
    describe,
    is_custom,
    make_reward,
    parse_spec,
    reward_factory,
    reward_fingerprint,
    reward_parameters,
    show_default,
    spec_name,
    split_specs,
)
from .terms import (
    BlockDropReward,
    ComputePenalty,
    Correctness,
    DenseConfidence,
    HingePenalty,
    InvalidActionPenalty,
    NegCrossEntropy,
)

__all__ = [
    "BUILDERS", "POTENTIALS", "REWARD_DESCRIPTIONS", "REWARD_SPECS", "BlockDropReward", "ComputePenalty",
    "ConfidenceShaping", "Correctness", "DenseConfidence", "HingePenalty", "InvalidActionPenalty",
    "NegCrossEntropy", "Outcome", "PotentialShaping", "RewardFn", "Sum", "Terms", "builtin_reward",
    "canonical_spec", "check_shaping", "custom_reward", "describe", "is_custom", "make_reward", "parse_spec",
    "potential", "reward_factory", "reward_fingerprint", "reward_parameters", "show_default", "spec_name",
    "split_specs", "terminal_only",
]
