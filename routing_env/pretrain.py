"""Backbone pretraining on a data set's ``train`` split, with atomic checkpoints, resume and model cards.

SGD with Nesterov momentum, a cosine (with linear warm-up) or one-cycle schedule, weight decay, label
smoothing, channels_last, optional EMA of the weights. Dynamic ResNets (``resnet20-dynamic`` …) are
trained so that every route is safe (:func:`sandwich_loss`): deep supervision on all exits of the full
path, and per batch the narrowest route and ``sandwich`` random routes (random widths, random skips as
in stochastic depth) distilled in place from the full path's last exit. Every epoch writes ``checkpoint.pt`` atomically
(a plain dict of state_dicts and tensors, loadable with ``weights_only=True``); ``resume=True`` goes on
from it. At the end: ``weights.pt`` plus ``model_card.json`` and ``MODEL_CARD.md``.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import os
import platform
import shlex
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
from torch import nn
from torch.nn import functional as F
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm import tqdm

from .backbones.dynamic import route_report
from .backbones.resnet import (
    CLASSIFIERS,
    DYNAMIC,
    EXIT_PLACEMENTS,
    DynamicResNet,
    distillation_loss,
    dynamic_from_plain,
    order_channels,
    random_route,
    recalibrate_batchnorm,
    sandwich_loss,
)
from .checkpoints import (
    TimeLimit,
    atomic_write_text,
    file_sha256,
    last_logged,
    load_state_dict,
    refuse_orphan_curves,
    refuse_other_run,
    resumes,
    save_state_dict,
)
from .costs import module_macs
from .data import Split, augment, load_split
from .env import present_device
from .provenance import provenance
from .validation import check_field

SCHEDULES = ("cosine", "onecycle")
PRECISIONS = ("fp32", "bf16")


@dataclass(frozen=True)
class PretrainArgs:
    backbone: str
    """A classifier (``resnet8`` … ``resnet110``) or a dynamic ResNet (``resnet20-dynamic``, ``resnet56-dynamic``)."""
    dataset: str = "cifar10"
    epochs: int = 60
    batch_size: int = 128
    lr: float = 0.1
    """Peak learning rate."""
    momentum: float = 0.9
    weight_decay: float = 5e-4
    label_smoothing: float = 0.1
    schedule: str = "cosine"
    warmup_epochs: int = 1
    """Linear warm-up (cosine schedule only)."""
    ema: float | None = None
    """EMA decay of the weights (e.g. 0.999); the card reports the EMA model when set."""
    seed: int = 0
    precision: str = "fp32"
    """``bf16`` runs forward and backward under bfloat16 autocast (weights, optimizer and EMA stay fp32)."""
    subset: int | None = None
    """Use only the first ``subset`` images of each split (smoke tests); ``None`` for real training."""
    init: str | None = None
    """Start from these weights: a plain ResNet state_dict of the same depth for a dynamic backbone
    (converted by ``dynamic_from_plain``), else a state_dict of the model itself."""
    sandwich: int = 2
    """Dynamic backbones: random routes per batch besides the full and the narrowest one."""
    skip_rate: float = 0.5
    """Dynamic backbones: a random route skips each skippable block with a probability drawn from
    ``U(0, skip_rate)`` (stochastic depth)."""
    uniform_routes: float = 0.5
    """Dynamic backbones: the probability that a random route runs every kept block at one width (else
    each block draws its own), so the uniformly slimmed networks are trained as often as mixed routes.
    Such a route still skips blocks at ``skip_rate`` (:func:`~routing_env.backbones.resnet.random_route`),
    so with ResNet-20's 7 skippable blocks only about a quarter of them run the whole slimmed network,
    unless ``whole_uniform_routes``."""
    full_width_routes: float = 0.0
    """Dynamic backbones: the probability that a random route runs every kept block at full width, so
    skip patterns are trained at the width that skip-only and exit-only routes use (else a skipped
    block's neighbours mostly run narrowed). ``uniform_routes + full_width_routes`` is at most 1."""
    whole_uniform_routes: bool = False
    """Dynamic backbones: a uniform route skips nothing, so widths 0.5 and 0.75 are trained whole in
    ``uniform_routes / len(widths)`` of the random routes (about 4× as often as with skips drawn; v2's
    mix: ``benchmarks/route_mix.py``). Skip patterns are then trained by the mixed and full-width routes."""
    order_channels: bool = True
    """Dynamic backbones started from a plain ResNet: sort each block's inner channels by importance
    first (:func:`~routing_env.backbones.resnet.order_channels`), so narrow widths keep the strongest."""
    recalibrate: int = 100
    """Dynamic backbones: after training, re-estimate BatchNorm statistics over this many augmented
    ``train`` batches, each run at every uniform width and along ``sandwich`` random routes; the
    recalibrated weights are kept only if their mean route accuracy on ``val`` is higher. 0: never."""
    monitor: int = 1000
    """Dynamic backbones: every epoch, each static route's accuracy on the first ``monitor`` ``val``
    images goes to tensorboard (``val_routes/…``) and the log, so each route is measured as it trains."""
    rescale: bool = False
    """Dynamic backbones: LC-Net's learned rescaling of narrowed and skipped blocks' outputs
    (:class:`~routing_env.backbones.resnet.DynamicBasicBlock`); its scales start at 1 when ``init``
    has none."""
    exits: str = "stage"
    """Dynamic backbones: exit heads after each stage (``"stage"``) or after every block (``"block"``)."""
    heads_only: bool = False
    """Dynamic backbones: train only the exit heads that ``init`` lacks, with everything else frozen
    (BatchNorm in eval mode, no recalibration), so every route ``init`` offered keeps its accuracy
    bit for bit. With ``exits="block"`` and a stage-exit ``init`` this adds a head after every block:
    a per-block confidence for policies to read, for a few epochs of heads' training."""
    teacher: str | None = None
    """A plain CIFAR ResNet's state_dict (its depth is read from its keys, e.g. the shipped ResNet-56)
    whose logits the model distils from (Hinton et al. at temperature 1, half labels, half teacher).
    Dynamic backbones: every route distils from it instead of from the full path's own logits, so the
    full path, which shares its weights with every narrower route, gets a target stronger than itself
    (:func:`~routing_env.backbones.resnet.sandwich_loss`). Plain backbones: a small cascade member
    learns from a large one (:func:`~routing_env.backbones.resnet.distillation_loss`). Costs one
    teacher forward per batch."""

    def __post_init__(self) -> None:
        if self.backbone not in MODELS:
            raise ValueError(f"unknown backbone {self.backbone!r} for pretraining; expected one of {sorted(MODELS)}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r}; expected one of {SCHEDULES}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"unknown precision {self.precision!r}; expected one of {PRECISIONS}")
        for name, low in (("epochs", 1), ("batch_size", 1), ("warmup_epochs", 0), ("seed", 0), ("sandwich", 0),
                          ("recalibrate", 0), ("monitor", 0)):
            check_field(self, name, low=low, integer=True)
        check_field(self, "subset", low=1, integer=True, optional=True)
        finite = {"lr": self.lr, "weight_decay": self.weight_decay, "momentum": self.momentum, "label_smoothing": self.label_smoothing}
        if not all(isinstance(v, (int, float)) and v == v and abs(v) != float("inf") for v in finite.values()):
            raise ValueError(f"lr, weight_decay, momentum and label_smoothing must be finite numbers, got {finite}")
        if not self.lr > 0 or self.weight_decay < 0 or not 0 <= self.momentum < 1 or not 0 <= self.label_smoothing < 1:
            raise ValueError(f"pretrain needs lr > 0, weight_decay >= 0, momentum and label_smoothing in [0, 1), got {finite}")
        if self.ema is not None and not 0.0 < self.ema < 1.0:
            raise ValueError(f"ema must be a decay in (0, 1), got {self.ema}")
        if not 0.0 <= self.skip_rate <= 1.0:
            raise ValueError(f"skip_rate must be in [0, 1], got {self.skip_rate}")
        if self.exits not in EXIT_PLACEMENTS:
            raise ValueError(f"unknown exits {self.exits!r}; expected one of {EXIT_PLACEMENTS}")
        if self.heads_only and self.init is None:
            raise ValueError("heads_only trains the heads that init lacks: pass init (a dynamic ResNet's state_dict)")
        for option in ("rescale", "heads_only", "whole_uniform_routes", "full_width_routes"):
            if getattr(self, option) not in (None, False) and not self.dynamic:
                raise ValueError(f"{option} is for dynamic backbones, got it for {self.backbone!r}")
        if self.exits != "stage" and not self.dynamic:
            raise ValueError(f"exits is for dynamic backbones, got {self.exits!r} for {self.backbone!r}")
        if not 0.0 <= self.uniform_routes <= 1.0:
            raise ValueError(f"uniform_routes must be in [0, 1], got {self.uniform_routes}")
        if self.whole_uniform_routes and self.uniform_routes == 0.0:
            raise ValueError("whole_uniform_routes changes the uniform routes, and uniform_routes is 0: there are none")
        if not (0.0 <= self.full_width_routes and self.uniform_routes + self.full_width_routes <= 1.0):
            raise ValueError(
                "full_width_routes must be >= 0 and uniform_routes + full_width_routes must be at most 1, "
                f"got {self.uniform_routes} + {self.full_width_routes}"
            )

    @property
    def dynamic(self) -> bool:
        return self.backbone in DYNAMIC


MODELS = {**CLASSIFIERS, **DYNAMIC}


def build_model(args: PretrainArgs, num_classes: int) -> nn.Module:
    """The model ``args.backbone`` for ``num_classes``, started from ``args.init`` where given."""
    model = MODELS[args.backbone](num_classes, exits=args.exits, rescale=args.rescale) if args.dynamic else MODELS[args.backbone](num_classes)
    if args.init is not None:
        state = load_state_dict(args.init)
        try:
            if isinstance(model, DynamicResNet) and not any(key.startswith("blocks.") for key in state):
                if args.order_channels:
                    state = order_channels(state)
                result = model.load_state_dict(dynamic_from_plain(state, model.depth, model.widths), strict=False)
                if result.unexpected_keys or any(not key.startswith("heads.") and not is_scale(key) for key in result.missing_keys):
                    raise RuntimeError(str(result))
            elif isinstance(model, DynamicResNet):
                result = model.load_state_dict(state, strict=False)
                if result.unexpected_keys or not all(starts_fresh(key, model, state) for key in result.missing_keys):
                    raise RuntimeError(str(result))
            else:
                model.load_state_dict(state)
        except RuntimeError as e:
            raise ValueError(f"{args.init} does not fit {args.backbone}: {e}") from None
    return model



def starts_fresh(key: str, model: DynamicResNet, init: dict[str, torch.Tensor]) -> bool:
    """Whether a key of ``model`` that the dynamic ResNet state_dict ``init`` lacks may start from its
    initial value: a scale when ``init`` has none (they start at 1: ``rescale`` added), or a head inside
    a stage (``exits="block"`` from a stage-exit model). A stage exit or a block weight never may."""
    if is_scale(key):
        return not any(is_scale(k) for k in init)
    n = model.num_blocks // 3
    return key.startswith("heads.") and key.split(".")[1] not in {str(n), str(2 * n), str(3 * n)}


def freeze_all_but_new_heads(model: DynamicResNet, init: dict[str, torch.Tensor]) -> None:
    """Freeze every parameter of ``model`` but those of the exit heads the state_dict ``init`` lacks
    (``heads_only``). A head reads its block's map and changes nothing upstream, so every route
    ``init`` offered keeps its logits."""
    if not any(key.startswith("blocks.") for key in init):
        raise ValueError("heads_only: init is a plain network's state_dict (no blocks.* keys), so every exit head, the "
                         "full path's too, would be new; pass a dynamic ResNet's state_dict")
    new = [p for p in model.heads if f"heads.{p}.fc.weight" not in init]
    if not new:
        raise ValueError(f"heads_only: init already has every exit head of this model ({list(model.heads)}); nothing to train")
    model.requires_grad_(False)
    for p in new:
        model.heads[p].requires_grad_(True)


def is_scale(key: str) -> bool:
    """Whether a state_dict key is one of LC-Net's rescaling parameters (``blocks.K.scale_*``)."""
    return key.rsplit(".", 1)[-1] in ("scale_width", "scale_skip")


def build_teacher(path: str, num_classes: int) -> nn.Module:
    """The plain CIFAR ResNet stored at ``path``, frozen in eval mode; its depth is read from the
    state_dict (``layer1.{i}`` blocks per stage), so any shipped member can teach."""
    state = load_state_dict(path)
    per_stage = len({key.split(".")[1] for key in state if key.startswith("layer1.")})
    name = f"resnet{6 * per_stage + 2}"
    if name not in CLASSIFIERS:
        raise ValueError(f"teacher {path} is not a plain CIFAR ResNet state_dict (read depth {6 * per_stage + 2}); expected one of {sorted(CLASSIFIERS)}")
    teacher = CLASSIFIERS[name](num_classes)
    try:
        teacher.load_state_dict(state)
    except RuntimeError as e:
        raise ValueError(f"teacher {path} does not fit {name}: {e}") from None
    return teacher.eval().requires_grad_(False)


def make_scheduler(args: PretrainArgs, optimizer: torch.optim.Optimizer, steps_per_epoch: int) -> torch.optim.lr_scheduler.LRScheduler:
    total = args.epochs * steps_per_epoch
    if args.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=args.lr, total_steps=total)
    warmup = min(args.warmup_epochs * steps_per_epoch, total - 1)
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total - warmup)
    if warmup == 0:
        return cosine
    linear = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=0.01, total_iters=warmup)
    return torch.optim.lr_scheduler.SequentialLR(optimizer, [linear, cosine], milestones=[warmup])


