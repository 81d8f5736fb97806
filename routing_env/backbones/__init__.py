"""Routable backbones, by name."""

from __future__ import annotations

from typing import Callable

from .base import BackboneSpec, CostTable, Executor, RoutableBackbone
from .cascade import Cascade, FeatureCache, tiny_cascade

BACKBONES: dict[str, Callable[[], RoutableBackbone]] = {
    "tiny-cascade": tiny_cascade,
}

# Which data set each backbone is trained for (and which the environment defaults to).
BACKBONE_DATASETS: dict[str, str] = {
    "tiny-cascade": "synthetic",
}


def make_backbone(name: str) -> RoutableBackbone:
    """The backbone registered under ``name``."""
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; expected one of {sorted(BACKBONES)}")
    return BACKBONES[name]()


__all__ = [
    "BACKBONES",
    "BACKBONE_DATASETS",
    "BackboneSpec",
    "Cascade",
    "CostTable",
    "Executor",
    "FeatureCache",
    "RoutableBackbone",
    "make_backbone",
    "tiny_cascade",
]
