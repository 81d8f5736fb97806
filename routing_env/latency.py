"""Cost models: what the reward charges for compute. MACs by default; a measured latency table instead.

A routing policy trades accuracy against what its reward charges. MACs are a proxy: on a CPU at batch 1
a narrow block keeps most of its fixed cost while a skipped one costs nothing (unless LC-Net's
rescaling multiplies it), so a policy priced in MACs may save MACs and no time. ``routing-env profile --backbone NAME --batch B`` measures, on the
user's machine, the latency of every piece a route can run (the prefix, each stage at each width, each
head) and writes it as JSON; the environment option ``cost=`` takes that file (``"latency"`` for the
default file at batch 1, or a path), or a table given as a dict with the same keys. The hard budget
(``max_macs``) and the ``macs`` reported in ``info`` stay in MACs; the reward, ``obs["cost"]``,
``target_macs`` and ``info["cost_fraction"]`` use the priced cost.
"""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from .backbones.base import CostTable, RoutableBackbone
from .checkpoints import read_json
from .data import cache_root

COST_MODELS = ("macs", "latency")
"""Names ``cost=`` takes besides a path to a profile or a dict."""


def median_seconds(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    """Median wall seconds of ``fn()`` over ``repeats`` calls, after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        fn()
        times.append(time.perf_counter() - began)
    return float(np.median(times))


def default_profile_path(backbone: str, batch: int = 1) -> Path:
    """Where ``routing-env profile`` writes (and ``cost="latency"`` reads) a backbone's profile."""
    return cache_root() / "latency" / f"{backbone}-b{batch}.json"


@torch.inference_mode()
def profile(backbone: RoutableBackbone, batch: int = 1, repeats: int = 50) -> dict[str, Any]:
    """Measured latency (milliseconds, median of ``repeats`` calls) of every piece of ``backbone`` at
    ``batch`` inputs, on this machine: ``prefix``, ``stage`` (N × W), ``skip`` (N), ``head`` (N + 1), and
    ``reference`` defined as the MACs' is (a dynamic ResNet's full path, a cascade's largest member)."""
    from .backbones.cascade import Cascade
    from .backbones.dynamic import DynamicResNetBackbone
    from .backbones.resnet import inference_copy

    if batch < 1 or repeats < 1:
        raise ValueError(f"profile needs batch >= 1 and repeats >= 1, got {batch} and {repeats}")
    spec = backbone.spec
    n, w = spec.num_stages, len(spec.widths)
    stage, head, skip = np.zeros((n, w)), np.zeros(n + 1), np.zeros(n)
    ms = lambda fn: 1000 * median_seconds(fn, repeats, warmup=3)  # noqa: E731
    if isinstance(backbone, DynamicResNetBackbone):
        model = inference_copy(backbone.model)  # what the frozen environment and RoutedModel run
        x = torch.zeros(batch, *backbone.input_shape).contiguous(memory_format=torch.channels_last)
        prefix = ms(lambda: model.stem(x))
        h = model.stem(x)
        for k, block in enumerate(model.blocks):
            for j in range(w):
                stage[k, j] = ms(lambda: block(h, j))
            if model.rescale and block.skippable:  # a rescaled skip multiplies; a plain one is free
                skip[k] = ms(lambda: block.skip(h))
            h = block(h, w - 1)
            if k + 1 in model.exit_positions:
                pooled = h.mean(dim=(2, 3))
                head[k + 1] = ms(lambda: model.head_pooled(k + 1, pooled))
    elif isinstance(backbone, Cascade):
        x = torch.zeros(batch, *backbone.input_shape)
        members = backbone.classifiers
        feature = [ms(lambda: m.features(x)) for m in members]
        head = np.array([ms(lambda: m.head(m.features(x))) - f for m, f in zip(members, feature)]).clip(min=0.0)
        prefix, stage[:, 0] = feature[0], feature[1:]
    else:
        raise TypeError(f"no latency profile for {type(backbone).__name__}")
    return {
        "backbone": backbone.name,
        "batch": batch,
        "unit": "milliseconds (median)",
        "prefix": prefix,
        "stage": stage.tolist(),
        "skip": skip.tolist(),
        "head": head.tolist(),
        "reference": backbone.reference_cost(prefix, stage, head),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}, {torch.get_num_threads()} threads",
        "repeats": repeats,
    }


