"""Joint training of a cascade and its selection module (Guan et al., IJCAI 2018), with checkpoints.

The policy (``reinforce``: Guan et al.'s selection module) and the backbone learn together on the
``train`` split: :class:`~routing_env.cotraining.CoTrainBackbone` updates each member on the
cross-entropy of the instances the policy exited at it, REINFORCE updates the policy on accuracy −
λ·compute of the same episodes. An epoch is ``len(train)`` instance-steps; after each, the policy, the
backbone, both optimizers and every random state are written atomically (``checkpoint.pt``, a plain
dict loadable with ``weights_only=True``), so ``resume=True`` after a kill goes on from the last whole
epoch. With ``augment`` every episode reads a fresh crop-and-flip view of its image and the members'
loss another, as in any CIFAR training; without it the members memorise the ``train`` images they
revisit every epoch. TensorBoard (``tb/``) has ``charts/accuracy_at_exit_<p>`` (each member's accuracy on the
instances routed to it) beside the usual keys. The result is ``backbone.pt`` (the co-trained members,
a ``train_backbone`` run's weights: ``evaluate --run`` and ``backbone_weights=`` read it) and the policy.

What comes after (the fair comparison with the frozen cascade): freeze the co-trained members
(:func:`routing_env.pretrained.package_cotrained` builds their ``val``/``test`` caches), then fit the
final policy and the threshold on ``val`` with ``routing-env sweep --backbone <the new name>``.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..checkpoints import (
    TimeLimit,
    last_logged,
    load_state_dict,
    refuse_orphan_curves,
    refuse_other_run,
    resumes,
    save_state_dict,
    write_json,
)
from ..cotraining import CoTrainBackbone
from ..env import COTRAINING_OPTIONS, RoutingVectorEnv, registered_id
from ..provenance import provenance
from ..validation import check_field

LR_SCHEDULES = ("constant", "cosine")


@dataclass(frozen=True)
class JointSpec:
    """A joint-training run: the cascade, λ, the co-training settings and the policy's options."""

    backbone: str = "cifar10-resnet-cascade"
    lam: float = 0.03
    epochs: int = 10
    num_envs: int = 64
    seed: int = 0
    backbone_lr: float = 0.01
    backbone_update_every: int = 32
    targets: str = "exit"
    """The heads the members learn from: ``exit`` (Guan et al.) or ``heads`` (every head on the route;
    the environment's ``backbone_targets``)."""
    augment: bool = False
    """Fresh crop-and-flip views of the ``train`` images, for the routing and for the members' loss
    (the environment's ``backbone_augment``)."""
    backbone_lr_schedule: str = "constant"
    """``constant`` (Guan et al.) or ``cosine``: the members' learning rate falls from ``backbone_lr``
    towards 0 along a half cosine, set at the start of each epoch, as in any CIFAR training's last
    epochs; fine-tuning at a constant rate keeps the members noisy to the end."""
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    """Further environment options (``reward``, ``data_root``, ``device`` …)."""
    agent_kwargs: dict[str, Any] = field(default_factory=dict)
    """``reinforce`` options."""

    def __post_init__(self) -> None:
        for name in ("epochs", "num_envs", "backbone_update_every"):
            check_field(self, name, low=1, integer=True)
        check_field(self, "seed", low=0, integer=True)
        check_field(self, "lam", low=0)
        check_field(self, "backbone_lr", above=0)
        if self.backbone_lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"unknown backbone_lr_schedule {self.backbone_lr_schedule!r}; expected one of {LR_SCHEDULES}")
        reserved = {"backbone", "lam", "split", "train_backbone", *COTRAINING_OPTIONS, "backbone_weights"}
        clash = sorted(reserved & set(self.env_kwargs))
        if clash:
            raise ValueError(f"env_kwargs {clash} are set by the joint run itself; pass them as its own options")
        if self.env_kwargs.get("target_macs") is not None:
            raise ValueError("joint training prices compute with a fixed lam; target_macs (an adapted λ) is not checkpointed here")

    def env_options(self) -> dict[str, Any]:
        return {**self.env_kwargs, "backbone": self.backbone, "lam": self.lam, "split": "train", "train_backbone": True,
                "backbone_lr": self.backbone_lr, "backbone_update_every": self.backbone_update_every,
                "backbone_targets": self.targets, "backbone_augment": self.augment}


