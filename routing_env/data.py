"""Data sets and splits (docs/design.md §8).

A :class:`Split` is a whole split held in memory: inputs as one tensor, labels as an int64 array.
``synthetic`` (vectors) and ``synthetic-image`` (16x16 stripes) are generated on the fly (seeded, a few
milliseconds); real image data sets follow.
"""

from __future__ import annotations

import functools
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

SPLITS = ("train", "val", "test", "val-aug", "val-fit", "val-holdout", "val-aug-fit")
"""``val-aug`` is ``val`` seen :data:`VAL_AUG_VIEWS` times (:func:`augmented_views`): more data for a
policy without touching ``test``; image data sets only. ``val-fit`` and ``val-holdout`` split ``val``
in two (:func:`split_rows`): a policy learns on the first (or on ``val-aug-fit``, the ``val-aug``
views of its images) and is early-stopped on the second, which it never sees."""

VAL_AUG_VIEWS = 8
VAL_AUG_SEED = 2024
HOLDOUT_FRACTION = 0.2
"""The share of ``val`` that ``val-holdout`` keeps apart (1,000 of CIFAR's 5,000 images)."""
HOLDOUT_SEED = 2025

PARTS = {"val-fit": "val", "val-holdout": "val", "val-aug-fit": "val-aug"}
"""Splits that are rows of another split (:func:`split_rows`), by the split they are taken from."""


def split_rows(split: str, whole: int) -> np.ndarray:
    """The rows of ``PARTS[split]`` that make ``split``, sorted, where that split has ``whole`` instances.

    ``val-holdout`` is a seeded :data:`HOLDOUT_FRACTION` of ``val``, ``val-fit`` the rest, and
    ``val-aug-fit`` every ``val-aug`` view of a ``val-fit`` image (view ``v`` of image ``i`` is row
    ``v·num_val + i``), so no view of a held-out image is fitted on. Rows, not copies: a cascade's
    ``val`` feature cache serves all three."""
    if split not in PARTS:
        raise ValueError(f"split {split!r} is not a part of another split; expected one of {sorted(PARTS)}")
    if PARTS[split] == "val-aug" and whole % VAL_AUG_VIEWS:
        raise ValueError(f"a val-aug of {whole} instances is not {VAL_AUG_VIEWS} views of val (a stale cache?); cannot take {split!r}")
    num_val = whole // VAL_AUG_VIEWS if PARTS[split] == "val-aug" else whole
    held = np.zeros(num_val, dtype=bool)
    held[np.random.default_rng(HOLDOUT_SEED).permutation(num_val)[: round(HOLDOUT_FRACTION * num_val)]] = True
    if split == "val-holdout":
        return np.flatnonzero(held)
    fit = np.flatnonzero(~held)
    if split == "val-fit":
        return fit
    return (np.arange(VAL_AUG_VIEWS)[:, None] * num_val + fit).reshape(-1)


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


SYNTHETIC_IMAGE_SIZE = 16
SYNTHETIC_IMAGE_SIZES = {"train": 4_000, "val": 2_000, "test": 2_000}
SYNTHETIC_IMAGE_CONTRAST = (0.5, 0.2, 0.1)


