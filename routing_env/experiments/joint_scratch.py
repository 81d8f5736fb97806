"""Joint training from random weights (Guan et al., IJCAI 2018's own setting), batched for a GPU.

:func:`routing_env.experiments.joint.joint_train` co-trains *pretrained* members through the
environment, a few episodes per update with BatchNorm frozen; `docs/results.md` measures why that cannot
specialise them: a rate that moves the members out of their pretrained minimum costs their accuracy,
and one that keeps it moves nothing. Here the members start from random weights, as in the paper,
so there is no minimum to leave, and the loop is batched so that a GPU trains all of them at once.

Per batch of ``batch_size`` augmented ``train`` images every member runs (train-mode BatchNorm, bf16
autocast, channels_last). The selection module (:class:`SelectionModule`) decides after each member,
per instance, whether to stop there, by sampling; the last member always stops. Then:

- each member descends the cross-entropy of the instances the sampled routes brought to it
  (``targets="heads"``: every member on the route learns, the variant the fine-tuning runs found
  best) or exited at it (``targets="exit"``: Guan et al.'s), summed over them and divided by the
  batch size (``member_loss``: the expected routed cross-entropy);
- the selection module ascends accuracy − λ·compute (compute: the MACs of the members run, over the
  largest member's, the cascade environment's ``macs_fraction``) by REINFORCE, the batch's mean
  reward as baseline, with an entropy bonus.

During the first ``dense_epochs`` every member learns from every instance, whatever the routes: from
random weights a member's confidence means nothing yet, so routes sampled on it would starve the deep
members of data they need to become worth routing to. After them, ``member_floor`` keeps every member
learning from the instances its routes did not bring it, at that weight (1 on those they did): routes
that stop early starve the deep members, which then never become worth routing to (`docs/results.md`, "From
scratch on a GPU": ResNet-56 got 0.0–0.3% of ``train`` from epoch 30 on). ``member_floor=1`` is
``dense_epochs=epochs``; 0, the paper's routed loss. The selection module learns throughout.

Runs that differ only in ``member_floor`` or ``dense_epochs`` compute the same dense epochs, draw for
draw, so ``branch_from`` starts a run from another run's checkpoint taken inside both runs' dense
epochs instead of repeating them (:func:`branch_state`): on CIFAR-10 that saves the hour of the first
20 epochs per variant, and the branched run is the run from scratch, bit for bit on the CPU.

Every epoch writes ``checkpoint.pt`` atomically (a plain dict of state_dicts and tensors, loadable with
``weights_only=True``), ``backbone.pt`` (the members as one ``ModuleList`` state_dict, what
:func:`routing_env.pretrained.package_cotrained` reads), ``policy.pt`` and ``joint.json``; ``resume=True``
goes on from the last whole epoch, on CPU or GPU (every random number comes from one CPU generator,
so the draws are the same; a GPU's kernels, cuDNN's autotuning and bf16 are not bitwise reproducible).
TensorBoard (``tb/``) has ``charts/accuracy_at_exit_<k>`` (each member's accuracy on the instances that
exited at it), ``charts/exit_fraction_<k>``, and on ``val`` each member's accuracy and the greedy
policy's accuracy and cost. Freeze the result with ``package_cotrained(..., recalibrate=0)``: its
BatchNorm statistics are already those of the batches it trained on.
"""

from __future__ import annotations

import copy
import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from .. import __version__
from ..checkpoints import TimeLimit, file_sha256, load_state_dict, refuse_other_run, resumes, save_state_dict, stored_arguments, write_json
from ..data import Split, augment, load_split
from ..env import present_device
from ..pretrain import PRECISIONS, machine_description
from ..provenance import provenance
from ..validation import check_field

TARGETS = ("heads", "exit")
MEMBER_LOSSES = ("expected", "routed-mean")
WRITTEN_BEFORE_MEMBER_LOSS = {"member_loss": "routed-mean"}
"""A checkpoint with no ``member_loss`` was written when ``routed-mean`` was the only loss (``expected``,
the default since, would change its run on ``--resume``)."""
BRANCHABLE = ("dense_epochs", "member_floor")
"""The fields a branched run may change: neither acts before the end of the dense epochs."""
CHECKPOINT_KEYS = ("spec", "members", "policy", "optimizer", "policy_optimizer", "scheduler", "generator", "epoch", "elapsed", "history")


