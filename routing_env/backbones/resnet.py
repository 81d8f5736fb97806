"""CIFAR ResNets of He et al. 2016 (section 4.2): 3 stages of n basic blocks, 16/32/64 channels.

The downsampling shortcut is the parameter-free "option A": stride-2 subsampling and zero-padding of
the new channels. Factories ``resnet8`` … ``resnet110`` give depth ``6n + 2``.
"""

from __future__ import annotations

import contextlib
import copy
from typing import Iterable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..data import augment
from .base import SKIP_CHOICE


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    """3x3 convolution with padding, no bias (BatchNorm follows)."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


class PadShortcut(nn.Module):
    """Option-A shortcut: subsample by ``stride`` and zero-pad to ``out_planes`` channels."""

    def __init__(self, in_planes: int, out_planes: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.pad = out_planes - in_planes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.pad))


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = conv3x3(in_planes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = PadShortcut(in_planes, planes, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(x)
        out = self.bn1(out)
        out = F.relu(out)
        out = self.conv2(out)
        out = self.bn2(out)
        out = out + self.shortcut(x)
        return F.relu(out)


CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)


class Normalize(nn.Module):
    """uint8 images (or floats in [0, 1]) to per-channel standardised floats."""

    def __init__(self, mean: tuple[float, ...] = CIFAR_MEAN, std: tuple[float, ...] = CIFAR_STD) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.uint8:
            x = x.float().div_(255.0)
        return (x - self.mean) / self.std


def he_init(module: nn.Module) -> None:
    """He et al.'s initialisation of every convolution in ``module`` (normal, fan-out, for ReLU), in place:
    what a CIFAR ResNet starts from, and what a network re-initialised with ``reset_parameters`` (whose
    convolutions default to a uniform draw about 2.5× narrower) must get again to start as one."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for 32x32 inputs (uint8, or floats in [0, 1]; normalised inside).

    ``features(x)`` is the pooled 64-d vector, ``head(f)`` the logits.
    """

    def __init__(self, depth: int, num_classes: int = 10) -> None:
        super().__init__()
        self.normalize = Normalize()
        if depth < 8 or (depth - 2) % 6 != 0:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2 with n >= 1 (8, 14, 20, ...), got {depth}")
        n = (depth - 2) // 6
        self.depth = depth
        self.in_planes = 16
        self.conv1 = conv3x3(3, 16)
        self.bn1 = nn.BatchNorm2d(16)
        self.layer1 = self._make_layer(16, n, stride=1)
        self.layer2 = self._make_layer(32, n, stride=2)
        self.layer3 = self._make_layer(64, n, stride=2)
        self.fc = nn.Linear(64, num_classes)
        self.feature_dim = 64
        he_init(self)

    def _make_layer(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        layers = []
        for block_stride in [stride] + [1] * (blocks - 1):
            layers.append(BasicBlock(self.in_planes, planes, block_stride))
            self.in_planes = planes
        return nn.Sequential(*layers)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.normalize(x)
        x = self.conv1(x)
        x = self.bn1(x)
        x = F.relu(x)
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        x = F.adaptive_avg_pool2d(x, 1)
        return torch.flatten(x, 1)

    def head(self, f: torch.Tensor) -> torch.Tensor:
        return self.fc(f)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def resnet8(num_classes: int = 10) -> CifarResNet:
    return CifarResNet(8, num_classes)


def resnet14(num_classes: int = 10) -> CifarResNet:
    return CifarResNet(14, num_classes)


def resnet20(num_classes: int = 10) -> CifarResNet:
    return CifarResNet(20, num_classes)


def resnet32(num_classes: int = 10) -> CifarResNet:
    return CifarResNet(32, num_classes)


def resnet44(num_classes: int = 10) -> CifarResNet:
    return CifarResNet(44, num_classes)


def resnet56(num_classes: int = 10) -> CifarResNet:
    return CifarResNet(56, num_classes)


def resnet110(num_classes: int = 10) -> CifarResNet:
    return CifarResNet(110, num_classes)


CLASSIFIERS = {f.__name__: f for f in (resnet8, resnet14, resnet20, resnet32, resnet44, resnet56, resnet110)}


# --- the dynamic ResNet (LC-Net, BlockDrop, SkipNet) ------------------------------------------------
WIDTHS = (0.25, 0.5, 0.75, 1.0)
"""Channel-width fractions a dynamic block can run at."""



def inner_channels(width: float, planes: int) -> int:
    """``round(width · planes)``, at least one channel: how many inner channels ``RUN(width)`` computes."""
    return max(1, round(width * planes))


class SwitchableBatchNorm2d(nn.Module):
    """One BatchNorm per width (Slimmable Networks, Yu et al. 2019).

    A block run at width ``w`` sees activations with other statistics than at full width (fewer summed
    channels), so each width keeps its own running mean/variance and affine parameters; a shared
    BatchNorm would be wrong at every width but the one it was last calibrated on.
    """

    def __init__(self, channels: Sequence[int]) -> None:
        super().__init__()
        self.bn = nn.ModuleList(nn.BatchNorm2d(c) for c in channels)

    def forward(self, x: torch.Tensor, width: int) -> torch.Tensor:
        return self.bn[width](x)


class DynamicBasicBlock(nn.Module):
    """A basic block that runs at a channel width: the first convolution computes only the first
    ``round(w·C)`` channels and the second reads only those (contiguous weight slices, so the work
    really shrinks); the output keeps the full width for the residual sum.

    ``skippable`` blocks (same input and output shape) can be replaced by their shortcut (identity).

    With ``rescale``, LC-Net's rescaling of what is kept (Xia et al.): a learned per-channel scale on
    the block's output at each narrower width (``scale_width``, one row per width but the full one)
    and, for a skippable block, on its skip (``scale_skip``), all starting at 1, so that a narrowed or
    skipped block's output can match the full block's in magnitude. The full width is never scaled:
    the full path stays the plain ResNet. (A scale *inside* the residual branch would add nothing:
    each width's own ``bn2`` already has per-channel affine parameters. This one acts after the
    residual sum and the ReLU, where switchable BatchNorm cannot.)
    """

    def __init__(self, in_planes: int, planes: int, stride: int, widths: Sequence[float], rescale: bool = False) -> None:
        super().__init__()
        self.stride = stride
        self.inner = [inner_channels(w, planes) for w in widths]
        self.conv1 = conv3x3(in_planes, planes, stride)
        self.bn1 = SwitchableBatchNorm2d(self.inner)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = SwitchableBatchNorm2d([planes] * len(widths))
        self.skippable = stride == 1 and in_planes == planes
        self.shortcut: nn.Module = nn.Identity() if self.skippable else PadShortcut(in_planes, planes, stride)
        self.rescale = rescale
        if rescale:
            self.scale_width = nn.Parameter(torch.ones(len(widths) - 1, planes))
            if self.skippable:
                self.scale_skip = nn.Parameter(torch.ones(planes))

    def forward(self, x: torch.Tensor, width: int = -1) -> torch.Tensor:
        c = self.inner[width]
        out = F.conv2d(x, self.conv1.weight[:c], stride=self.stride, padding=1)
        out = self.bn1(out, width)
        out = F.relu(out)
        out = F.conv2d(out, self.conv2.weight[:, :c], padding=1)
        out = self.bn2(out, width)
        out = F.relu(out + self.shortcut(x))
        j = width % len(self.inner)
        if self.rescale and j < len(self.inner) - 1:
            out = out * self.scale_width[j].view(1, -1, 1, 1)
        return out

    def skip(self, x: torch.Tensor) -> torch.Tensor:
        """The block skipped: its input (identity shortcut), rescaled where ``rescale`` is on."""
        if not self.skippable:
            raise ValueError("this block changes the feature map's shape and cannot be skipped")
        return x * self.scale_skip.view(1, -1, 1, 1) if self.rescale else x


class FoldedBlock(nn.Module):
    """A :class:`DynamicBasicBlock` for inference: per width, each convolution with its BatchNorm
    folded in (``torch.nn.utils.fuse_conv_bn_weights``), so a width has its own contiguous weights and
    a bias and runs two ops fewer. Same call, ``forward(x, width)``; frozen (eval statistics)."""

    def __init__(self, block: DynamicBasicBlock, memory_format: torch.memory_format = torch.contiguous_format) -> None:
        super().__init__()
        self.stride, self.inner, self.skippable, self.shortcut = block.stride, block.inner, block.skippable, block.shortcut
        self.rescale = block.rescale
        if block.rescale:
            self.register_buffer("scale_width", block.scale_width.detach().clone())
            if block.skippable:
                self.register_buffer("scale_skip", block.scale_skip.detach().clone())
        for j, c in enumerate(block.inner):
            w1, b1 = fold(block.conv1.weight[:c], block.bn1.bn[j])
            w2, b2 = fold(block.conv2.weight[:, :c], block.bn2.bn[j])
            for name, t in (("w1", w1.contiguous(memory_format=memory_format)), ("b1", b1), ("w2", w2.contiguous(memory_format=memory_format)), ("b2", b2)):
                self.register_buffer(f"{name}_{j}", t)
        self.names = [tuple(f"{name}_{j}" for name in ("w1", "b1", "w2", "b2")) for j in range(len(block.inner))]
        """Per width, its buffers' names, read from ``_buffers`` directly: at batch 1 every µs of a block's
        Python shows in the latency, and ``getattr`` on a module costs ~1 µs (issue 20)."""
        self.identity = isinstance(block.shortcut, nn.Identity)

    def forward(self, x: torch.Tensor, width: int = -1) -> torch.Tensor:
        # In place on the convolutions' fresh outputs: no new feature map per activation, sum or
        # scale (batch 64 on the CPU: about a tenth faster, benchmarks/inplace_blocks.py; issue 20). Each
        # is autograd-safe (a convolution's backward does not read its output) except the scale
        # after the ReLU, whose output the ReLU saves: under autograd (the attack) it allocates.
        j = width % len(self.inner)
        buffers, (w1, b1, w2, b2) = self._buffers, self.names[j]
        out = F.conv2d(x, buffers[w1], buffers[b1], stride=self.stride, padding=1).relu_()
        out = F.conv2d(out, buffers[w2], buffers[b2], padding=1)
        out += x if self.identity else self.shortcut(x)
        out.relu_()
        if self.rescale and j < len(self.inner) - 1:
            scale = self.scale_width[j].view(1, -1, 1, 1)
            out = out * scale if torch.is_grad_enabled() else out.mul_(scale)
        return out

    skip = DynamicBasicBlock.skip


def fold(weight: torch.Tensor, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """A bias-free convolution's weight followed by ``bn`` (eval statistics) as one weight and bias."""
    w, b = nn.utils.fuse_conv_bn_weights(weight, None, bn.running_mean, bn.running_var, bn.eps, bn.weight, bn.bias)
    return w.detach(), b.detach()


