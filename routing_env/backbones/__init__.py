"""Routable backbones, by name."""

from __future__ import annotations

from typing import Any, Callable

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


BACKBONE_KINDS: dict[str, str] = {
    "tiny-cascade": "cascade",
    "tiny-dynamic-resnet": "dynamic-resnet",
}
"""The kind of each built-in backbone (a pretrained model's manifest names its own)."""

KIND_ENVS = {"cascade": "routing_env/Cascade-v0", "dynamic-resnet": "routing_env/DynamicResNet-v0"}
"""The environment that routes each kind of backbone."""


def backbone_catalogue() -> list[dict[str, Any]]:
    """Every name ``backbone=`` takes (``routing-env backbones``), with what one needs to choose: its
    kind and the environment that routes it (``default``: that environment's default), its data set,
    whether routing ``val``/``test`` reads the images (``needs_data``: a pretrained dynamic ResNet's
    outputs depend on the route; a frozen cascade reads its shipped feature caches), and per model (a
    cascade's members, a dynamic ResNet's full path) its test accuracy and MACs as its model card
    records them (the manifest's where no card is shipped; ``None`` for the built-in fixtures)."""
    from .. import pretrained

    found = {name: entries[0] for name, entries in pretrained.manifests().items()}
    rows = []
    for name in backbone_names():
        if name in BACKBONES:  # as make_backbone: a built-in wins over a pretrained model of its name
            kind, dataset, models, needs_data = BACKBONE_KINDS[name], BACKBONE_DATASETS[name], [], False
        else:
            folder, manifest = found[name]
            kind, dataset, needs_data = manifest["kind"], manifest["dataset"], manifest["kind"] == "dynamic-resnet"
            models = [pretrained.model_summary(folder, entry) for entry in manifest.get("members") or [manifest]]
        rows.append({"name": name, "kind": kind, "env": KIND_ENVS[kind], "default": name in (DEFAULT_BACKBONE, DYNAMIC_BACKBONE),
                     "dataset": dataset, "needs_data": needs_data, "models": models})
    return rows


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
    "backbone_catalogue",
    "backbone_dataset",
    "backbone_names",
    "make_backbone",
    "tiny_cascade",
    "tiny_dynamic_resnet",
]