EPOCH_TAG = "charts/epoch"
"""Logged once an epoch, as its checkpoint is written (``charts/episodic_return`` is logged at every
update, so a first epoch killed half-way has curves and, rightly, no checkpoint)."""


def joint_train(spec: JointSpec, out: str | Path, *, resume: bool = False, progress: bool = False,
                time_limit: float | None = None) -> dict[str, Any]:
    """Run (or resume) ``spec`` into ``out``; return the summary also written to ``joint.json``.
    ``time_limit`` (minutes, :class:`~routing_env.checkpoints.TimeLimit`) starts an epoch only if it
    is expected to end in time; stopped early, the summary says ``"stopped": True``: go on with
    ``resume=True``."""
    from routing_env.agents import RunLogger, make_agent

    deadline = TimeLimit(time_limit, started=time.time())

    out = Path(out)
    checkpoint = out / "checkpoint.pt"
    resuming = resumes(checkpoint, resume, ("backbone.pt", "joint.json"))
    logged = None if resuming else last_logged(out / "tb", EPOCH_TAG)
    refuse_orphan_curves(checkpoint, logged and logged[1])  # EPOCH_TAG's value is the epoch
    state = load_state_dict(checkpoint) if resuming else None
    written = json.dumps(asdict(spec), sort_keys=True)
    if state is not None:
        refuse_other_run(checkpoint, *portable(state["spec"], spec))
    options = spec.env_options()
    if state is not None:  # the members of the checkpoint's epoch, whatever backbone.pt a kill left behind
        save_state_dict(state["backbone"], out / "backbone.pt")
        options["backbone_weights"] = str(out / "backbone.pt")
    env = CoTrainBackbone(RoutingVectorEnv(num_envs=spec.num_envs, **options))
    agent = make_agent("reinforce", env, seed=spec.seed, **spec.agent_kwargs)
    out.mkdir(parents=True, exist_ok=True)  # once the options have built an environment and an agent: a refused run writes nothing
    epoch, history = 0, []
    # the members the run started from (a pretrained name may be re-released, a weights file replaced):
    # what a reproduction from the same command checks; carried over from the checkpoint on resume
    start_sha256 = env.unwrapped.routing.weights_sha256 if state is None else state.get("start_weights_sha256")
    if state is not None:
        agent.load_training_state(state["agent"])
        env.trainer.optimizer.load_state_dict(state["backbone_optimizer"])
        env.trainer.updates = int(state["backbone_updates"])
        env.reset(seed=spec.seed)  # sets up the episodes; the instance stream then goes on from the saved state
        env.unwrapped.np_random.bit_generator.state = json.loads(state["env_rng"])
        if "views_rng" in state:
            env.unwrapped.views_generator.set_state(state["views_rng"])
        epoch, history = int(state["epoch"]), json.loads(state["history"])
        agent.save(out)  # the checkpoint's policy beside its members, whatever policy a kill left behind
    # what `evaluate --run` needs: a train_backbone run is evaluated on its backbone.pt, frozen
    write_json(out / "config.json", {"env": registered_id(env.unwrapped), "env_kwargs": spec.env_options(), "agent": "reinforce",
                                     "agent_kwargs": spec.agent_kwargs, "seed": spec.seed, "steps_per_epoch": env.num_instances,
                                     "num_envs": spec.num_envs, "joint": asdict(spec), "start_weights_sha256": start_sha256,
                                     "routing_env_version": __version__,
                                     "provenance": provenance()})
    # what a kill logged after the last checkpoint (or, on a fresh start, in a first epoch it never finished) is dropped
    logger = RunLogger(out / "tb", purge_step=agent.steps_done + 1 if resuming else 0)
    steps = env.num_instances
    while epoch < spec.epochs and deadline.allows_epoch(time.time()):
        began = time.time()
        lr = backbone_lr_at(spec, epoch)
        for group in env.trainer.optimizer.param_groups:
            group["lr"] = lr
        agent.learn(steps, logger=logger, progress=progress)
        flush(env)
        epoch += 1
        history.append({"epoch": epoch, "seconds": round(time.time() - began, 1), "backbone_updates": env.trainer.updates,
                        "backbone_loss": env.trainer.last_loss, "backbone_lr": lr})
        backbone = env.backbone_state_dict()
        views = env.unwrapped.views_generator
        logger.scalar(EPOCH_TAG, epoch, agent.steps_done)  # a finished epoch: what a lost checkpoint's refusal reads
        logger.flush()  # the epoch's curves on disk before the checkpoint says it is done
        save_state_dict({  # one atomic file holds the whole epoch; backbone.pt and the policy follow from it
            **({"views_rng": views.get_state()} if views is not None else {}),
            "spec": written,
            "backbone": backbone,
            "agent": agent.training_state(),
            "backbone_optimizer": env.trainer.optimizer.state_dict(),
            "backbone_updates": env.trainer.updates,
            "env_rng": json.dumps(env.unwrapped.np_random.bit_generator.state),
            "epoch": epoch,
            "history": json.dumps(history),
            **({"start_weights_sha256": start_sha256} if start_sha256 is not None else {}),  # None: an older checkpoint's run
        }, checkpoint)
        save_state_dict(backbone, out / "backbone.pt")
        agent.save(out)
        write_json(out / "joint.json", joint_summary(spec, epoch, history, out, start_sha256))  # a killed run's record says so
        deadline.epoch_took(time.time() - began)
    logger.close()
    env.close()
    summary = joint_summary(spec, epoch, history, out, start_sha256)
    write_json(out / "joint.json", summary)
    return summary


