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

GENERIC_ENV = "routing_env/Cascade-v0"
"""The environment that routes a custom backbone (any family; ``DynamicResNet-v0`` takes one too)."""


KIND_DEFAULTS = {"cascade": DEFAULT_BACKBONE, "dynamic-resnet": DYNAMIC_BACKBONE}
"""The backbone each environment routes unless told otherwise."""


def backbone_catalogue() -> list[dict[str, Any]]:
    """Every name ``backbone=`` takes (``routing-env backbones``), with what one needs to choose: its
    kind and the environment that routes it (``default``: that environment's default), its data set,
    whether routing a frozen ``val``/``test`` reads the images (``needs_data``: a dynamic ResNet's
    outputs depend on the route; a cascade reads its shipped feature caches, if it ships them), and
    a dynamic ResNet's ``exits`` (``stage`` or ``block``: where its heads are), and
    per model (a cascade's members, a dynamic ResNet's full path) its test accuracy and MACs as its
    model card records them (the manifest's where no card is shipped; no models for the built-in
    fixtures). A backbone registered in ``BACKBONES`` without ``BACKBONE_KINDS`` or ``BACKBONE_DATASETS``
    is listed as kind ``custom``, routed by the generic ``routing_env/Cascade-v0``, its data set ``None``
    (pass ``dataset=``). A name this version cannot load (what :func:`~routing_env.pretrained.load`
    refuses before reading weights, several folders claiming it) is listed with ``error`` saying why,
    and so is a manifest that cannot be read (under its folder's name), so that one bad folder does not
    hide the others."""
    from .. import pretrained

    found, broken = pretrained.scan()
    rows = [{"name": path.parent.name, "kind": None, "env": None, "default": False, "dataset": None, "needs_data": None, "exits": None,
             "models": [], "error": why} for path, why in broken.items()]
    for name in sorted({*BACKBONES, *found}):
        error, exits, models = None, None, []
        if name in BACKBONES:  # as make_backbone: a built-in wins over a pretrained model of its name
            kind, dataset = BACKBONE_KINDS.get(name, "custom"), BACKBONE_DATASETS.get(name)
            env, needs_data = KIND_ENVS.get(kind, GENERIC_ENV), None if kind == "custom" else False
        else:
            folder, manifest = found[name][0]
            kind, dataset, env = manifest["kind"], manifest["dataset"], KIND_ENVS.get(manifest["kind"])
            needs_data = kind == "dynamic-resnet" or not manifest.get("caches")
            exits = manifest.get("exits") if kind == "dynamic-resnet" else None
            if len(found[name]) > 1:
                error = f"claimed by {len(found[name])} folders: {', '.join(str(f) for f, _ in found[name])}"
            else:
                error = pretrained.manifest_problem(folder, manifest)
            if error is None:
                try:
                    models = [pretrained.model_summary(folder, entry) for entry in (manifest["members"] if kind == "cascade" else [manifest])]
                except ValueError as e:  # a model card that cannot be read: this row says so, the others stand
                    error = str(e)
        rows.append({"name": name, "kind": kind, "env": env, "default": KIND_DEFAULTS.get(kind) == name,
                     "dataset": dataset, "needs_data": needs_data, "exits": exits, "models": models, "error": error})
    return sorted(rows, key=lambda row: row["name"])


def backbone_dataset(name: str) -> str:
    """The data set backbone ``name`` was trained for."""
    from .. import pretrained

    if name in BACKBONE_DATASETS:
        return BACKBONE_DATASETS[name]
    found = pretrained.available()
    if name not in found:  # a custom backbone registered in BACKBONES without its data set
        raise ValueError(f"backbone {name!r} names no data set: set routing_env.backbones.BACKBONE_DATASETS[{name!r}], "
                         "or pass dataset= to the environment")
    return found[name]["dataset"]


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
