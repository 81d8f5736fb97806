"""The routable-backbone protocol (docs/design.md §1).

A routable backbone is a chain of stages ``s_0 … s_{N-1}`` with exit heads at some decision points.
Decision point ``k`` lies before stage ``k``; point ``N`` lies after the last stage. A backbone states
its structure in a :class:`BackboneSpec`, its compute in a :class:`CostTable`, and runs stages for a
batch of episode slots through an :class:`Executor` bound to one data split.

Rule for heads: arriving at a point that carries a head after ``RUN`` evaluates that head (and charges
it); after ``SKIP`` only when ``spec.head_after_skip`` (a cascade's head belongs to the skipped
classifier, so there it is not evaluated). The head at point 0, if any, is part of the mandatory prefix.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..checkpoints import state_dict_sha256
from ..data import FreshViews

SKIP_CHOICE = -1
"""In a route, the choice of a skipped stage; otherwise the choice is a width index."""


@dataclass(frozen=True)
class BackboneSpec:
    """Structure of a routable backbone."""

    num_stages: int
    """N, the number of routable stages."""
    widths: tuple[float, ...]
    """Channel-width fractions offered by ``RUN(w_j)``; ``(1.0,)`` when there is no width choice."""
    num_classes: int
    feature_dim: int
    """D, the largest pooled feature width; smaller features are zero-padded to it."""
    head_positions: tuple[int, ...]
    """Decision points (0..N) that carry an exit head; must include N."""
    skippable: tuple[bool, ...]
    """Per stage: whether SKIP is possible (same input and output shape)."""
    width_supported: tuple[tuple[bool, ...], ...]
    """Per stage and width: whether ``RUN(w_j)`` is possible."""
    head_after_skip: bool
    """Whether arriving at a head position by SKIP evaluates that head."""
    skip_by_default: bool
    """Whether SKIP is offered when the environment's ``allow_skip`` is left unset."""

    def __post_init__(self) -> None:
        n, w = self.num_stages, len(self.widths)
        if n < 1:
            raise ValueError(f"a backbone needs at least one stage, got num_stages={n}")
        if not self.widths or any(not 0.0 < x <= 1.0 for x in self.widths) or list(self.widths) != sorted(self.widths):
            raise ValueError(f"widths must be increasing fractions in (0, 1], got {self.widths}")
        if n not in self.head_positions or any(not 0 <= p <= n for p in self.head_positions):
            raise ValueError(f"head_positions must lie in 0..{n} and include {n}, got {self.head_positions}")
        if len(self.skippable) != n:
            raise ValueError(f"skippable needs {n} entries, got {len(self.skippable)}")
        if len(self.width_supported) != n or any(len(row) != w or not any(row) for row in self.width_supported):
            raise ValueError(f"width_supported needs {n} rows of {w} entries, each with a supported width")

    @property
    def num_actions(self) -> int:
        """``2 + len(widths)``: EXIT, SKIP, RUN(w_0) … RUN(w_{W-1})."""
        return 2 + len(self.widths)


@dataclass(frozen=True)
class CostTable:
    """MACs of every piece a route can execute, measured once (docs/design.md §9)."""

    prefix: float
    """The mandatory prefix (charged at reset), without the head at point 0."""
    stage: np.ndarray
    """``(N, W)``: stage k at width j; ``nan`` where unsupported."""
    skip: np.ndarray
    """``(N,)``: cost of skipping stage k (0 unless a projection is needed)."""
    head: np.ndarray
    """``(N+1,)``: the exit head at point p; 0 where there is none."""
    reference: float
    """The reference MACs that ``macs_fraction`` divides by."""

    def __post_init__(self) -> None:
        if not self.reference > 0:
            raise ValueError(f"reference MACs must be positive, got {self.reference}")