def check_cost_spec(spec: Any) -> None:
    """Refuse a ``cost=`` value that can never work (before any environment is built)."""
    if isinstance(spec, dict):
        return
    if not isinstance(spec, str) or not (spec in COST_MODELS or spec.endswith(".json")):
        raise ValueError(f"cost must be one of {COST_MODELS}, a path to a .json profile, or a dict table, got {spec!r}")


def cost_array(value: Any, field: str, shape: tuple[int, ...], where: str) -> np.ndarray:
    """One field of a cost table as an array of exactly ``shape`` (a transposed or flat table of the
    right size would misprice every move), of finite costs >= 0 (the reference > 0: costs are taken as
    fractions of it); else a ``ValueError`` naming ``where``, the field and the value."""
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        array = None
    strict = field == "reference"
    bound = "> 0" if strict else ">= 0"
    if array is None or array.shape != shape or not np.isfinite(array).all() or not ((array > 0) if strict else (array >= 0)).all():
        raise ValueError(f"{where}: {field} must be finite costs {bound} of shape {shape}, got {value!r}")
    return array


def cost_table(spec: str | dict[str, Any], backbone: RoutableBackbone, backbone_name: str) -> CostTable | None:
    """The priced cost table of ``cost=spec`` for ``backbone`` (``None`` for MACs, the default): a
    profile from ``"latency"`` (the default file at batch 1), a path, or a dict with ``prefix``,
    ``stage``, ``skip``, ``head`` and optionally ``reference`` (default: the reference path's cost by the
    backbone's rule, :meth:`~routing_env.backbones.base.RoutableBackbone.reference_cost`: a dynamic
    ResNet's full path, a cascade's largest member alone)."""
    if isinstance(spec, str):
        if spec == "macs":
            return None
        path = default_profile_path(backbone_name) if spec == "latency" else Path(spec)
        if not path.is_file():
            hint = f"run `routing-env profile --backbone {backbone_name}` first" if spec == "latency" else "a JSON file written by `routing-env profile`"
            raise ValueError(f"cost={spec!r}: {path} does not exist ({hint}); expected one of {COST_MODELS}, a path or a dict")
        spec = read_json(path)
    if not isinstance(spec, dict):
        raise TypeError(f"cost must be one of {COST_MODELS}, a path or a dict, got {spec!r}")
    if "backbone" in spec and spec["backbone"] != backbone.name:  # a profile names what it measured
        raise ValueError(f"the cost table was measured on {spec['backbone']!r}, not on {backbone.name!r} (whose heads and "
                         f"blocks it would misprice); run `routing-env profile --backbone {backbone_name}`")
    n, w = backbone.spec.num_stages, len(backbone.spec.widths)
    shapes = {"prefix": (), "stage": (n, w), "skip": (n,), "head": (n + 1,), "reference": ()}
    table = {}
    for field, shape in shapes.items():  # each field whole, in its own shape: a transposed or flat table would be mispriced
        if field not in spec:
            if field in ("skip", "reference"):  # optional: skipping free, the reference by the backbone's rule
                continue
            raise ValueError(f"cost table for {backbone_name!r} needs prefix, stage ({n}×{w}), skip ({n}) and head ({n + 1}); it lacks {field!r}")
        table[field] = cost_array(spec[field], field, shape, f"cost table for {backbone_name!r}")
    prefix, stage, skip, head = float(table["prefix"]), table["stage"], table.get("skip", np.zeros(n)), table["head"]
    reference = float(table["reference"]) if "reference" in table else backbone.reference_cost(prefix, stage, head)
    return CostTable(prefix=prefix, stage=stage, skip=skip, head=head, reference=reference)