def subset(split: Split, size: int | None) -> Split:
    """The first ``size`` instances of ``split`` (all when ``size`` is None)."""
    if size is None:
        return split
    return dataclasses.replace(split, inputs=split.inputs[:size], labels=split.labels[:size])


@torch.inference_mode()
def accuracy(model: nn.Module, split: Split, batch_size: int = 1000) -> float:
    """Top-1 accuracy of ``model`` (fp32, on its own device) on ``split``."""
    model.eval()
    device = next(model.parameters()).device
    right = 0
    for start in range(0, len(split), batch_size):
        x = split.inputs[start : start + batch_size].to(device).contiguous(memory_format=torch.channels_last)
        right += int((model(x).argmax(1).cpu().numpy() == split.labels[start : start + batch_size]).sum())
    return right / len(split)


TRAINING_CODE = ("pretrain.py", "data.py", "checkpoints.py", "backbones/resnet.py")
"""The modules whose code decides what an epoch of ``pretrain`` does (the loop, augmentation, the models)."""


def training_code_sha256() -> str:
    """One sha256 over :data:`TRAINING_CODE`'s sources: each segment of a resumed run records it, and a
    resume says when it changed since the last segment (the commit alone changes with every edit of
    the docs, and ``+dirty`` says nothing of which file)."""
    digest = hashlib.sha256()
    for name in TRAINING_CODE:
        digest.update((Path(__file__).parent / name).read_bytes())
    return digest.hexdigest()


