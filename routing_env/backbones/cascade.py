"""Cascades of classifiers (Guan et al., IJCAI 2018).

Classifier ``c_0`` is the mandatory prefix; stage ``k`` runs classifier ``c_{k+1}`` on the raw input,
its pooled penultimate features become the state, and its own head is the exit head at point ``k+1``.
``SKIP`` jumps over a classifier (off unless ``allow_skip=True``). The head at point 0 is ``c_0``'s.

Frozen classifiers give route-independent outputs, so features and logits of every classifier are
computed once per (weights sha256, split) into a feature cache (``.npz``) and steps become look-ups.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np
import torch
from torch import nn

from ..checkpoints import atomic_write, file_sha256, state_dict_sha256
from ..costs import count_macs
from ..data import PARTS, SYNTHETIC_CLASSES, SYNTHETIC_DIM, FreshViews, Split, cache_root, load_split, split_rows
from .base import BackboneSpec, CostTable, Executor, RoutableBackbone


class CascadeMember(Protocol):
    """A classifier usable in a cascade: ``features(x) -> (B, D_k)`` and ``head(f) -> (B, C)``."""

    def features(self, x: torch.Tensor) -> torch.Tensor: ...

    def head(self, f: torch.Tensor) -> torch.Tensor: ...


@dataclass(frozen=True)
class FeatureCache:
    """Every classifier's pooled features ``(M, n, D)`` and logits ``(M, n, C)`` on one split, and its labels.

    With the labels inside, a cache is all a frozen cascade needs: no image data at all.
    """

    features: np.ndarray
    logits: np.ndarray
    labels: np.ndarray

    def save(self, path: str | Path) -> None:
        buffer = io.BytesIO()
        np.savez(buffer, features=self.features, logits=self.logits, labels=self.labels)
        atomic_write(path, lambda f: f.write(buffer.getvalue()))

    @classmethod
    def load(cls, path: str | Path) -> FeatureCache:
        """A saved cache; one that is not a readable ``.npz`` of three arrays that agree on the number
        of members and instances is a ``ValueError`` naming the file."""
        try:
            with np.load(path) as data:
                cache = cls(features=data["features"], logits=data["logits"], labels=data["labels"])
        except (OSError, EOFError, ValueError, TypeError, KeyError, zipfile.BadZipFile, zlib.error) as e:
            raise ValueError(f"feature cache {path} cannot be read ({type(e).__name__}: {e}); delete it to have it rebuilt") from None
        f, lg, lb = cache.features.shape, cache.logits.shape, cache.labels.shape
        if len(f) != 3 or len(lg) != 3 or len(lb) != 1 or f[:2] != lg[:2] or lg[1] != lb[0]:
            raise ValueError(f"feature cache {path} holds features {f}, logits {lg} and labels {lb}; expected (M, n, D), (M, n, C) and (n,)")
        return cache

    def rows(self, rows: np.ndarray) -> FeatureCache:
        """The cache of the instances ``rows`` (a split that is part of this one, :data:`~routing_env.data.PARTS`)."""
        return FeatureCache(self.features[:, rows], self.logits[:, rows], self.labels[rows])


class Cascade(RoutableBackbone):
    """A frozen cascade of classifiers of increasing cost, routed with a feature cache.

    Args:
        classifiers: ``nn.Module`` objects with ``features`` and ``head`` (:class:`CascadeMember`),
            cheapest first. They are put in ``eval()`` mode and never trained here.
        input_shape: shape of one input (without batch), used to measure MACs.
        name: identifies the cascade in cache file names.
        cache_dir: where computed feature caches are written (default :func:`routing_env.data.cache_root`).
        shipped_dir: a read-only folder searched first for caches (a pretrained model's own).
        member_names: what to call each classifier in reports (default ``member 0``, ``member 1``, …).
        shipped_sha256: the sha256 of shipped caches by file name (from the manifest); a shipped cache
            that does not match is refused, naming the file.
    """

    def __init__(
        self,
        classifiers: Sequence[nn.Module],
        input_shape: tuple[int, ...],
        name: str,
        cache_dir: str | Path | None = None,
        shipped_dir: str | Path | None = None,
        member_names: Sequence[str] | None = None,
        shipped_sha256: dict[str, str] | None = None,
    ) -> None:
        if len(classifiers) < 2:
            raise ValueError(f"a cascade needs at least 2 classifiers, got {len(classifiers)}")
        if member_names is not None and len(member_names) != len(classifiers):
            raise ValueError(f"member_names has {len(member_names)} names for {len(classifiers)} classifiers")
        self.name = name
        self.member_names = list(member_names) if member_names is not None else [f"member {k}" for k in range(len(classifiers))]
        self.classifiers = nn.ModuleList(classifiers).eval().requires_grad_(False)
        self.input_shape = tuple(input_shape)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.shipped_dir = Path(shipped_dir) if shipped_dir is not None else None
        self.shipped_sha256 = dict(shipped_sha256 or {})
        self.sha256 = state_dict_sha256(self.classifiers)
        example = torch.zeros(1, *self.input_shape)
        with torch.no_grad():
            feats = [c.features(example) for c in self.classifiers]
            num_classes = self.classifiers[0].head(feats[0]).shape[1]
        feature_macs = [count_macs(c.features, example) for c in self.classifiers]
        head_macs = [count_macs(c.head, f) for c, f in zip(self.classifiers, feats)]
        n = len(classifiers) - 1
        self.member_macs = [float(f + h) for f, h in zip(feature_macs, head_macs)]
        """MACs of each classifier run alone (features and head)."""
        self.feature_dims = [f.shape[1] for f in feats]
        self.spec = BackboneSpec(
            num_stages=n,
            widths=(1.0,),
            num_classes=num_classes,
            feature_dim=max(self.feature_dims),
            head_positions=tuple(range(n + 1)),
            skippable=(True,) * n,
            width_supported=((True,),) * n,
            head_after_skip=False,
            skip_by_default=False,
        )
        self.costs = CostTable(
            prefix=float(feature_macs[0]),
            stage=np.array(feature_macs[1:], dtype=np.float64)[:, None],
            skip=np.zeros(n),
            head=np.array(head_macs, dtype=np.float64),
            reference=max(self.member_macs),
        )

    def reference_cost(self, prefix: float, stage: np.ndarray, head: np.ndarray) -> float:
        """The largest member alone (its features and its head), as ``costs.reference`` is for MACs."""
        return float(max(prefix + head[0], *(stage[:, 0] + head[1:])))

    def cache_name(self, dataset: str, split: str) -> str:
        return f"{self.name}-{dataset}-{split}-{self.sha256[:16]}.npz"

    def cache_path(self, dataset: str, split: str) -> Path:
        """Where a computed cache is written."""
        root = self.cache_dir if self.cache_dir is not None else cache_root()
        return root / self.cache_name(dataset, split)

    def compute_cache(self, split: Split, batch_size: int = 1024) -> FeatureCache:
        """Run every classifier over ``split`` (no caching)."""
        m, n, d = len(self.classifiers), len(split), self.spec.feature_dim
        features = np.zeros((m, n, d), dtype=np.float32)
        logits = np.zeros((m, n, self.spec.num_classes), dtype=np.float32)
        device = next(self.classifiers.parameters()).device  # a cascade moved to a GPU computes its caches there
        with torch.inference_mode():
            for start in range(0, n, batch_size):
                x = split.inputs[start : start + batch_size].to(device)
                for k, c in enumerate(self.classifiers):
                    f = c.features(x)
                    features[k, start : start + len(x), : f.shape[1]] = f.cpu().numpy()
                    logits[k, start : start + len(x)] = c.head(f).cpu().numpy()
        return FeatureCache(features, logits, split.labels.copy())

    def feature_cache(self, dataset: str, split: str, data_root: str | None = None) -> FeatureCache:
        """The cache of ``split``: shipped, else previously computed, else computed now and written
        atomically; a split that is part of another (``val-fit`` …) is that one's rows."""
        if split in PARTS:
            whole = self.feature_cache(dataset, PARTS[split], data_root)
            return whole.rows(split_rows(split, len(whole.labels)))
        candidates = [self.cache_path(dataset, split)]
        if self.shipped_dir is not None:
            candidates.insert(0, self.shipped_dir / self.cache_name(dataset, split))
        for path in candidates:
            if path.is_file():
                expected = self.shipped_sha256.get(path.name) if path.parent == self.shipped_dir else None
                if expected is not None and file_sha256(path) != expected:
                    raise ValueError(f"feature cache {path} is corrupted: its sha256 does not match the manifest's {expected}")
                cache = FeatureCache.load(path)
                if cache.features.shape[0] == len(self.classifiers) and cache.logits.shape[2] == self.spec.num_classes:
                    return cache
                if path.parent == self.shipped_dir:  # a stale cache of our own is rebuilt; a shipped one is wrong
                    raise ValueError(f"feature cache {path} holds {cache.features.shape[0]} members and {cache.logits.shape[2]} classes; "
                                     f"{self.name!r} has {len(self.classifiers)} and {self.spec.num_classes}")
        data = load_split(dataset, split, data_root)
        self.check_data(dataset, data.num_classes, data.inputs.shape[1:])
        cache = self.compute_cache(data)
        cache.save(candidates[-1])
        return cache

    @property
    def module(self) -> nn.Module:
        return self.classifiers

    def load_weights(self, state: dict[str, torch.Tensor]) -> None:
        self.classifiers.load_state_dict(state)
        self.sha256 = state_dict_sha256(self.classifiers)  # feature caches are keyed by the weights

    def to(self, device: object) -> Cascade:
        self.classifiers.to(device)
        return self

    def executor(self, dataset: str, split: str, num_slots: int, data_root: str | None = None, live: bool = False) -> Executor:
        """Frozen: look-ups into the split's feature cache. Live: :class:`LiveCascadeExecutor`."""
        if not live:
            return CachedCascadeExecutor(self.feature_cache(dataset, split, data_root), num_slots)
        data = load_split(dataset, split, data_root)
        self.check_data(dataset, data.num_classes, data.inputs.shape[1:])
        return LiveCascadeExecutor(self, data, num_slots)


class CachedCascadeExecutor(Executor):
    """Cascade steps as array look-ups into a :class:`FeatureCache`."""

    def __init__(self, cache: FeatureCache, num_slots: int) -> None:
        self.cache = cache
        self.labels = cache.labels
        self.index = np.zeros(num_slots, dtype=np.int64)
        self.last = np.zeros(num_slots, dtype=np.int64)

    def begin(self, slots: np.ndarray, indices: np.ndarray) -> None:
        self.index[slots] = indices
        self.last[slots] = 0

    def run(self, slots: np.ndarray, stage: int, width: int) -> None:
        self.last[slots] = stage + 1

    def skip(self, slots: np.ndarray, stage: int) -> None:
        pass  # the features stay those of the last classifier run

    def features(self, slots: np.ndarray) -> np.ndarray:
        return self.cache.features[self.last[slots], self.index[slots]]

    def head(self, slots: np.ndarray, positions: np.ndarray) -> np.ndarray:
        return self.cache.logits[positions, self.index[slots]]


class LiveCascadeExecutor(Executor):
    """Runs the classifiers on the inputs (their outputs change as co-training updates them); its
    :meth:`loss` is the cross-entropy of the classifiers whose heads ended episodes exited at (Guan et
    al.'s joint objective, classifier part)."""

    def __init__(self, cascade: Cascade, data: Split, num_slots: int) -> None:
        self.classifiers = cascade.classifiers
        self.device = next(self.classifiers.parameters()).device
        self.inputs = data.inputs.to(self.device)
        self.labels = data.labels
        self.feature_dim = cascade.spec.feature_dim
        self.index = np.zeros(num_slots, dtype=np.int64)
        self.features_now = np.zeros((num_slots, self.feature_dim), dtype=np.float32)
        self.logits = np.zeros((num_slots, cascade.spec.num_classes), dtype=np.float32)
        self.views: FreshViews | None = None
        self.view = self.inputs[:0]
        """Each slot's view of its instance while augmenting (every member of an episode sees the same one)."""

    def augment(self, seed: int) -> None:
        self.views = FreshViews(self.inputs, seed)
        self.view = torch.zeros(len(self.index), *self.inputs.shape[1:], dtype=self.inputs.dtype, device=self.device)

    def _images(self, slots: np.ndarray) -> torch.Tensor:
        if self.views is not None:
            return self.view[torch.from_numpy(slots).to(self.device)]
        return self.inputs[torch.from_numpy(self.index[slots]).to(self.device)]

    @torch.inference_mode()
    def _classify(self, slots: np.ndarray, member: int) -> None:
        classifier = self.classifiers[member]
        f = classifier.features(self._images(slots))
        self.logits[slots] = classifier.head(f).float().cpu().numpy()
        self.features_now[slots] = 0.0
        self.features_now[slots, : f.shape[1]] = f.float().cpu().numpy()

    def begin(self, slots: np.ndarray, indices: np.ndarray) -> None:
        self.index[slots] = indices
        if self.views is not None:
            self.view[torch.from_numpy(slots).to(self.device)] = self.views(torch.from_numpy(indices).to(self.device))
        self._classify(slots, 0)

    def run(self, slots: np.ndarray, stage: int, width: int) -> None:
        self._classify(slots, stage + 1)

    def skip(self, slots: np.ndarray, stage: int) -> None:
        pass  # the features stay those of the last classifier run

    def features(self, slots: np.ndarray) -> np.ndarray:
        return self.features_now[slots]

    def head(self, slots: np.ndarray, positions: np.ndarray) -> np.ndarray:
        # the head at point p belongs to classifier p, which has just run (heads are not evaluated after SKIP)
        return self.logits[slots]

    def loss(self, indices: np.ndarray, routes: np.ndarray, exits: np.ndarray) -> torch.Tensor:
        """Mean cross-entropy of the classifiers exited at, recomputed with gradients (on fresh views
        of the instances while augmenting)."""
        total = torch.zeros((), device=self.device)
        for member in np.unique(exits).tolist():
            chosen = indices[exits == member]
            classifier = self.classifiers[member]
            rows = torch.from_numpy(chosen).to(self.device)
            images = self.views(rows) if self.views is not None else self.inputs[rows]
            logits = classifier.head(classifier.features(images))
            labels = torch.from_numpy(self.labels[chosen]).to(self.device)
            total = total + nn.functional.cross_entropy(logits, labels, reduction="sum")
        return total / len(indices)


class MLPClassifier(nn.Module):
    """A small MLP with ``features`` (the last hidden layer) and ``head`` (a linear read-out)."""

    def __init__(self, in_dim: int, hidden: Sequence[int], num_classes: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for width in hidden:
            layers.append(nn.Linear(in_dim, width))
            layers.append(nn.ReLU())
            in_dim = width
        self.body = nn.Sequential(*layers)
        self.fc = nn.Linear(in_dim, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def head(self, f: torch.Tensor) -> torch.Tensor:
        return self.fc(f)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


TINY_CASCADE_HIDDEN = ((4,), (16,), (64, 64))


def train_classifier(model: nn.Module, split: Split, epochs: int, lr: float, seed: int) -> nn.Module:
    """Adam on cross-entropy, mini-batches of 256, seeded."""
    generator = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=1e-4)
    labels = torch.from_numpy(split.labels)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(split), generator=generator)
        for start in range(0, len(split), 256):
            batch = order[start : start + 256]
            loss = nn.functional.cross_entropy(model(split.inputs[batch]), labels[batch])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


@functools.lru_cache(maxsize=4)
def _tiny_cascade_states(seed: int) -> tuple[dict[str, torch.Tensor], ...]:
    """The trained members' weights (memoised: training takes seconds; each cascade builds its own modules)."""
    train = load_split("synthetic", "train")
    members = []
    for k, hidden in enumerate(TINY_CASCADE_HIDDEN):
        # each member learns from its own random half of the training split, as independently trained
        # networks do: their errors are partly independent, which is what a router can exploit
        half = np.sort(np.random.default_rng(100 + seed + k).permutation(len(train))[: len(train) // 2])
        data = dataclasses.replace(train, inputs=train.inputs[half], labels=train.labels[half])
        torch.manual_seed(seed + k)
        model = MLPClassifier(SYNTHETIC_DIM, hidden, SYNTHETIC_CLASSES)
        lr = 1e-2 if len(hidden) == 1 else 3e-3
        members.append(train_classifier(model, data, epochs=50, lr=lr, seed=seed + k))
    return tuple({k: v.detach().clone() for k, v in m.state_dict().items()} for m in members)


def _tiny_cascade_members(seed: int) -> list[MLPClassifier]:
    """Fresh modules with the memoised weights: no two cascades share a module."""
    members = []
    for hidden, state in zip(TINY_CASCADE_HIDDEN, _tiny_cascade_states(seed)):
        model = MLPClassifier(SYNTHETIC_DIM, hidden, SYNTHETIC_CLASSES)
        model.load_state_dict(state)
        members.append(model.eval())
    return members


def tiny_cascade(seed: int = 0, cache_dir: str | Path | None = None) -> Cascade:
    """Three MLPs (hidden ``(4,)``, ``(16,)``, ``(64, 64)``), each trained on its own half of ``synthetic`` train.

    Trained in a few seconds on first use and memoised per process. On ``synthetic`` the smallest is
    right on the easy third of instances, the middle one also on the medium ones, only the largest on
    the hard ones, so routing matters.
    """
    names = [f"mlp{'x'.join(map(str, hidden))}" for hidden in TINY_CASCADE_HIDDEN]
    return Cascade(_tiny_cascade_members(seed), (SYNTHETIC_DIM,), name=f"tiny-cascade-s{seed}", cache_dir=cache_dir, member_names=names)
