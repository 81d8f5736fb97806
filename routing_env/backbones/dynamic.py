"""The dynamic ResNet as a routable backbone (LC-Net, BlockDrop, SkipNet), executed for real.

Stage ``k`` is residual block ``k`` of a :class:`~routing_env.backbones.resnet.DynamicResNet`: ``SKIP``
keeps its shortcut (identity; offered only where input and output shapes agree), ``RUN(w)`` runs its
inner convolutions on the first ``round(w·C)`` channels. The stem is the mandatory prefix; exit heads
sit after each stage (or after every block). Unlike the frozen cascade, outputs depend on the route, so
the executor runs the blocks: episodes are kept in per-shape feature-map buffers, and the episodes that
take the same (block, width) in a step run as one batched call.

Live (``train_backbone=True``), the executor runs the network itself, and :meth:`DynamicExecutor.loss`
replays ended episodes' routes with gradients (:meth:`DynamicResNet.forward_routes`, grouped the same
way) for co-training (:mod:`routing_env.cotraining`). BatchNorm stays in eval mode there: its
statistics are the pretrained ones, since a (block, width) group in a replay can be a single input.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..costs import count_macs
from ..data import SYNTHETIC_CLASSES, SYNTHETIC_IMAGE_SIZE, FreshViews, Split, load_split
from .base import SKIP_CHOICE, BackboneSpec, CostTable, Executor, RoutableBackbone
from .resnet import DynamicResNet, global_pool, inference_copy, sandwich_loss


def dynamic_costs(model: DynamicResNet, input_shape: tuple[int, ...]) -> CostTable:
    """MACs of the stem, of each block at each width, and of each exit head (FlopCounterMode);
    the reference is the full network: stem, every block at width 1, the last head. With LC-Net's
    rescaling (``model.rescale``) a narrowed or skipped block also pays one multiply per output
    element, which FlopCounterMode does not see. Counted in eval mode (a batch of one has no batch
    statistics); the model's own mode is restored."""
    was_training = model.training
    model.eval()
    try:
        return _dynamic_costs(model, input_shape)
    finally:
        model.train(was_training)


def _dynamic_costs(model: DynamicResNet, input_shape: tuple[int, ...]) -> CostTable:
    n, w = model.num_blocks, len(model.widths)
    with torch.no_grad():
        x = torch.zeros(1, *input_shape, device=next(model.parameters()).device)
        prefix = count_macs(model.stem, x)
        h = model.stem(x)
        stage = np.zeros((n, w))
        skip = np.zeros(n)
        head = np.zeros(n + 1)
        for k, block in enumerate(model.blocks):
            for j in range(w):
                stage[k, j] = count_macs(block, h, j)
            h = block(h)
            if model.rescale:
                stage[k, :-1] += h[0].numel()
                skip[k] = h[0].numel() if block.skippable else 0.0
            if k + 1 in model.exit_positions:
                head[k + 1] = count_macs(model.head, k + 1, h)
    return CostTable(prefix=float(prefix), stage=stage, skip=skip, head=head, reference=float(prefix + stage[:, -1].sum() + head[n]))


def pooled_features(h: torch.Tensor, dim: int) -> torch.Tensor:
    """The observation's ``features`` of feature maps ``h``: global average pooling, zero-padded to ``dim``."""
    return F.pad(global_pool(h), (0, dim - h.shape[1]))