def machine_description(device: torch.device) -> str:
    """CPU, thread count and accelerator, as written into model cards."""
    accelerator = torch.cuda.get_device_name(device) if device.type == "cuda" else "no GPU"
    return (
        f"{platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, {accelerator}"
    )


def pretrain(
    args: PretrainArgs,
    out: str | Path,
    *,
    resume: bool = False,
    data_root: str | None = None,
    download: bool = False,
    progress: bool = True,
    command: str | None = None,
    device: str = "cpu",
    time_limit: float | None = None,
) -> dict[str, Any]:
    """Train ``args.backbone`` on the ``train`` split; return the model card (also written to ``out``).

    ``device`` only says where the work runs: the images live there and are augmented there, while the
    random numbers come from one CPU generator, so a checkpoint resumes on either.

    ``time_limit`` (minutes) starts an epoch only if it is expected to end within that time of this
    call, the estimate being the last epoch this call trained (its evaluation and checkpoint
    included; the first epoch of a call always runs): a run that must be done by a deadline (a
    session that ends, a device lent for minutes) stops on a whole epoch instead of being killed in
    the middle of one. The final recalibration and card are not counted. Stopped before the last
    epoch, it writes no card and returns ``{"stopped": True, "epoch": E, "epochs": N, "checkpoint":
    path}``: go on with ``resume=True``. It is not one of the run's arguments (a resumed run may set
    another).
    """
    deadline = TimeLimit(time_limit, started=time.time())  # counted from here: loading the data is part of the call
    from torch.utils.tensorboard import SummaryWriter

    out = Path(out)
    checkpoint_path = out / "checkpoint.pt"
    resuming = resumes(checkpoint_path, resume, ("weights.pt", "model_card.json"))
    logged = None if resuming else last_logged(out / "tb", "val/accuracy")  # logged at the end of each epoch, at its number
    refuse_orphan_curves(checkpoint_path, logged and logged[0])
    where = present_device(device)  # a bad or absent device is refused before anything is written
    inputs_sha256 = input_files_sha256(args)
    state = None
    if resuming:  # checked before the inputs are read: a replaced init fails here, clearly
        state = load_state_dict(checkpoint_path)
        refuse_other_run(checkpoint_path, state["args"], args)
        check_same_inputs(checkpoint_path, state, inputs_sha256)
    code = provenance()  # the code that trains this segment, not whatever HEAD is when the card is written
    train = subset(load_split(args.dataset, "train", data_root, download), args.subset)
    val = subset(load_split(args.dataset, "val", data_root), args.subset)
    if len(train) < args.batch_size:  # an epoch would take no step
        raise ValueError(f"batch_size {args.batch_size} is larger than the train split ({len(train)} images)")
    out.mkdir(parents=True, exist_ok=True)
    torch.backends.cudnn.benchmark = where.type == "cuda"
    torch.manual_seed(args.seed)
    model = build_model(args, train.num_classes).to(where, memory_format=torch.channels_last)
    teacher = build_teacher(args.teacher, train.num_classes).to(where, memory_format=torch.channels_last) if args.teacher else None
    if args.heads_only:
        freeze_all_but_new_heads(model, load_state_dict(args.init))
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or is_scale(name) else decay).append(p)  # scales, like BatchNorm's, are not decayed
    optimizer = torch.optim.SGD(
        [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr,
        momentum=args.momentum,
        nesterov=True,
    )
    steps_per_epoch = len(train) // args.batch_size
    scheduler = make_scheduler(args, optimizer, steps_per_epoch)
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(args.ema), use_buffers=True) if args.ema else None
    generator = torch.Generator().manual_seed(args.seed)
    start_epoch, elapsed, history = 0, 0.0, []
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        generator.set_state(state["generator"])
        if ema is not None:
            ema.load_state_dict(state["ema"])
        start_epoch, elapsed = int(state["epoch"]), float(state["elapsed"])
        history = json.loads(state.get("history", "[]"))
    # this run's segment; it joins the history once it has trained an epoch
    segment = {"first_epoch": start_epoch + 1, "last_epoch": start_epoch, "hours": 0.0, "machine": machine_description(where),
               "git_commit": code["git_commit"], "code_sha256": training_code_sha256(), "command": command}
    if history and history[-1].get("code_sha256", segment["code_sha256"]) != segment["code_sha256"]:
        print(f"{args.backbone}: the training code ({', '.join(TRAINING_CODE)}) changed since epochs "
              f"{history[-1]['first_epoch']}–{history[-1]['last_epoch']} (commit {history[-1].get('git_commit')}); "
              "each segment's code_sha256 is in the card's history", file=sys.stderr, flush=True)
    # purge_step: a run killed after logging an epoch but before its checkpoint logs that epoch again on
    # resume; TensorBoard then drops the first copy instead of drawing both
    writer = SummaryWriter(str(out / "tb"), purge_step=start_epoch + 1)
    inputs = train.inputs.to(where)
    labels = torch.from_numpy(train.labels).to(where)
    autocast = torch.autocast(where.type, dtype=torch.bfloat16, enabled=args.precision == "bf16")
    criterion = nn.CrossEntropyLoss(label_smoothing=args.label_smoothing)
    for epoch in range(start_epoch, args.epochs):
        began = time.time()
        if not deadline.allows_epoch(began):
            writer.close()
            print(f"{args.backbone}: stopped after epoch {epoch} of {args.epochs} (--time-limit {time_limit:g} min); "
                  f"go on with --resume", file=sys.stderr, flush=True)
            return {"stopped": True, "epoch": epoch, "epochs": args.epochs, "checkpoint": str(checkpoint_path)}
        model.train(not args.heads_only)  # heads only: the trunk's BatchNorm statistics stay as they are
        order = torch.randperm(len(train), generator=generator)
        total_loss = torch.zeros((), device=where)
        right = torch.zeros((), dtype=torch.long, device=where)
        bar = tqdm(range(steps_per_epoch), desc=f"{args.backbone} epoch {epoch + 1}/{args.epochs}", disable=None if progress else True, leave=False)
        for step in bar:
            batch = order[step * args.batch_size : (step + 1) * args.batch_size].to(where)
            x = augment(inputs[batch], generator)
            y = labels[batch]
            with autocast:
                taught = None
                if teacher is not None:
                    with torch.no_grad():
                        taught = F.softmax(teacher(x).float(), dim=1)  # augment gives channels-last batches
                if args.dynamic:
                    loss, logits = sandwich_loss(
                        model, x, y, criterion, generator, args.sandwich, args.skip_rate, args.uniform_routes, taught,
                        args.full_width_routes, args.whole_uniform_routes,
                    )
                else:
                    logits = model(x)
                    loss = criterion(logits.float(), y) if taught is None else distillation_loss(logits, y, taught, criterion)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            if ema is not None:
                ema.update_parameters(model)
            total_loss += loss.detach()
            right += (logits.argmax(1) == y).sum()
        total_loss, right = float(total_loss), int(right)
        if not math.isfinite(total_loss):  # diverged: keep the last good checkpoint rather than write this one over it
            writer.close()
            raise FloatingPointError(f"{args.backbone} epoch {epoch + 1}: the training loss is {total_loss}; nothing of this "
                                     f"epoch is written, {checkpoint_path} still holds epoch {epoch}")
        seconds = time.time() - began
        elapsed += seconds
        segment["last_epoch"] = epoch + 1
        segment["hours"] = round(segment["hours"] + seconds / 3600, 4)
        evaluated = ema.module if ema is not None else model
        val_acc = accuracy(evaluated, val)
        seen = steps_per_epoch * args.batch_size
        writer.add_scalar("train/loss", total_loss / steps_per_epoch, epoch + 1)
        writer.add_scalar("train/accuracy", right / seen, epoch + 1)
        writer.add_scalar("train/lr", scheduler.get_last_lr()[0], epoch + 1)
        routes_line = ""
        if args.dynamic and args.monitor:
            monitored = route_report(evaluated, subset(val, args.monitor))
            for row in monitored:
                writer.add_scalar(f"val_routes/{row['route']}", row["accuracy"], epoch + 1)
            routes_line = "; val routes " + ", ".join(f"{row['route']} {row['accuracy']:.3f}" for row in monitored)
        state = {
            "args": json.dumps(asdict(args), sort_keys=True),
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "generator": generator.get_state(),
            "epoch": epoch + 1,
            "elapsed": elapsed,
            "history": json.dumps([*history, segment]),
            "inputs_sha256": json.dumps(inputs_sha256, sort_keys=True),
        }
        if ema is not None:
            state["ema"] = ema.state_dict()
        writer.add_scalar("val/accuracy", val_acc, epoch + 1)  # last: what a lost checkpoint's refusal reads
        writer.flush()  # the epoch's curves on disk before the checkpoint says it is done (purge_step drops later ones)
        save_state_dict(state, checkpoint_path)
        print(
            f"{args.backbone} epoch {epoch + 1}/{args.epochs}: loss {total_loss / steps_per_epoch:.4f}, "
            f"train acc {right / seen:.4f}, val acc {val_acc:.4f}, {elapsed / 60:.1f} min{routes_line}",
            file=sys.stderr,
            flush=True,
        )
        deadline.epoch_took(time.time() - began)  # evaluation and checkpoint included: what the next epoch will take
    writer.close()
    final = ema.module if ema is not None else model
    recalibration = None
    if args.dynamic and args.recalibrate and not args.heads_only:
        final, recalibration = recalibrated(final, args, inputs, val)
    if segment["last_epoch"] >= segment["first_epoch"]:
        history.append(segment)
    return write_model_card(args, final, out, elapsed, data_root, command, history, recalibration, code)