@dataclass(frozen=True)
class ScratchJointSpec:
    """A from-scratch joint run: the members' architectures, λ, the members' SGD and the selection
    module's REINFORCE. Where a run executes (``device``) and when it stops (``time_limit``) are not
    part of it: a run resumes on another machine."""

    backbone: str = "cifar10-resnet-cascade"
    """A cascade backbone (``cifar10-resnet-cascade``, ``tiny-cascade`` …) whose members' architectures,
    not weights, are trained."""
    lam: float = 0.03
    epochs: int = 60
    batch_size: int = 512
    lr: float = 0.2
    """Peak learning rate of the members' SGD (Nesterov momentum 0.9), reached after ``warmup_epochs``
    of linear warm-up, then a cosine to 0 at the last step."""
    warmup_epochs: int = 2
    weight_decay: float = 5e-4
    label_smoothing: float = 0.1
    dense_epochs: int = 0
    """Epochs at the start in which every member learns from every instance (see the module docstring)."""
    member_floor: float = 0.0
    """After the dense epochs, the weight in a member's cross-entropy of the instances its routes did not
    bring it (those they did weigh 1): a floor under every member's share of ``train``, so that routes
    that stop early cannot starve the deep members. In [0, 1]; 0 is Guan et al.'s routed loss."""
    targets: str = "heads"
    member_loss: str = "expected"
    """How a member's cross-entropy is averaged. ``expected``: summed over the instances routed to it
    and divided by the batch size, the gradient, with the routes held fixed, of the expected
    cross-entropy of the sampled routes (Guan et al.'s objective under ``targets="exit"``), so a member
    that a fraction f of the instances reach learns at f times the rate (its weight decay does not
    shrink with f). ``routed-mean``: the mean over those instances, every member at the full rate on its
    share; that multiplies the rare members' rate by 1/f, and on CIFAR-10 it made ResNet-56 diverge in
    the first routed epoch, when 9% of the instances reached it (`docs/results.md`, "From scratch
    on a GPU")."""
    policy_lr: float = 1e-3
    policy_hidden: int = 64
    entropy_coef: float = 0.01
    precision: str = "bf16"
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "policy_hidden"):
            check_field(self, name, low=1, integer=True)
        for name in ("warmup_epochs", "dense_epochs"):
            check_field(self, name, low=0, high=self.epochs, integer=True, hint=f" (epochs={self.epochs})")
        check_field(self, "member_floor", low=0, high=1)
        check_field(self, "seed", low=0, integer=True)
        if self.targets not in TARGETS:
            raise ValueError(f"unknown targets {self.targets!r}; expected one of {TARGETS}")
        if self.member_loss not in MEMBER_LOSSES:
            raise ValueError(f"unknown member_loss {self.member_loss!r}; expected one of {MEMBER_LOSSES}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"unknown precision {self.precision!r}; expected one of {PRECISIONS}")
        for name in ("lam", "weight_decay", "entropy_coef"):
            check_field(self, name, low=0)
        for name in ("lr", "policy_lr"):
            check_field(self, name, above=0)


class SelectionModule(nn.Module):
    """Guan et al.'s selection module, one network for every decision: after member ``k``, the logit of
    stopping, from the softmax of every member evaluated so far (zeros for the others: whether two
    members agree is a signal a confidence threshold does not have) and a one-hot of ``k``."""

    def __init__(self, num_members: int, num_classes: int, hidden: int = 64) -> None:
        super().__init__()
        self.num_members = num_members
        self.net = nn.Sequential(nn.Linear(num_members * (num_classes + 1), hidden), nn.Tanh(), nn.Linear(hidden, 1))

    def forward(self, probs: torch.Tensor, k: int) -> torch.Tensor:
        """``probs``: (B, K, C) softmax of every member; returns (B,) stop logits after member ``k``."""
        b, members, _ = probs.shape
        seen = probs * (torch.arange(members, device=probs.device) <= k)[None, :, None]
        position = F.one_hot(torch.full((b,), k, device=probs.device), members).to(probs.dtype)
        return self.net(torch.cat([seen.flatten(1), position], dim=1)).squeeze(1)


def route(policy: SelectionModule, probs: torch.Tensor, uniform: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Exits of B instances: stop after member ``k`` when ``uniform[:, k] < P(stop)`` (sampling), or when
    ``P(stop) > 0.5`` if ``uniform`` is None (greedy). Returns the exits (B,), the log-probability of
    the decisions taken (B,) and their summed entropy (B,); the last member always stops."""
    b, members, _ = probs.shape
    exits = torch.full((b,), members - 1, dtype=torch.long, device=probs.device)
    alive = torch.ones(b, dtype=torch.bool, device=probs.device)
    logp = torch.zeros(b, device=probs.device)
    entropy = torch.zeros(b, device=probs.device)
    for k in range(members - 1):
        logit = policy(probs, k)
        p = torch.sigmoid(logit)
        stop = (uniform[:, k] < p) if uniform is not None else (p > 0.5)
        taken = torch.where(stop, F.logsigmoid(logit), F.logsigmoid(-logit))
        logp = logp + torch.where(alive, taken, torch.zeros_like(taken))
        h = -(p * F.logsigmoid(logit) + (1 - p) * F.logsigmoid(-logit))
        entropy = entropy + torch.where(alive, h, torch.zeros_like(h))
        exits = torch.where(alive & stop, torch.full_like(exits, k), exits)
        alive = alive & ~stop
    return exits, logp, entropy


def member_weights(exits: torch.Tensor, members: int, targets: str, dense: bool, floor: float = 0.0) -> torch.Tensor:
    """(B, K): how much each member learns from each instance: 1 where the routes bring it there
    (``targets``), ``floor`` elsewhere; 1 everywhere while ``dense``."""
    k = torch.arange(members, device=exits.device)[None, :]
    if dense:
        return torch.ones(len(exits), members, device=exits.device)
    reached = k <= exits[:, None] if targets == "heads" else k == exits[:, None]
    return reached.float() * (1.0 - floor) + floor


def routed_cross_entropy(logits: list[torch.Tensor], labels: torch.Tensor, weights: torch.Tensor, label_smoothing: float,
                         normalisation: str) -> torch.Tensor:
    """The members' summed cross-entropy, member ``k`` on the instances ``weights[:, k]`` selects,
    averaged as :attr:`ScratchJointSpec.member_loss` says."""
    total = torch.zeros((), device=labels.device)
    for k, z in enumerate(logits):
        routed = (F.cross_entropy(z, labels, label_smoothing=label_smoothing, reduction="none") * weights[:, k]).sum()
        total = total + routed / (len(labels) if normalisation == "expected" else weights[:, k].sum().clamp(min=1.0))
    return total


def step_losses(logits: list[torch.Tensor], y: torch.Tensor, policy: SelectionModule, uniform: torch.Tensor, costs: torch.Tensor,
                spec: ScratchJointSpec, dense: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One batch's two losses from the members' ``logits``: the members' routed cross-entropy
    (:func:`routed_cross_entropy` over :func:`member_weights`) and the selection module's REINFORCE
    loss on the routes it sampled (reward: right at the exit − λ·cost, the batch's mean as baseline,
    minus the entropy bonus). The policy reads the members' softmax detached, so its loss moves only
    the policy and the members' only the members. Also the exits, whether each was right, and the
    rewards."""
    probs = torch.stack([z.detach().softmax(-1) for z in logits], dim=1)
    exits, logp, entropy = route(policy, probs, uniform)
    correct = (probs.argmax(-1).gather(1, exits[:, None]).squeeze(1) == y).float()
    reward = correct - spec.lam * costs[exits]
    policy_loss = -((reward - reward.mean()) * logp).mean() - spec.entropy_coef * entropy.mean()
    weights = member_weights(exits, len(logits), spec.targets, dense, spec.member_floor)
    member_loss = routed_cross_entropy(logits, y, weights, spec.label_smoothing, spec.member_loss)
    return member_loss, policy_loss, exits, correct, reward


def cumulative_cost(member_macs: list[int]) -> torch.Tensor:
    """(K,) the MACs of exiting after member ``k`` (every member up to it runs) over the largest
    member's: the cascade environment's ``macs_fraction``."""
    macs = torch.tensor(member_macs, dtype=torch.float64)
    return (macs.cumsum(0) / macs.max()).float()


def lr_factor(step: int, warmup: int, total: int) -> float:
    """Linear warm-up over ``warmup`` steps, then a half cosine to 0 at step ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def build_networks(spec: ScratchJointSpec) -> tuple[nn.ModuleList, SelectionModule, list[str], list[int], str]:
    """Fresh members of the cascade ``spec.backbone`` (its classifiers' architectures with every layer
    re-initialised as their constructors draw it: He et al.'s for the convolutions; its weights are never trained here) and a fresh selection module, both drawn from
    ``spec.seed``; the members' names, their MACs (the cascade's, which do not depend on the weights)
    and the data set."""
    from ..backbones import backbone_dataset, make_backbone
    from ..backbones.cascade import Cascade
    from ..backbones.resnet import he_init

    with torch.random.fork_rng(devices=[]):  # seeded, and the caller's random state left as it was
        cascade = make_backbone(spec.backbone)
        if not isinstance(cascade, Cascade):
            raise ValueError(f"joint training from scratch needs a cascade backbone, got {spec.backbone!r} ({type(cascade).__name__})")
        members = copy.deepcopy(cascade.classifiers).requires_grad_(True)
        torch.manual_seed(spec.seed)
        for module in members.modules():
            if module is not members and hasattr(module, "reset_parameters"):
                module.reset_parameters()
        he_init(members)  # the convolutions as the members' constructors draw them, not reset_parameters' default
        policy = SelectionModule(len(members), cascade.spec.num_classes, spec.policy_hidden)
    return members, policy, list(cascade.member_names), [int(m) for m in cascade.member_macs], backbone_dataset(spec.backbone)


@torch.inference_mode()
def evaluate(members: nn.ModuleList, policy: SelectionModule, split: Split, costs: torch.Tensor, batch_size: int = 1000) -> dict[str, Any]:
    """Each member's accuracy on ``split`` and the greedy policy's routed accuracy and mean cost (fp32, eval mode)."""
    members.eval()
    device = costs.device
    right = torch.zeros(len(members), device=device)
    routed_right, routed_cost = 0.0, 0.0
    for start in range(0, len(split), batch_size):
        x = split.inputs[start : start + batch_size].to(device)
        x = x.contiguous(memory_format=torch.channels_last) if x.ndim == 4 else x
        y = torch.from_numpy(split.labels[start : start + batch_size]).to(device)
        probs = torch.stack([m(x).float().softmax(-1) for m in members], dim=1)
        predictions = probs.argmax(-1)
        right += (predictions == y[:, None]).sum(0)
        exits, _, _ = route(policy, probs, None)
        routed_right += float((predictions.gather(1, exits[:, None]).squeeze(1) == y).sum())
        routed_cost += float(costs[exits].sum())
    n = len(split)
    return {"members": [round(float(r) / n, 4) for r in right], "routed_accuracy": round(routed_right / n, 4),
            "routed_macs_fraction": round(routed_cost / n, 4)}


def branch_state(source: str | Path, spec: ScratchJointSpec) -> dict[str, Any]:
    """The checkpoint ``source`` of another run, to start ``spec`` from, with the record of where it
    came from (``state["branched_from"]``, JSON: the file, its sha256, its epoch and spec, and its own
    record if it was a branch too). Refused unless the two runs' specs differ only in
    :data:`BRANCHABLE` fields and its epoch lies inside both runs' dense epochs and before ``spec``'s
    last: there the two runs are one computation, so the branch is exactly ``spec`` from scratch."""
    source = Path(source)
    if source.is_dir():
        raise ValueError(f"cannot branch from {source}: it is a folder; pass {source / 'checkpoint.pt'}")
    state = load_state_dict(source)
    missing = [key for key in CHECKPOINT_KEYS if key not in state]
    if missing:
        raise ValueError(f"cannot branch from {source}: it is not a `joint --from-scratch` checkpoint (no {', '.join(missing)})")
    stored, mine = json.loads(state["spec"]), json.loads(json.dumps(asdict(spec)))
    theirs = stored_arguments(state["spec"], spec, predates=WRITTEN_BEFORE_MEMBER_LOSS)  # as --resume reads it
    assert theirs is not None  # every ScratchJointSpec field has a default
    differ = sorted({k for k in mine if k not in BRANCHABLE and theirs[k] != mine[k]} | (theirs.keys() - mine.keys()))
    if differ:
        raise ValueError(f"cannot branch from {source}: its run differs in {', '.join(differ)} "
                         f"(only {', '.join(BRANCHABLE)} may differ); its spec: {state['spec']}")
    epoch, dense = int(state["epoch"]), min(int(theirs["dense_epochs"]), spec.dense_epochs)
    if dense == 0:
        raise ValueError(f"cannot branch from {source}: the two runs share no dense epoch (its dense_epochs "
                         f"{theirs['dense_epochs']}, this run's {spec.dense_epochs})")
    if epoch > dense:
        raise ValueError(f"cannot branch from {source}: it was taken after epoch {epoch}, past the dense epochs the two "
                         f"runs share ({dense}); branch from a checkpoint of epoch {dense} or earlier")
    if epoch >= spec.epochs:
        raise ValueError(f"cannot branch from {source}: it was taken after epoch {epoch}, and this run has {spec.epochs}: nothing to train")
    record = {"checkpoint": str(source.resolve()), "sha256": file_sha256(source), "epoch": epoch, "spec": stored,
              "branched_from": json.loads(state.get("branched_from", "null"))}
    state["branched_from"] = json.dumps(record, sort_keys=True)
    return state


def log_epoch(writer: Any, row: dict[str, Any], names: list[str]) -> None:
    """One epoch's row of the history as TensorBoard scalars (see the module docstring)."""
    epoch, evaluated = row["epoch"], row["val"]
    for k, name in enumerate(names):
        writer.add_scalar(f"charts/exit_fraction_{k}", row["exit_fraction"][k], epoch)
        if row["accuracy_at_exit"][k] is not None:
            writer.add_scalar(f"charts/accuracy_at_exit_{k}", row["accuracy_at_exit"][k], epoch)
        writer.add_scalar(f"val/member_{k}_{name}", evaluated["members"][k], epoch)
    for key in ("train_reward", "train_routed_accuracy", "train_macs_fraction", "member_loss", "lr"):
        writer.add_scalar(f"train/{key}", row[key], epoch)
    writer.add_scalar("val/routed_accuracy", evaluated["routed_accuracy"], epoch)
    writer.add_scalar("val/routed_macs_fraction", evaluated["routed_macs_fraction"], epoch)


def joint_from_scratch(
    spec: ScratchJointSpec,
    out: str | Path,
    *,
    resume: bool = False,
    device: str = "cpu",
    data_root: str | None = None,
    time_limit: float | None = None,
    progress: bool = False,
    branch_from: str | Path | None = None,
) -> dict[str, Any]:
    """Run (or resume) ``spec`` into ``out``; return the summary also written to ``joint.json``.

    ``time_limit`` (minutes) starts an epoch only if the last one this call trained says it ends in
    time, as ``pretrain --time-limit`` does; stopped early, the summary has ``"stopped": True``: go on
    with ``resume=True``. ``branch_from`` (another run's ``checkpoint.pt``) starts a new run from it
    (:func:`branch_state`; its history and TensorBoard rows come along); once ``out`` has its own
    checkpoint, ``resume=True`` goes on from that, so one command serves every segment.
    """
    deadline = TimeLimit(time_limit, started=time.time())  # counted from here
    from torch.utils.tensorboard import SummaryWriter

    out = Path(out)
    checkpoint = out / "checkpoint.pt"
    resuming = resumes(checkpoint, resume, ("backbone.pt", "policy.pt", "joint.json"))
    where = present_device(device)
    written = json.dumps(asdict(spec), sort_keys=True)
    state = load_state_dict(checkpoint) if resuming else None
    if state is not None:
        refuse_other_run(checkpoint, state["spec"], spec, predates=WRITTEN_BEFORE_MEMBER_LOSS)
    branching = state is None and branch_from is not None
    if branching:
        state = branch_state(branch_from, spec)
    branched = json.loads(state.get("branched_from", "null")) if state is not None else None
    members, policy, names, member_macs, dataset = build_networks(spec)
    train, val = load_split(dataset, "train", data_root), load_split(dataset, "val", data_root)
    if len(train) < spec.batch_size:
        raise ValueError(f"batch_size {spec.batch_size} is larger than the train split ({len(train)} images)")
    out.mkdir(parents=True, exist_ok=True)
    torch.backends.cudnn.benchmark = where.type == "cuda"
    members = members.to(where, memory_format=torch.channels_last)
    policy = policy.to(where)
    decay = [p for p in members.parameters() if p.ndim > 1]
    no_decay = [p for p in members.parameters() if p.ndim <= 1]
    optimizer = torch.optim.SGD([{"params": decay, "weight_decay": spec.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
                                lr=spec.lr, momentum=0.9, nesterov=True)
    steps_per_epoch = len(train) // spec.batch_size
    total, warmup = spec.epochs * steps_per_epoch, spec.warmup_epochs * steps_per_epoch
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, warmup, total))
    policy_optimizer = torch.optim.Adam(policy.parameters(), lr=spec.policy_lr)
    generator = torch.Generator().manual_seed(spec.seed)
    epoch, elapsed, history = 0, 0.0, []
    if state is not None:
        members.load_state_dict(state["members"])
        policy.load_state_dict(state["policy"])
        optimizer.load_state_dict(state["optimizer"])
        policy_optimizer.load_state_dict(state["policy_optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        generator.set_state(state["generator"])
        epoch, elapsed, history = int(state["epoch"]), float(state["elapsed"]), json.loads(state["history"])
    code = provenance()
    machine = machine_description(where)
    write_json(out / "config.json", {"joint_from_scratch": asdict(spec), "members": names, "member_macs": member_macs,
                                     "branched_from": branched, "routing_env_version": __version__, "provenance": code})
    costs = cumulative_cost(member_macs).to(where)
    inputs, labels = train.inputs.to(where), torch.from_numpy(train.labels).to(where)
    images = inputs.ndim == 4  # crops and flips for images; vectors (the synthetic set) as they are
    autocast = torch.autocast(where.type, dtype=torch.bfloat16, enabled=spec.precision == "bf16")
    # a branch starts its curves afresh (purge_step 1: a branch killed before its first epoch and
    # started again would log the source's epochs twice) with the source's epochs, so they start at 1
    writer = SummaryWriter(str(out / "tb"), purge_step=1 if branching else epoch + 1)

    def write_outputs() -> None:
        """The run's outputs at the last whole epoch: the members, the policy and ``joint.json``."""
        save_state_dict(members.state_dict(), out / "backbone.pt")
        save_state_dict(policy.state_dict(), out / "policy.pt")
        write_json(out / "joint.json", summary(spec, names, member_macs, epoch, elapsed, history, out, branched))

    def save() -> None:
        """The epoch's checkpoint, then the outputs. Killed in between, the outputs lag the checkpoint by
        an epoch until the next save, or the end of the run, rewrites them; the other order could leave
        a first epoch's outputs with no checkpoint, a folder that neither resumes nor starts afresh."""
        writer.flush()  # the epoch's curves on disk before the checkpoint says it is done (purge_step drops later ones)
        save_state_dict({"spec": written, "members": members.state_dict(), "policy": policy.state_dict(),
                         "optimizer": optimizer.state_dict(), "policy_optimizer": policy_optimizer.state_dict(),
                         "scheduler": scheduler.state_dict(), "generator": generator.get_state(), "epoch": epoch,
                         "elapsed": elapsed, "history": json.dumps(history), "branched_from": json.dumps(branched)}, checkpoint)
        write_outputs()

    if branching:  # the branch's own checkpoint at once: from here on it resumes like any run
        for row in history:
            log_epoch(writer, row, names)
        save()
    while epoch < spec.epochs:
        began = time.time()
        if not deadline.allows_epoch(began):
            break
        members.train()
        dense = epoch < spec.dense_epochs
        order = torch.randperm(len(train), generator=generator)
        sums = torch.zeros(4 + 2 * len(members), device=where)  # reward, correct, cost, loss, then exits and right per member
        for step in range(steps_per_epoch):
            batch = order[step * spec.batch_size : (step + 1) * spec.batch_size].to(where)
            x, y = (augment(inputs[batch], generator) if images else inputs[batch]), labels[batch]
            uniform = torch.rand(len(batch), len(members) - 1, generator=generator).to(where)
            with autocast:
                logits = [m(x).float() for m in members]
            member_loss, policy_loss, exits, correct, reward = step_losses(logits, y, policy, uniform, costs, spec, dense)
            optimizer.zero_grad(set_to_none=True)
            policy_optimizer.zero_grad(set_to_none=True)
            (member_loss + policy_loss).backward()
            optimizer.step()
            policy_optimizer.step()
            scheduler.step()
            counts = F.one_hot(exits, len(members)).float()
            sums += torch.cat([torch.stack([reward.sum(), correct.sum(), costs[exits].sum(), member_loss.detach() * len(batch)]),
                               counts.sum(0), (counts * correct[:, None]).sum(0)])
        sums = sums.cpu().numpy()
        weights = [p for net in (*members, policy) for p in net.parameters()]
        if not math.isfinite(float(sums[3])) or not all(bool(torch.isfinite(p).all()) for p in weights):
            writer.close()  # diverged: keep the last good checkpoint rather than save NaN members or policy over it
            raise FloatingPointError(f"joint from scratch, epoch {epoch + 1}: the members' loss is {sums[3]} (or a weight is not "
                                     f"finite); nothing of this epoch is written, {out / 'checkpoint.pt'} still holds epoch {epoch}")
        seen = steps_per_epoch * spec.batch_size
        seconds = time.time() - began
        elapsed += seconds
        epoch += 1
        evaluated = evaluate(members, policy, val, costs)
        exits_seen, right_seen = sums[4 : 4 + len(members)], sums[4 + len(members) :]
        row = {"epoch": epoch, "seconds": round(seconds, 1), "dense": dense, "lr": round(scheduler.get_last_lr()[0], 6),
               "train_reward": round(float(sums[0]) / seen, 4), "train_routed_accuracy": round(float(sums[1]) / seen, 4),
               "train_macs_fraction": round(float(sums[2]) / seen, 4), "member_loss": round(float(sums[3]) / seen, 4),
               "exit_fraction": [round(float(e) / seen, 4) for e in exits_seen],
               "accuracy_at_exit": [round(float(r / e), 4) if e else None for r, e in zip(right_seen, exits_seen)],
               "val": evaluated, "machine": machine, "git_commit": code["git_commit"]}
        history.append(row)
        log_epoch(writer, row, names)
        save()
        if progress:
            print(f"joint from scratch epoch {epoch}/{spec.epochs}: {seconds:.1f} s, exits {row['exit_fraction']}, "
                  f"train routed acc {row['train_routed_accuracy']:.4f} at {row['train_macs_fraction']:.3f}; val members "
                  f"{evaluated['members']}, routed {evaluated['routed_accuracy']:.4f} at {evaluated['routed_macs_fraction']:.3f}",
                  file=sys.stderr, flush=True)
        deadline.epoch_took(time.time() - began)
    writer.close()
    write_outputs()  # also for a resumed run that had no epoch left: a kill after the last checkpoint left them behind
    return summary(spec, names, member_macs, epoch, elapsed, history, out, branched)


def summary(spec: ScratchJointSpec, names: list[str], member_macs: list[int], epoch: int, elapsed: float,
            history: list[dict[str, Any]], out: Path, branched: dict[str, Any] | None = None) -> dict[str, Any]:
    """What ``joint.json`` holds: the spec, the members, how far the run got (``stopped``: before its
    last epoch, by the time limit), ``branched_from`` (the checkpoint, epoch and spec it started from,
    or None), ``hours`` (the training loops' time, a branch's source's included: not setup, evaluation or
    checkpoints, which ``time_limit`` does count, from the call's start; a caller's own timeout must also
    leave room for what comes before the call, such as unpacking the data) and each epoch's figures."""
    return {"spec": asdict(spec), "members": names, "member_macs": member_macs, "epochs": epoch, "stopped": epoch < spec.epochs,
            "branched_from": branched, "hours": round(elapsed / 3600, 4), "history": history, "backbone": str(out / "backbone.pt")}
