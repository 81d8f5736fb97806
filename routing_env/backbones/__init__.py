"""Routable backbones, by name."""

from __future__ import annotations

from typing import Callable

from .base import SKIP_CHOICE, BackboneSpec, CostTable, Executor, RoutableBackbone
from .cascade import Cascade, FeatureCache, tiny_cascade
from .dynamic import DynamicResNetBackbone, tiny_dynamic_resnet

BACKBONES: dict[str, Callable[[], RoutableBackbone]] = {
    "tiny-cascade": tiny_cascade,
    "tiny-dynamic-resnet": tiny_dynamic_resnet,
}

DEFAULT_BACKBONE = "cifar10-resnet-cascade"
"""The pretrained cascade that ``routing_env/Cascade-v0`` routes unless told otherwise."""

DYNAMIC_BACKBONE = "cifar10-resnet20-dynamic"
"""The pretrained dynamic ResNet-20 that ``routing_env/DynamicResNet-v0`` routes unless told otherwise."""

# Which data set each backbone is trained for (and which the environment defaults to).
BACKBONE_DATASETS: dict[str, str] = {
    "tiny-cascade": "synthetic",
    "tiny-dynamic-resnet": "synthetic-image",
}


def backbone_names() -> list[str]:
    """Built-in backbones and the pretrained models found in ``pretrained/``."""
    from .. import pretrained

    return sorted({*BACKBONES, *pretrained.available()})


def backbone_dataset(name: str) -> str:
    """The data set backbone ``name`` was trained for."""
    from .. import pretrained

    if name in BACKBONE_DATASETS:
        return BACKBONE_DATASETS[name]
    return pretrained.available()[name]["dataset"]


def make_backbone(name: str) -> RoutableBackbone:
    """The backbone registered under ``name``, or the pretrained model of that name."""
    from .. import pretrained

    if name in BACKBONES:
        return BACKBONES[name]()
    if name in pretrained.available():
        return pretrained.load(name)
    raise ValueError(f"unknown backbone {name!r}; expected one of {backbone_names()}")


__all__ = [
    "BACKBONES",
    "BACKBONE_DATASETS",
    "DEFAULT_BACKBONE",
    "DYNAMIC_BACKBONE",
    "SKIP_CHOICE",
    "BackboneSpec",
    "Cascade",
    "CostTable",
    "DynamicResNetBackbone",
    "Executor",
    "FeatureCache",
    "RoutableBackbone",
    "backbone_dataset",
    "backbone_names",
    "make_backbone",
    "tiny_cascade",
    "tiny_dynamic_resnet",
]