class DynamicResNetBackbone(RoutableBackbone):
    """A :class:`DynamicResNet` as a routable backbone (docs/design.md §1): decisions before every block.

    Args:
        model: the network (put in ``eval()`` mode; frozen unless an executor co-trains it).
        name: identifies the backbone in reports.
        input_shape: shape of one input, used to measure MACs and buffer shapes.
    """

    def __init__(self, model: DynamicResNet, name: str, input_shape: tuple[int, ...] = (3, 32, 32)) -> None:
        self.model = model.eval().requires_grad_(False)
        self.name = name
        self.input_shape = tuple(input_shape)
        self.device = next(model.parameters()).device
        n = model.num_blocks
        with torch.no_grad():
            h = model.stem(torch.zeros(1, *self.input_shape, device=self.device))
            shapes = [tuple(h.shape[1:])]
            for block in model.blocks:
                h = block(h)
                shapes.append(tuple(h.shape[1:]))
            num_classes = model.head(n, h).shape[1]
        self.map_shapes = shapes
        """Shape of the feature map at each decision point 0..N."""
        self.spec = BackboneSpec(
            num_stages=n,
            widths=model.widths,
            num_classes=int(num_classes),
            feature_dim=model.feature_dim,
            head_positions=model.exit_positions,
            skippable=tuple(block.skippable for block in model.blocks),
            width_supported=((True,) * len(model.widths),) * n,
            head_after_skip=True,
            skip_by_default=True,
        )
        self.costs = dynamic_costs(model, self.input_shape)

    @property
    def module(self) -> nn.Module:
        return self.model

    def to(self, device: torch.device) -> DynamicResNetBackbone:
        self.model.to(device)
        self.device = torch.device(device)
        return self

    def executor(self, dataset: str, split: str, num_slots: int, data_root: str | None = None, live: bool = False) -> DynamicExecutor:
        data = load_split(dataset, split, data_root)
        self.check_data(dataset, data.num_classes, data.inputs.shape[1:])
        return DynamicExecutor(self, data, num_slots, live)