def inference_copy(model: DynamicResNet, channels_last: bool = True) -> DynamicResNet:
    """A frozen copy of ``model`` for routed inference: BatchNorm folded into every convolution
    (:class:`FoldedBlock`; the stem's too) and, by default, the channels-last memory format. Outputs
    equal ``model``'s in eval mode up to float rounding."""
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    copy_ = copy.deepcopy(model).eval().requires_grad_(False)
    stem = copy_.conv1
    w, b = fold(stem.weight, copy_.bn1)
    copy_.conv1 = nn.Conv2d(stem.in_channels, stem.out_channels, stem.kernel_size, stem.stride, stem.padding,
                            device=stem.weight.device, dtype=stem.weight.dtype).requires_grad_(False)  # where the model is
    copy_.conv1.weight.copy_(w)
    copy_.conv1.bias.copy_(b)
    copy_.bn1 = nn.Identity()
    copy_.blocks = nn.ModuleList(FoldedBlock(block, memory_format) for block in copy_.blocks)
    return copy_.to(memory_format=memory_format)


def global_pool(x: torch.Tensor) -> torch.Tensor:
    """Global average pooling ``(B, C, H, W) -> (B, C)`` (the same values as ``adaptive_avg_pool2d(x, 1)``)."""
    return x.mean(dim=(2, 3))


