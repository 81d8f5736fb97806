"""Data sets and splits (DESIGN §8).

A :class:`Split` is a whole split held in memory: inputs as one tensor, labels as an int64 array.
``synthetic`` is generated on the fly (seeded, a few milliseconds); real image data sets follow.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Split:
    """One split of a data set, fully in memory."""

    dataset: str
    name: str
    inputs: torch.Tensor
    labels: np.ndarray
    num_classes: int

    def __len__(self) -> int:
        return len(self.labels)


# --- synthetic -----------------------------------------------------------------------------------
SYNTHETIC_DIM = 16
SYNTHETIC_CLASSES = 4
SYNTHETIC_SIZES = {"train": 20_000, "val": 10_000, "test": 10_000}
SYNTHETIC_SEEDS = {"train": 1, "val": 2, "test": 3}
SYNTHETIC_LEVEL_PROBS = (0.5, 0.3, 0.2)


def synthetic_difficulty(num: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Generate ``num`` synthetic instances: ``(x, y, level)`` with three difficulty levels.

    - level 0 (50%): Gaussian clusters around one mean per class — a linear read-out suffices;
    - level 1 (30%): the label is ``2·[x0 > 0] + [x1·x2 > 0]`` — one XOR, needs a hidden layer;
    - level 2 (20%): the label is ``2·[x4·x5 > 0] + [x6·x7 > 0]`` — two XORs, needs a wider net.

    The level is readable from ``x[15]`` (−2, 0, 2 plus noise), so a policy can learn where each
    classifier of a cascade is trustworthy.
    """
    rng = np.random.default_rng(seed)
    means = np.random.default_rng(0).normal(size=(SYNTHETIC_CLASSES, 8))
    means *= 3.0 / np.linalg.norm(means, axis=1, keepdims=True)
    level = rng.choice(3, size=num, p=SYNTHETIC_LEVEL_PROBS)
    x = rng.normal(size=(num, SYNTHETIC_DIM))
    y = rng.integers(SYNTHETIC_CLASSES, size=num)
    easy, medium, hard = level == 0, level == 1, level == 2
    x[easy, :8] = means[y[easy]] + 0.4 * rng.normal(size=(easy.sum(), 8))
    y[medium] = 2 * (x[medium, 0] > 0) + (x[medium, 1] * x[medium, 2] > 0)
    y[hard] = 2 * (x[hard, 4] * x[hard, 5] > 0) + (x[hard, 6] * x[hard, 7] > 0)
    x[:, 15] = 2.0 * level - 2.0 + 0.1 * rng.normal(size=num)
    return x.astype(np.float32), y.astype(np.int64), level


def _synthetic(split: str) -> Split:
    x, y, _ = synthetic_difficulty(SYNTHETIC_SIZES[split], SYNTHETIC_SEEDS[split])
    return Split("synthetic", split, torch.from_numpy(x), y, SYNTHETIC_CLASSES)


DATASETS = ("synthetic",)


def load_split(dataset: str, split: str) -> Split:
    """Load ``split`` (one of ``train``, ``val``, ``test``) of ``dataset``."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    if dataset == "synthetic":
        return _synthetic(split)
    raise ValueError(f"unknown dataset {dataset!r}; expected one of {DATASETS}")


def cache_root() -> Path:
    """Where feature caches go: ``$ROUTING_ENV_CACHE``, else ``~/.cache/routing_env/cache``."""
    env = os.environ.get("ROUTING_ENV_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "routing_env" / "cache"