class DynamicExecutor(Executor):
    """Runs the blocks each episode's route takes, for slots of a batch, on one split.

    Frozen, it runs an inference copy of the network (:func:`~routing_env.backbones.resnet.inference_copy`:
    BatchNorm folded, channels-last; a snapshot of the weights when the environment is built) and keeps
    the maps channels-last (stored ``(B, H, W, C)``, so gathering a group's rows is one contiguous
    copy); live, the network itself, channels-first.
    """

    def __init__(self, backbone: DynamicResNetBackbone, data: Split, num_slots: int, live: bool) -> None:
        frozen = not live
        self.live = live
        self.model = inference_copy(backbone.model) if frozen else backbone.model
        self.device = backbone.device
        self.feature_dim = backbone.spec.feature_dim
        self.num_classes = backbone.spec.num_classes
        self.inputs = data.inputs.to(self.device)
        self.labels = data.labels
        # storage order of the maps, and the permutations between it and (B, C, H, W)
        self.to_nchw, self.to_stored = ((0, 3, 1, 2), (0, 2, 3, 1)) if frozen else ((0, 1, 2, 3), (0, 1, 2, 3))
        buffers: dict[tuple[int, ...], torch.Tensor] = {}
        for shape in backbone.map_shapes:
            if shape not in buffers:
                buffers[shape] = torch.zeros(num_slots, *shape, device=self.device).permute(self.to_stored).contiguous()
        self.stored = [buffers[shape] for shape in backbone.map_shapes]
        self.maps = [m.permute(self.to_nchw) for m in self.stored]
        """The feature map of each slot at each point 0..N, as ``(B, C, H, W)`` views (points a SKIP
        joins share one buffer)."""
        self.pooled = torch.zeros(num_slots, self.feature_dim, device=self.device)
        """Pooled features of each slot's current map (the observation's, and what heads read)."""
        self.views: FreshViews | None = None

    def augment(self, seed: int) -> None:
        if not self.live:
            super().augment(seed)
        self.views = FreshViews(self.inputs, seed)

    def _images(self, indices: np.ndarray) -> torch.Tensor:
        """The instances' images, or fresh views of them while augmenting."""
        rows = self._rows(indices)
        return self.views(rows) if self.views is not None else self.inputs.index_select(0, rows)

    def _rows(self, slots: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(slots).to(self.device)

    def _gather(self, point: int, rows: torch.Tensor) -> torch.Tensor:
        return self.stored[point].index_select(0, rows).permute(self.to_nchw)

    def _store(self, point: int, rows: torch.Tensor, h: torch.Tensor) -> None:
        self.stored[point].index_copy_(0, rows, h.permute(self.to_stored))

    def _pool(self, rows: torch.Tensor, h: torch.Tensor) -> None:
        """Pool ``h`` (the maps of ``rows``) once: what the observation and the heads read."""
        self.pooled.index_copy_(0, rows, pooled_features(h, self.feature_dim))  # index_copy_: cheaper than indexed assignment

    @torch.inference_mode()
    def begin(self, slots: np.ndarray, indices: np.ndarray) -> None:
        rows = self._rows(slots)
        h = self.model.stem(self._images(indices))
        self._store(0, rows, h)
        self._pool(rows, h)

    @torch.inference_mode()
    def run(self, slots: np.ndarray, stage: int, width: int) -> None:
        # through block_routes, the one function that runs a batch through a block along its choices:
        # RoutedModel and the co-training replay (forward_routes) run blocks through it too
        rows = self._rows(slots)
        h = self.model.block_routes(stage, self._gather(stage, rows), int(width))  # one choice for the group
        self._store(stage + 1, rows, h)
        self._pool(rows, h)

    @torch.inference_mode()
    def skip(self, slots: np.ndarray, stage: int) -> None:
        # a skippable block keeps the shape, so points stage and stage + 1 share one buffer; without
        # rescaling the map and its pooled features stay as they are
        if self.model.rescale:
            rows = self._rows(slots)
            h = self.model.blocks[stage].skip(self._gather(stage, rows))
            self._store(stage + 1, rows, h)
            self._pool(rows, h)

    def features(self, slots: np.ndarray) -> np.ndarray:
        return self.pooled.index_select(0, self._rows(slots)).float().cpu().numpy()

    @torch.inference_mode()
    def head(self, slots: np.ndarray, positions: np.ndarray) -> np.ndarray:
        # a head reads the pooled features of the map its slot is at (pooled when the map was made)
        pooled = self.pooled.index_select(0, self._rows(slots))
        if (positions == positions[0]).all():
            return self.model.head_pooled(int(positions[0]), pooled).float().cpu().numpy()
        logits = np.zeros((len(slots), self.num_classes), dtype=np.float32)
        for p in np.unique(positions).tolist():
            chosen = positions == p
            logits[chosen] = self.model.head_pooled(p, pooled[torch.from_numpy(chosen).to(self.device)]).float().cpu().numpy()
        return logits

    def loss(self, indices: np.ndarray, routes: np.ndarray, exits: np.ndarray) -> torch.Tensor:
        """Mean cross-entropy of the exits taken, replaying the routes with gradients (live only)."""
        if not self.live:
            return super().loss(indices, routes, exits)
        logits = self.model.forward_routes(self._images(indices), torch.from_numpy(routes).to(self.device), torch.from_numpy(exits).to(self.device))
        return F.cross_entropy(logits, torch.from_numpy(self.labels[indices]).to(self.device))


# --- a tiny dynamic ResNet on synthetic-image, for tests and examples -----------------------------
@functools.lru_cache(maxsize=4)
def _tiny_dynamic_state(seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    model = DynamicResNet(14, SYNTHETIC_CLASSES, base_width=4)
    train = load_split("synthetic-image", "train")
    generator = torch.Generator().manual_seed(seed)
    labels = torch.from_numpy(train.labels)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    criterion = nn.CrossEntropyLoss()
    model.train()
    for _ in range(3):
        order = torch.randperm(len(train), generator=generator)
        for start in range(0, len(train), 128):
            batch = order[start : start + 128]
            loss, _ = sandwich_loss(model, train.inputs[batch], labels[batch], criterion, generator, sandwich=1)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return {k: v.detach().clone() for k, v in model.eval().state_dict().items()}


def tiny_dynamic_model(seed: int = 0) -> DynamicResNet:
    """The network of :func:`tiny_dynamic_resnet`, a fresh copy."""
    model = DynamicResNet(14, SYNTHETIC_CLASSES, base_width=4)
    model.load_state_dict(_tiny_dynamic_state(seed))
    return model.eval()


def tiny_dynamic_resnet(seed: int = 0) -> DynamicResNetBackbone:
    """A ResNet-14 with 4/8/16 channels on ``synthetic-image`` (16x16 stripes), trained for 3 epochs
    with the sandwich rule on first use (a few seconds, memoised per process); 6 blocks, 3 skippable,
    exits after each stage."""
    return DynamicResNetBackbone(tiny_dynamic_model(seed), f"tiny-dynamic-resnet-s{seed}", (3, SYNTHETIC_IMAGE_SIZE, SYNTHETIC_IMAGE_SIZE))


# --- static routes: the card's figures and the baselines the learned policies are compared with ---
def route_macs(costs: CostTable, routes: np.ndarray, exits: np.ndarray) -> np.ndarray:
    """MACs of each route (``routes`` ``(B, N)`` width index or ``SKIP_CHOICE``, ``exits`` ``(B,)``):
    the stem, the blocks run before the exit, the one head read at the exit — a static network's cost,
    read from the backbone's :class:`CostTable` (the table :class:`~routing_env.core.ActionTables`
    derives from). The environment charges more for the same path: every head a route passes, since
    the agent sees them (``ActionTables.act_cost``)."""
    n = routes.shape[1]
    before = np.arange(n)[None, :] < exits[:, None]
    run = np.where(routes >= 0, costs.stage[np.arange(n)[None, :], np.clip(routes, 0, None)], costs.skip[None, :])
    return costs.prefix + (run * before).sum(axis=1) + costs.head[exits]


@torch.inference_mode()
def route_correct(model: DynamicResNet, split: Split, routes: np.ndarray, exits: np.ndarray, batch_size: int = 500) -> np.ndarray:
    """Whether each input of ``split`` is classified right along its own route."""
    model.eval()
    device = next(model.parameters()).device
    right = np.zeros(len(split), dtype=bool)
    for start in range(0, len(split), batch_size):
        rows = slice(start, start + batch_size)
        logits = model.forward_routes(
            split.inputs[rows].to(device), torch.from_numpy(routes[rows]).to(device), torch.from_numpy(exits[rows]).to(device)
        )
        right[rows] = logits.argmax(1).cpu().numpy() == split.labels[rows]
    return right


def static_routes(
    model: DynamicResNet, num: int, skip_rates: tuple[float, ...] = (0.25, 0.5), seed: int = 0, single_skips: bool = False
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Named route sets for ``num`` inputs: the full path; every block at each width; each exit on the
    full-width path; and random skipping (each skippable block skipped with probability r, per input,
    seeded) at full width. With ``single_skips``, also the full path with one block skipped, for each
    skippable block (``skip block k``): which blocks a network cannot do without. At rate r random
    skipping saves r times their MACs in expectation; its accuracy loss is r times theirs only to
    first order, since skips interact."""
    n, last = model.num_blocks, len(model.widths) - 1
    full_exit = np.full(num, n, dtype=np.int64)
    out = {"full": (np.full((num, n), last, dtype=np.int64), full_exit)}
    for j, w in enumerate(model.widths[:-1]):
        out[f"width {w:g}"] = (np.full((num, n), j, dtype=np.int64), full_exit)
    for p in model.exit_positions[:-1]:
        out[f"exit after block {p}"] = (np.full((num, n), last, dtype=np.int64), np.full(num, p, dtype=np.int64))
    skippable = np.array([block.skippable for block in model.blocks])
    rng = np.random.default_rng(seed)
    for rate in skip_rates:
        routes = np.full((num, n), last, dtype=np.int64)
        routes[(rng.random((num, n)) < rate) & skippable[None, :]] = SKIP_CHOICE
        out[f"random skip {rate:g}"] = (routes, full_exit)
    for k in np.flatnonzero(skippable) if single_skips else ():
        routes = np.full((num, n), last, dtype=np.int64)
        routes[:, k] = SKIP_CHOICE
        out[f"skip block {k}"] = (routes, full_exit)
    return out


def route_report(
    model: DynamicResNet, split: Split, input_shape: tuple[int, ...] = (3, 32, 32), single_skips: bool = False
) -> list[dict[str, float | str]]:
    """Accuracy and mean MACs (and fraction of the full network's) of each of :func:`static_routes` on
    ``split`` (with ``single_skips``, its one-block skips too)."""
    costs = dynamic_costs(model, input_shape)
    rows = []
    for name, (routes, exits) in static_routes(model, len(split), single_skips=single_skips).items():
        macs = route_macs(costs, routes, exits)
        rows.append(
            {
                "route": name,
                "accuracy": float(route_correct(model, split, routes, exits).mean()),
                "macs": float(macs.mean()),
                "macs_fraction": float(macs.mean() / costs.reference),
            }
        )
    return rows