def input_files_sha256(args: PretrainArgs) -> dict[str, str]:
    """The sha256 of the files a run reads besides its data (``init``, ``teacher``), by argument name.
    The arguments hold their paths only: a file replaced under the same path would resume silently."""
    return {name: file_sha256(path) for name, path in (("init", args.init), ("teacher", args.teacher)) if path}


def check_same_inputs(checkpoint_path: Path, state: dict[str, Any], inputs_sha256: dict[str, str]) -> None:
    """Refuse to resume from ``checkpoint_path`` if an ``init`` or ``teacher`` file changed since it was
    written. Checkpoints from before the record (no ``inputs_sha256``) resume unchecked."""
    if "inputs_sha256" not in state:
        return
    saved = json.loads(state["inputs_sha256"])
    changed = [name for name in sorted(set(saved) | set(inputs_sha256)) if saved.get(name) != inputs_sha256.get(name)]
    if changed:
        raise ValueError(
            f"{checkpoint_path} was written with other {' and '.join(changed)} weights: sha256 "
            + ", ".join(f"{name} {saved.get(name)} then, {inputs_sha256.get(name)} now" for name in changed)
            + "; restore those files or start a new --out"
        )


def recalibrated(model: DynamicResNet, args: PretrainArgs, inputs: torch.Tensor, val: Split) -> tuple[DynamicResNet, dict[str, Any]]:
    """``model`` with its BatchNorm statistics re-estimated (:func:`recalibrate_batchnorm`) if that
    raises the mean accuracy of the static routes on ``val``, else ``model``; and both measurements."""
    generator = torch.Generator().manual_seed(args.seed + 1)
    candidate = copy.deepcopy(model)
    widths = [[j] * candidate.num_blocks for j in range(len(candidate.widths))]

    def batches_and_routes() -> Iterator[tuple[torch.Tensor, list[int]]]:
        for _ in range(args.recalibrate):
            batch = torch.randint(len(inputs), (args.batch_size,), generator=generator).to(inputs.device)
            x = augment(inputs[batch], generator).contiguous(memory_format=torch.channels_last)
            for route in widths + [
                random_route(candidate, args.skip_rate, generator, args.uniform_routes, args.full_width_routes, args.whole_uniform_routes)
                for _ in range(args.sandwich)
            ]:
                yield x, route

    recalibrate_batchnorm(candidate, batches_and_routes())
    before, after = route_report(model, val), route_report(candidate, val)
    mean_before = sum(r["accuracy"] for r in before) / len(before)
    mean_after = sum(r["accuracy"] for r in after) / len(after)
    report = {
        "batches": args.recalibrate,
        "val_mean_route_accuracy_before": round(mean_before, 4),
        "val_mean_route_accuracy_after": round(mean_after, 4),
        "kept": mean_after > mean_before,
        "val_routes_before": before,
        "val_routes_after": after,
    }
    return (candidate if report["kept"] else model), report