def synthetic_images(num: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``num`` 3x16x16 uint8 images of stripes, ``(x, y, level)``: the class is the orientation
    (0°, 45°, 90°, 135°), with random frequency, phase and colour; the level (50/30/20%) sets the
    contrast against Gaussian noise, so a small network gets the easy ones and only a wider one the hard.
    """
    rng = np.random.default_rng(seed)
    size = SYNTHETIC_IMAGE_SIZE
    level = rng.choice(3, size=num, p=SYNTHETIC_LEVEL_PROBS)
    y = rng.integers(SYNTHETIC_CLASSES, size=num)
    theta = y * np.pi / SYNTHETIC_CLASSES
    freq = rng.uniform(0.12, 0.25, size=num)
    phase = rng.uniform(0, 2 * np.pi, size=num)
    r, c = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    coord = np.cos(theta)[:, None, None] * c + np.sin(theta)[:, None, None] * r
    stripes = np.sin(2 * np.pi * freq[:, None, None] * coord + phase[:, None, None])
    colour = rng.uniform(-1, 1, size=(num, 3))
    contrast = np.asarray(SYNTHETIC_IMAGE_CONTRAST)[level]
    x = 0.5 + contrast[:, None, None, None] * colour[:, :, None, None] * stripes[:, None] + 0.12 * rng.normal(size=(num, 3, size, size))
    return (np.clip(x, 0, 1) * 255).round().astype(np.uint8), y.astype(np.int64), level


def _synthetic_image(split: str) -> Split:
    x, y, _ = synthetic_images(SYNTHETIC_IMAGE_SIZES[split], 10 + SYNTHETIC_SEEDS[split])
    return Split("synthetic-image", split, torch.from_numpy(x), y, SYNTHETIC_CLASSES)


# --- CIFAR ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CifarLayout:
    """Where torchvision's "python version" of a CIFAR data set keeps its pickles."""

    folder: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    label_key: str
    num_classes: int
    torchvision_class: str


CIFAR = {
    "cifar10": CifarLayout(
        "cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)), ("test_batch",), "labels", 10, "CIFAR10"
    ),
    "cifar100": CifarLayout("cifar-100-python", ("train",), ("test",), "fine_labels", 100, "CIFAR100"),
}
CIFAR_TRAIN_SIZE, CIFAR_TEST_SIZE, CIFAR_VAL_SIZE = 50_000, 10_000, 5_000
VAL_SEED = 0
"""``val`` = the first 5,000 of ``np.random.default_rng(0).permutation(50_000)`` of the official training
set (the same for CIFAR-10 and CIFAR-100); ``train`` = the other 45,000, in their original order."""


def data_root(root: str | os.PathLike[str] | None = None) -> Path:
    """The data root: ``root``, else ``$ROUTING_ENV_DATA``, else ``~/.cache/routing_env``."""
    if root is not None:
        return Path(root)
    env = os.environ.get("ROUTING_ENV_DATA")
    return Path(env) if env else Path.home() / ".cache" / "routing_env"


def _read_batches(directory: Path, files: Sequence[str], label_key: str) -> tuple[np.ndarray, np.ndarray]:
    images, labels = [], []
    for name in files:
        path = directory / name
        if not path.is_file():
            raise FileNotFoundError(path)
        with open(path, "rb") as f:
            batch = pickle.load(f, encoding="latin1")
        data = np.asarray(batch["data"], dtype=np.uint8)
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
            raise ValueError(f"{path} holds images of shape {data.shape[1:]}, expected (3072,)")
        images.append(data.reshape(-1, 3, 32, 32))
        labels.append(np.asarray(batch[label_key], dtype=np.int64))
    return np.concatenate(images), np.concatenate(labels)


def _missing(dataset: str, root: Path, problem: str) -> ValueError:
    return ValueError(
        f"{dataset} data at {root} is unusable: {problem}. Point --data-root or ROUTING_ENV_DATA (in Python, the "
        f"environment option data_root) at a folder holding {CIFAR[dataset].folder}/ (torchvision's python layout), "
        f"or fetch it there once (torchvision.datasets.{CIFAR[dataset].torchvision_class}(root, download=True)); a tiny-* "
        f"backbone needs no data"
    )


def cifar_arrays(
    dataset: str,
    root: str | os.PathLike[str] | None = None,
    download: bool = False,
    sizes: tuple[int, int] = (CIFAR_TRAIN_SIZE, CIFAR_TEST_SIZE),
) -> dict[str, np.ndarray]:
    """The official train and test images (uint8, N×3×32×32) and labels, validated against ``sizes``."""
    layout = CIFAR[dataset]
    root = data_root(root)
    if download:
        import torchvision.datasets

        for train in (True, False):
            getattr(torchvision.datasets, layout.torchvision_class)(str(root), train=train, download=True)
    directory = root / layout.folder
    try:
        x_train, y_train = _read_batches(directory, layout.train_files, layout.label_key)
        x_test, y_test = _read_batches(directory, layout.test_files, layout.label_key)
    except FileNotFoundError as e:
        raise _missing(dataset, root, f"{e.args[0]} does not exist") from None
    except (pickle.UnpicklingError, EOFError, KeyError, ValueError) as e:
        raise _missing(dataset, root, f"a batch file is truncated or corrupted ({type(e).__name__}: {e})") from None
    for name, x, y, n in (("train", x_train, y_train, sizes[0]), ("test", x_test, y_test, sizes[1])):
        if len(x) != n or len(y) != n:
            raise _missing(dataset, root, f"the {name} set has {len(x)} images and {len(y)} labels, expected {n}")
        if y.min() < 0 or y.max() >= layout.num_classes:
            raise _missing(dataset, root, f"{name} labels fall outside 0..{layout.num_classes - 1}")
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}


def val_indices(num_train: int = CIFAR_TRAIN_SIZE, size: int = CIFAR_VAL_SIZE) -> np.ndarray:
    """Indices of the ``val`` images within the official training set (sorted)."""
    return np.sort(np.random.default_rng(VAL_SEED).permutation(num_train)[:size])