def joint_summary(spec: JointSpec, epoch: int, history: list[dict[str, Any]], out: Path,
                  start_sha256: str | None) -> dict[str, Any]:
    """What ``joint.json`` holds, written after every epoch: the spec, the sha256 of the members it
    started from (``None`` for a run begun before 0.4.0 recorded it), how far the run got (``stopped``:
    before its last epoch, so that packaging refuses an unfinished run), each epoch's figures."""
    return {"spec": asdict(spec), "start_weights_sha256": start_sha256, "epochs": epoch, "stopped": epoch < spec.epochs,
            "history": history, "backbone": str(out / "backbone.pt")}


PLACEMENT_OPTIONS = ("device", "data_root")
"""Environment options that say where a run executes, not what it computes: a run resumes on another
machine (another GPU, the data elsewhere), as ``pretrain --resume`` does."""


def portable(saved: str, spec: JointSpec) -> tuple[str, JointSpec]:
    """A checkpoint's spec (as written) and ``spec``, both without :data:`PLACEMENT_OPTIONS`."""
    def strip(options: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in options.items() if k not in PLACEMENT_OPTIONS}

    stored = json.loads(saved)
    stored["env_kwargs"] = strip(stored.get("env_kwargs", {}))
    return json.dumps(stored), replace(spec, env_kwargs=strip(spec.env_kwargs))


def backbone_lr_at(spec: JointSpec, epoch: int) -> float:
    """The members' learning rate during epoch ``epoch`` (0-based) under ``spec.backbone_lr_schedule``."""
    if spec.backbone_lr_schedule == "cosine":
        return spec.backbone_lr * 0.5 * (1.0 + math.cos(math.pi * epoch / spec.epochs))
    return spec.backbone_lr


def flush(env: CoTrainBackbone) -> None:
    """Take one last step on the episodes pending in the trainer, so that a checkpoint holds none."""
    trainer = env.trainer
    if trainer.pending:
        instances, routes, exits = (np.concatenate(column) for column in zip(*trainer.pending))
        trainer.pending.clear()
        trainer.update(instances, routes, exits)