def write_model_card(
    args: PretrainArgs,
    model: nn.Module,
    out: Path,
    elapsed: float,
    data_root: str | None,
    command: str | None,
    history: list[dict[str, Any]] | None = None,
    recalibration: dict[str, Any] | None = None,
    code: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write the weights and the model card (JSON and Markdown); ``history`` lists the machines that
    trained which epochs where a run was resumed elsewhere (and, since 0.4.0, at which commit),
    ``recalibration`` what BatchNorm recalibration did on ``val``, ``code`` the provenance taken when
    this call started (by default, now)."""
    weights = out / "weights.pt"
    save_state_dict(model.state_dict(), weights)
    val = subset(load_split(args.dataset, "val", data_root), args.subset)
    test = subset(load_split(args.dataset, "test", data_root), args.subset)
    card = {
        "model": args.backbone,
        "dataset": args.dataset,
        "trained_on": (f"the first {args.subset} images of the train split (a smoke test)" if args.subset is not None
                       else "train split (45,000 images; val = 5,000 held out, docs/design.md §8)"),
        "test_accuracy": accuracy(model, test),
        "val_accuracy": accuracy(model, val),
        "macs": module_macs(model, (3, 32, 32)),
        "macs_unit": "multiply-accumulates per 32x32 image, FlopCounterMode FLOPs / 2",
        "parameters": sum(p.numel() for p in model.parameters()),
        "epochs": args.epochs,
        "arguments": asdict(args),
        "wall_time_hours": round(elapsed / 3600, 3),
        "machine": machine_description(next(model.parameters()).device),
        "history": history or [],
        "provenance": code or provenance(),
        "command": command or "",
        "weights": weights.name,
        "sha256": file_sha256(weights),
    }
    inputs_sha256 = input_files_sha256(args)
    if args.teacher:
        card["teacher_sha256"] = inputs_sha256["teacher"]
    if isinstance(model, DynamicResNet):
        card.update(
            exits=model.exits,
            rescale=model.rescale,
            num_blocks=model.num_blocks,
            widths=list(model.widths),
            init_sha256=inputs_sha256.get("init"),
            teacher_sha256=inputs_sha256.get("teacher"),
            routes_on_test=route_report(model, test),
            recalibration=recalibration,
        )
    atomic_write_text(out / "model_card.json", json.dumps(card, indent=2) + "\n")
    atomic_write_text(out / "MODEL_CARD.md", model_card_markdown(card))
    return card


def model_card_markdown(card: dict[str, Any]) -> str:
    return (
        f"# {card['model']} on {card['dataset']}\n\n"
        f"| | |\n|---|---|\n"
        f"| test accuracy | {card['test_accuracy']:.4f} |\n"
        f"| val accuracy | {card['val_accuracy']:.4f} |\n"
        f"| MACs | {card['macs']:,} ({card['macs_unit']}) |\n"
        f"| parameters | {card['parameters']:,} |\n"
        f"| epochs | {card['epochs']} |\n"
        f"| wall time | {card['wall_time_hours']} h (the epochs' training steps; per-epoch evaluation, checkpoints and the final card not counted) |\n"
        f"| machine | {card['machine']} |\n"
        f"| trained on | {card['trained_on']} |\n"
        f"| weights | `{card['weights']}`, sha256 `{card['sha256']}` |\n\n"
        + ("Trained in segments (resumed from the checkpoint):\n\n" if card.get("history") else "")
        + "".join(
            f"- epochs {h['first_epoch']}–{h['last_epoch']}: {h['hours']} h on {h['machine']}"
            + (f", commit {h['git_commit']}" if h.get("git_commit") else "")
            + (f": `{h['command']}`" if h.get("command") else "")
            + "\n"
            for h in card.get("history", [])
        )
        + ("\n" if card.get("history") else "")
        + routes_markdown(card)
        + recalibration_markdown(card)
        + f"Command:\n\n    {card['command']}\n\n"
        + f"Arguments: `{json.dumps(card['arguments'])}`\n"
    )


def routes_markdown(card: dict[str, Any]) -> str:
    """A dynamic backbone's static routes on ``test`` (accuracy, MACs), as a Markdown table."""
    if "routes_on_test" not in card:
        return ""
    rows = "".join(
        f"| {r['route']} | {r['accuracy']:.4f} | {r['macs'] / 1e6:.2f} M | {r['macs_fraction']:.3f} |\n" for r in card["routes_on_test"]
    )
    return (
        "Static routes on `test` (random skips: each skippable block skipped with that probability, per image, seed 0; "
        "MACs: FlopCounterMode, the head read at the exit included):\n\n"
        "| route | accuracy | MACs | fraction of full |\n|---|---|---|---|\n" + rows + "\n"
    )


def recalibration_markdown(card: dict[str, Any]) -> str:
    """What BatchNorm recalibration did to the static routes' mean accuracy on ``val``."""
    r = card.get("recalibration")
    if not r:
        return ""
    return (
        f"BatchNorm recalibration over {r['batches']} train batches: mean static-route accuracy on `val` "
        f"{r['val_mean_route_accuracy_before']:.4f} before, {r['val_mean_route_accuracy_after']:.4f} after; "
        f"{'kept' if r['kept'] else 'not kept'}.\n\n"
    )


def command_line(argv: Sequence[str]) -> str:
    """The ``routing-env`` command that ``argv`` (the arguments after the program name) spells, quoted
    for a shell: what a model card records."""
    return "routing-env " + " ".join(shlex.quote(a) for a in argv)