@functools.lru_cache(maxsize=4)
def _cifar_split(dataset: str, split: str, root: str, download: bool) -> Split:
    arrays = cifar_arrays(dataset, root, download)
    if split == "test":
        x, y = arrays["x_test"], arrays["y_test"]
    else:
        is_val = np.zeros(CIFAR_TRAIN_SIZE, dtype=bool)
        is_val[val_indices()] = True
        keep = is_val if split == "val" else ~is_val
        x, y = arrays["x_train"][keep], arrays["y_train"][keep]
    return Split(dataset, split, torch.from_numpy(np.ascontiguousarray(x)), y, CIFAR[dataset].num_classes)


DATASETS = ("synthetic", "synthetic-image", *CIFAR)


def load_split(
    dataset: str, split: str, root: str | os.PathLike[str] | None = None, download: bool = False
) -> Split:
    """Load ``split`` (one of :data:`SPLITS`) of ``dataset``.

    CIFAR inputs are uint8 tensors ``(N, 3, 32, 32)``; models normalise them themselves.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    if split in ("val-aug", "val-aug-fit") and dataset == "synthetic":
        raise ValueError(f"split {split!r} needs images (crops and flips); data set {dataset!r} has vectors")
    if split in PARTS:
        whole = load_split(dataset, PARTS[split], root, download)
        rows = split_rows(split, len(whole))
        return Split(whole.dataset, split, whole.inputs[torch.from_numpy(rows)], whole.labels[rows], whole.num_classes)
    if split == "val-aug":
        return _val_aug(dataset, None if root is None else str(root), download)
    if dataset == "synthetic":
        return _synthetic(split)
    if dataset == "synthetic-image":
        return _synthetic_image(split)
    if dataset in CIFAR:
        return _cifar_split(dataset, split, str(data_root(root)), download)
    raise ValueError(f"unknown dataset {dataset!r}; expected one of {DATASETS}")


def augment(x: torch.Tensor, generator: torch.Generator, padding: int = 4) -> torch.Tensor:
    """Random crops with ``padding`` zero pixels and horizontal flips, batched on tensors (N, C, H, W).

    The random numbers come from the CPU ``generator`` whatever ``x.device`` is, so a seeded run draws
    the same crops on CPU and GPU.
    """
    n, c, h, w = x.shape
    padded = torch.nn.functional.pad(x, (padding, padding, padding, padding))
    dy = torch.randint(0, 2 * padding + 1, (n,), generator=generator).to(x.device)
    dx = torch.randint(0, 2 * padding + 1, (n,), generator=generator).to(x.device)
    flip = (torch.rand(n, generator=generator) < 0.5).to(x.device)
    rows = dy[:, None] + torch.arange(h, device=x.device)
    cols = dx[:, None] + torch.arange(w, device=x.device)
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    batch = torch.arange(n, device=x.device)[:, None, None]
    crops = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]
    return crops.permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)


class FreshViews:
    """A fresh crop-and-flip view (:func:`augment`) of a split's images at every read, from one seeded
    CPU generator: co-training's data augmentation. Joint training sees each ``train`` image many
    times; without new views the members fit the images they have memorised, and the policy learns
    from confidences on images the members know by heart (``backbone_augment``)."""

    def __init__(self, inputs: torch.Tensor, seed: int = 0) -> None:
        if inputs.ndim != 4:
            raise ValueError(f"augmented views need images (N, C, H, W); these inputs have shape {tuple(inputs.shape)}")
        self.inputs = inputs
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, rows: torch.Tensor) -> torch.Tensor:
        """A new view of each of the images ``rows`` (channels-first contiguous, as the inputs are)."""
        return augment(self.inputs.index_select(0, rows), self.generator).contiguous()


def augmented_views(split: Split, views: int = VAL_AUG_VIEWS, seed: int = VAL_AUG_SEED) -> Split:
    """``split`` followed by ``views - 1`` seeded augmented copies (4-pixel crops and flips, as in
    training): instance ``v·n + i`` is view ``v`` of image ``i`` (view 0 the image itself), so every
    copy keeps its label. Deterministic, so a cascade's feature cache of it is computed once."""
    if views < 1:
        raise ValueError(f"views must be >= 1, got {views}")
    generator = torch.Generator().manual_seed(seed)
    extra = [augment(split.inputs, generator).contiguous() for _ in range(views - 1)]
    inputs = torch.cat([split.inputs, *extra])
    return Split(split.dataset, f"{split.name}-aug", inputs, np.tile(split.labels, views), split.num_classes)


@functools.lru_cache(maxsize=2)
def _val_aug(dataset: str, root: str | None, download: bool) -> Split:
    return augmented_views(load_split(dataset, "val", root, download))


def cache_root() -> Path:
    """Where feature caches go: ``$ROUTING_ENV_CACHE``, else ``~/.cache/routing_env/cache``."""
    env = os.environ.get("ROUTING_ENV_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "routing_env" / "cache"