class ExitHead(nn.Module):
    """Global average pooling and a linear classifier on a feature map."""

    def __init__(self, channels: int, num_classes: int) -> None:
        super().__init__()
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(global_pool(x))


EXIT_PLACEMENTS = ("stage", "block")


class DynamicResNet(nn.Module):
    """CIFAR ResNet-(6n+2) whose blocks run at a width, are skipped, and which can exit after a stage.

    A route is one choice per block (a width index, or ``SKIP_CHOICE``) and an exit position (the
    number of blocks passed, one of ``exit_positions``). The full path (every block at width 1.0, exit
    after the last block) computes exactly :class:`CifarResNet` with the same weights
    (:func:`dynamic_from_plain` converts a plain state_dict).

    Args:
        depth: 6n+2.
        num_classes: classes of every exit head.
        widths: increasing width fractions ending at 1.0.
        exits: ``"stage"`` (a head after each of the three stages) or ``"block"`` (after every block).
        base_width: channels of the first stage (16 in He et al.; the later stages double it).
        rescale: LC-Net's learned rescaling of narrowed and skipped blocks (:class:`DynamicBasicBlock`).
    """

    def __init__(
        self,
        depth: int,
        num_classes: int = 10,
        widths: Sequence[float] = WIDTHS,
        exits: str = "stage",
        base_width: int = 16,
        rescale: bool = False,
    ) -> None:
        super().__init__()
        if depth < 8 or (depth - 2) % 6 != 0:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2 with n >= 1 (8, 14, 20, ...), got {depth}")
        widths = tuple(float(w) for w in widths)
        if not widths or widths[-1] != 1.0 or list(widths) != sorted(set(widths)) or widths[0] <= 0:
            raise ValueError(f"widths must be increasing fractions in (0, 1] ending at 1.0, got {widths}")
        if exits not in EXIT_PLACEMENTS:
            raise ValueError(f"unknown exits {exits!r}; expected one of {EXIT_PLACEMENTS}")
        n = (depth - 2) // 6
        self.depth, self.widths, self.exits, self.rescale = depth, widths, exits, rescale
        self.normalize = Normalize()
        self.conv1 = conv3x3(3, base_width)
        self.bn1 = nn.BatchNorm2d(base_width)
        blocks, channels, in_planes = [], [], base_width
        for stage in range(3):
            planes = base_width * 2**stage
            for i in range(n):
                blocks.append(DynamicBasicBlock(in_planes, planes, 2 if stage > 0 and i == 0 else 1, widths, rescale))
                channels.append(planes)
                in_planes = planes
        self.blocks = nn.ModuleList(blocks)
        self.num_blocks = len(blocks)
        self.feature_dim = in_planes
        self.channels = [base_width] + channels
        """Channels of the feature map at each position 0..N."""
        self.exit_positions = tuple(range(1, self.num_blocks + 1)) if exits == "block" else (n, 2 * n, 3 * n)
        self.heads = nn.ModuleDict({str(p): ExitHead(self.channels[p], num_classes) for p in self.exit_positions})
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        x = self.normalize(x)
        x = self.conv1(x)
        x = self.bn1(x)
        return F.relu(x, inplace=True)  # on a fresh map (BatchNorm's backward does not read its output): batch 64, 4 MB not allocated

    def head(self, position: int, x: torch.Tensor) -> torch.Tensor:
        """Logits of the exit head at ``position`` on the feature map ``x``."""
        return self.heads[str(position)](x)

    def head_pooled(self, position: int, pooled: torch.Tensor) -> torch.Tensor:
        """The same logits from the map's pooled features (:func:`global_pool`, at least as wide as the
        map; zero padding is ignored): an environment that pools for its observation pools once."""
        fc = self.heads[str(position)].fc
        return fc(pooled[:, : fc.in_features])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The full path: every block at full width, the last exit."""
        x = self.stem(x)
        for block in self.blocks:
            x = block(x)
        return self.head(self.num_blocks, x)

    def forward_exits(self, x: torch.Tensor, choices: Sequence[int]) -> list[torch.Tensor]:
        """Logits of every exit head along one route (``choices``: per block a width index or
        ``SKIP_CHOICE``) taken by the whole batch, in order of ``exit_positions``."""
        x = self.stem(x)
        logits = []
        for k, block in enumerate(self.blocks):
            x = block.skip(x) if choices[k] == SKIP_CHOICE else block(x, choices[k])
            if k + 1 in self.exit_positions:
                logits.append(self.head(k + 1, x))
        return logits

    def block_routes(self, k: int, h: torch.Tensor, choice: torch.Tensor | int) -> torch.Tensor:
        """Block ``k`` on each row of ``h`` at that row's ``choice`` (width index or ``SKIP_CHOICE``; an
        ``int`` is every row's, as the environment's executor and :class:`~routing_env.routed.RoutedModel`
        at batch 1 pass it);
        the rows with the same choice run as one call, and the result keeps the rows' order.

        The one place a batch walks a block along its choices: the environment's executor, the
        co-training replay (:meth:`forward_routes`) and :class:`~routing_env.routed.RoutedModel` all run
        blocks through it (the rules of the walk — masks, budget, fallback, costs — are
        :class:`~routing_env.core.ActionTables`')."""
        block = self.blocks[k]
        if isinstance(choice, int):
            return block.skip(h) if choice == SKIP_CHOICE else block(h, choice)
        first = int(choice[0])
        if bool((choice == first).all()):  # one group (always at batch 1): no gather, no reorder
            return block.skip(h) if first == SKIP_CHOICE else block(h, first)
        pieces, where = [], []
        for c in torch.unique(choice).tolist():
            group = (choice == c).nonzero().squeeze(1)
            pieces.append(block.skip(h[group]) if c == SKIP_CHOICE else block(h[group], c))
            where.append(group)
        return torch.cat(pieces)[torch.argsort(torch.cat(where))]

    def forward_routes(self, x: torch.Tensor, choices: torch.Tensor, exit_at: torch.Tensor) -> torch.Tensor:
        """Logits of each input's own route: ``choices`` ``(B, N)`` (width index or ``SKIP_CHOICE``),
        ``exit_at`` ``(B,)`` exit positions. Inputs taking the same (block, choice) run as one call;
        differentiable, so co-training replays executed routes through it."""
        batch = len(x)
        rows = torch.arange(batch, device=x.device)
        out: list[torch.Tensor] = []
        order: list[torch.Tensor] = []
        h = self.stem(x)
        for k in range(self.num_blocks + 1):
            if k in self.exit_positions:
                ending = exit_at[rows] == k
                if bool(ending.any()):
                    out.append(self.head(k, h[ending]))
                    order.append(rows[ending])
                    h, rows = h[~ending], rows[~ending]
            if k == self.num_blocks or len(rows) == 0:
                break
            h = self.block_routes(k, h, choices[rows, k])
        if len(rows):
            raise ValueError(f"exit positions {sorted(set(exit_at[rows].tolist()))} are not among {self.exit_positions}")
        logits = torch.cat(out)
        return logits[torch.argsort(torch.cat(order))]


def dynamic_from_plain(state: dict[str, torch.Tensor], depth: int, widths: Sequence[float] = WIDTHS) -> dict[str, torch.Tensor]:
    """A :class:`CifarResNet` state_dict as a :class:`DynamicResNet` one: every width's BatchNorm
    starts from the plain one (a narrower width's inner BatchNorm from its first channels), the plain
    ``fc`` becomes the last exit head; the other exit heads are left out (load with ``strict=False``)."""
    n = (depth - 2) // 6
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[0].startswith("layer"):
            stage, i, rest = int(parts[0][5:]) - 1, int(parts[1]), parts[2:]
            prefix = f"blocks.{stage * n + i}"
            if rest[0] in ("bn1", "bn2"):
                for j, w in enumerate(widths):
                    keep = inner_channels(w, len(value)) if rest[0] == "bn1" and value.ndim == 1 else None
                    out[".".join([prefix, rest[0], "bn", str(j), *rest[1:]])] = value[:keep] if keep else value
            else:
                out[".".join([prefix, *rest])] = value
        elif parts[0] == "fc":
            out[f"heads.{3 * n}.fc.{parts[1]}"] = value
        else:
            out[key] = value
    return out


def order_channels(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A plain :class:`CifarResNet` state_dict with each block's inner channels sorted by importance,
    most important first, so that ``RUN(w)``'s slice of the first ``round(w·C)`` channels keeps the
    ones that matter (the channel ordering of network slimming and LC-Net before slicing).

    A channel's importance is ``|γ|`` of its first BatchNorm times the L1 norm of the second
    convolution's weights that read it: how much of the block's output flows through it. The network
    computes the same function (a permutation of the inner channels), so this is safe on any weights.
    """
    out = dict(state)
    blocks = sorted({key.rsplit(".", 2)[0] for key in state if key.startswith("layer") and key.endswith("conv1.weight")})
    for block in blocks:
        gamma = state[f"{block}.bn1.weight"].abs()
        reads = state[f"{block}.conv2.weight"].abs().sum(dim=(0, 2, 3))
        order = torch.argsort(gamma * reads, descending=True, stable=True)
        out[f"{block}.conv1.weight"] = state[f"{block}.conv1.weight"][order]
        for name in ("weight", "bias", "running_mean", "running_var"):
            out[f"{block}.bn1.{name}"] = state[f"{block}.bn1.{name}"][order]
        out[f"{block}.conv2.weight"] = state[f"{block}.conv2.weight"][:, order]
    return out


def random_route(
    model: DynamicResNet,
    skip_rate: float,
    generator: torch.Generator,
    uniform: float = 0.0,
    full_width: float = 0.0,
    whole_uniform: bool = False,
) -> list[int]:
    """Per block a uniformly drawn width index, or ``SKIP_CHOICE`` (skippable blocks, with a probability
    drawn from ``U(0, skip_rate)``, whatever the route's kind below: a uniform or full-width route skips
    nothing only with probability ``E[(1 - r)^k]`` for ``k`` skippable blocks, about 0.25 for
    ResNet-20's 7 at ``skip_rate=0.5``). With probability ``uniform`` every kept block takes one width drawn
    uniformly: mixed widths alone train the uniformly slimmed networks (a route the card and the
    baselines read) with BatchNorm inputs they never see, so the middle widths fall behind. With
    probability ``full_width`` every kept block runs at full width: the skip patterns that exit-only
    and skip-only policies (and the card's random-skip routes) take, which mixed widths reach with
    probability ``(1/len(widths))`` per block only. ``uniform + full_width`` must be at most 1.
    ``whole_uniform``: a uniform route skips nothing, so each slimmed network is trained whole in
    ``uniform / len(widths)`` of the routes instead of about a quarter of that (the skips are still drawn,
    so the random stream is the same either way)."""
    if not (0.0 <= uniform and 0.0 <= full_width and uniform + full_width <= 1.0):
        raise ValueError(f"uniform and full_width must be probabilities summing to at most 1, got {uniform} and {full_width}")
    rate = float(torch.rand((), generator=generator)) * skip_rate
    widths = torch.randint(len(model.widths), (model.num_blocks,), generator=generator).tolist()
    kind = float(torch.rand((), generator=generator))  # one draw, so full_width=0 keeps the old stream
    if kind < uniform:
        widths = [widths[0]] * model.num_blocks
    elif kind < uniform + full_width:
        widths = [len(model.widths) - 1] * model.num_blocks
    skips = (torch.rand(model.num_blocks, generator=generator) < rate).tolist()
    if whole_uniform and kind < uniform:
        skips = [False] * model.num_blocks
    return [SKIP_CHOICE if skip and block.skippable else w for w, skip, block in zip(widths, skips, model.blocks)]


def sandwich_loss(
    model: DynamicResNet,
    x: torch.Tensor,
    y: torch.Tensor,
    criterion: nn.Module,
    generator: torch.Generator,
    sandwich: int = 2,
    skip_rate: float = 0.5,
    uniform: float = 0.0,
    teacher: torch.Tensor | None = None,
    full_width: float = 0.0,
    whole_uniform: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Deep supervision on the full path's exits, plus the narrowest and ``sandwich`` random routes
    (:func:`random_route` with ``uniform``, ``full_width`` and ``whole_uniform``) distilled from the full path's last exit (the sandwich rule
    with in-place distillation, Yu & Huang 2019). Returns the loss and the full path's last logits.

    With ``teacher`` (a stronger network's softmax, e.g. ResNet-56's, on the same batch) every route
    distils from the teacher instead, and the full path's exits learn half from the labels and half
    from the teacher (Hinton et al.'s knowledge distillation at temperature 1): the full path shares
    its weights with every narrower route, and a target stronger than itself is what it lacks."""
    full = model.forward_exits(x, [len(model.widths) - 1] * model.num_blocks)
    if teacher is None:
        loss = sum(criterion(logits.float(), y) for logits in full) / len(full)
        teacher = F.softmax(full[-1].detach().float(), dim=1)
    else:
        loss = sum(distillation_loss(logits, y, teacher, criterion) for logits in full) / len(full)
    routes = [[0] * model.num_blocks] + [random_route(model, skip_rate, generator, uniform, full_width, whole_uniform) for _ in range(sandwich)]
    for route in routes:
        exits = model.forward_exits(x, route)
        loss = loss + sum(soft_cross_entropy(logits, teacher) for logits in exits) / len(exits)
    return loss, full[-1]


def distillation_loss(logits: torch.Tensor, y: torch.Tensor, teacher: torch.Tensor, criterion: nn.Module) -> torch.Tensor:
    """Hinton et al.'s knowledge distillation at temperature 1: half ``criterion`` on the labels, half
    the cross-entropy against the teacher's softmax ``teacher`` (computed once per batch by the caller,
    since the sandwich rule distils every route from it). The labels keep the student from copying the
    teacher's mistakes; the teacher's soft targets carry how alike the classes look to it."""
    return 0.5 * criterion(logits.float(), y) + 0.5 * soft_cross_entropy(logits, teacher)


def soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of ``logits`` against the probability rows ``target`` (distillation's loss;
    it differs from the KL divergence by the target's entropy, a constant)."""
    return -(target * F.log_softmax(logits.float(), dim=1)).sum(1).mean()


@contextlib.contextmanager
def exact_batchnorm_statistics(model: nn.Module) -> Iterator[None]:
    """Within the block, forward passes (in train mode, without gradients) set every BatchNorm's
    statistics to the exact mean over them: the statistics are reset and averaged cumulatively. Mode
    and momenta are restored after."""
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    momenta = [bn.momentum for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average
    was_training = model.training
    model.train()
    try:
        with torch.no_grad():
            yield
    finally:
        for bn, momentum in zip(bns, momenta):
            bn.momentum = momentum
        model.train(was_training)


def recalibrate_on_images(model: nn.Module, images: torch.Tensor, batches: int, generator: torch.Generator, batch_size: int = 256) -> None:
    """Re-estimate a plain classifier's BatchNorm statistics as the exact mean over ``batches``
    augmented batches of ``batch_size`` images drawn from ``images`` with ``generator`` (a co-trained
    member's statistics go stale: co-training updates it in eval mode)."""
    with exact_batchnorm_statistics(model):
        for _ in range(batches):
            model(augment(images[torch.randint(len(images), (batch_size,), generator=generator)], generator))


def recalibrate_batchnorm(model: DynamicResNet, runs: Iterable[tuple[torch.Tensor, Sequence[int]]]) -> None:
    """Re-estimate every BatchNorm's statistics as the exact mean over ``runs``, each a batch and the
    route it is run along (Slimmable Networks' post-training recalibration). During training a width's statistics
    are a running average of routes whose upstream blocks kept changing; after it, one pass with the
    final weights gives each (block, width) the statistics of the inputs it now sees."""
    with exact_batchnorm_statistics(model):
        for x, route in runs:
            model.forward_exits(x, route)


def resnet20_dynamic(num_classes: int = 10, exits: str = "stage", rescale: bool = False) -> DynamicResNet:
    return DynamicResNet(20, num_classes, exits=exits, rescale=rescale)


def resnet56_dynamic(num_classes: int = 10, exits: str = "stage", rescale: bool = False) -> DynamicResNet:
    return DynamicResNet(56, num_classes, exits=exits, rescale=rescale)


DYNAMIC = {"resnet20-dynamic": resnet20_dynamic, "resnet56-dynamic": resnet56_dynamic}