class Executor(abc.ABC):
    """Runs a backbone's pieces for slots of a batch of episodes, on one data split.

    ``slots`` are integer arrays of slot ids. ``begin``, ``run`` and ``skip`` move slots (one call per
    group taking the same move); ``features`` and ``head`` read them, once per step, in the order of
    ``slots``: features float32 ``(len(slots), D)``, zero-padded; logits float32 ``(len(slots), C)``.
    ``labels`` holds the split's labels (int64, one per instance).
    """

    labels: np.ndarray

    @abc.abstractmethod
    def begin(self, slots: np.ndarray, indices: np.ndarray) -> None:
        """Start episodes on instances ``indices`` in ``slots``: run the prefix."""

    @abc.abstractmethod
    def run(self, slots: np.ndarray, stage: int, width: int) -> None:
        """Run ``stage`` at width index ``width`` for ``slots``."""

    @abc.abstractmethod
    def skip(self, slots: np.ndarray, stage: int) -> None:
        """Skip ``stage`` for ``slots``."""

    @abc.abstractmethod
    def features(self, slots: np.ndarray) -> np.ndarray:
        """The current pooled features of ``slots`` (read once per step for every slot that moved:
        one host transfer per step, not one per group)."""

    @abc.abstractmethod
    def head(self, slots: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """Evaluate, for each of ``slots``, the exit head at its entry of ``positions`` (the point
        the slot is at; one call per step for every slot that reached a head); return logits."""

    views: FreshViews | None = None
    """Where a live executor draws fresh views of its images (:meth:`augment`); ``None``: the images as stored."""

    def augment(self, seed: int) -> None:
        """Live executors: from now on read a fresh crop-and-flip view of each instance when its episode
        begins, and another for :meth:`loss` (:class:`~routing_env.data.FreshViews`, seeded with ``seed``)."""
        raise TypeError(f"{type(self).__name__} serves fixed features: augmentation needs a live backbone (train_backbone=True)")

    def loss(self, indices: np.ndarray, routes: np.ndarray, exits: np.ndarray) -> torch.Tensor:
        """Live executors: the mean cross-entropy of ended episodes (instances ``indices`` of the split,
        their ``routes`` and ``exits``) recomputed with gradients through the backbone's network, which
        co-training (:mod:`routing_env.cotraining`) descends. Frozen executors have no gradients."""
        raise TypeError(f"{type(self).__name__} runs a frozen backbone: build the environment with train_backbone=True to train it")


class RoutableBackbone(abc.ABC):
    """A backbone that routing environments can walk: structure, costs and an executor."""

    name: str
    spec: BackboneSpec
    costs: CostTable
    input_shape: tuple[int, ...]
    """The shape of one input, without the batch dimension."""

    def to(self, device: object) -> RoutableBackbone:
        """Run on ``device`` (a ``torch.device``); backbones served from caches ignore it."""
        return self

    @property
    def module(self) -> nn.Module:
        """The backbone's trainable network (what co-training updates; its state_dict is the weights)."""
        raise TypeError(f"backbone {self.name!r} has no trainable network")

    def load_weights(self, state: dict[str, torch.Tensor]) -> None:
        """Replace the network's weights (e.g. with those of a co-trained run)."""
        self.module.load_state_dict(state)

    @property
    def weights_sha256(self) -> str:
        """The sha256 of the network's weights (what caches of its outputs are keyed on)."""
        return state_dict_sha256(self.module)

    def check_data(self, dataset: str, num_classes: int, input_shape: tuple[int, ...]) -> None:
        """Refuse a data set this backbone cannot read, naming both: another number of classes, or
        inputs of another shape than ``self.input_shape`` (``tiny-cascade`` on ``synthetic-image``
        failed deep in torch, on a dtype)."""
        if num_classes != self.spec.num_classes:
            raise ValueError(f"backbone {self.name!r} predicts {self.spec.num_classes} classes but data set {dataset!r} has {num_classes}")
        if tuple(input_shape) != tuple(self.input_shape):
            raise ValueError(f"backbone {self.name!r} takes inputs of shape {tuple(self.input_shape)}, {dataset!r} has {tuple(input_shape)}")

    def reference_cost(self, prefix: float, stage: np.ndarray, head: np.ndarray) -> float:
        """The reference's cost under a table of priced pieces, by the rule ``costs.reference`` follows
        for MACs, so that a cost model's fractions mean what ``macs_fraction`` means: the full path
        (prefix, every stage at its widest width, the last head). A cascade overrides it."""
        return float(prefix + stage[:, -1].sum() + head[-1])

    @abc.abstractmethod
    def executor(self, dataset: str, split: str, num_slots: int, data_root: str | None = None, live: bool = False) -> Executor:
        """An executor over ``split`` of ``dataset`` for ``num_slots`` concurrent episodes; ``live``
        runs the backbone's own network (so that co-training can update it, :meth:`Executor.loss`)
        instead of a frozen copy or a cache."""

