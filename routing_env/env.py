"""Gymnasium views over the batched routing core: one episode (``RoutingEnv``) or B (``RoutingVectorEnv``)."""

from __future__ import annotations

import dataclasses
import math
import pickle
import warnings
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from gymnasium.error import ResetNeeded
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from .backbones import DEFAULT_BACKBONE, BackboneSpec, backbone_dataset, make_backbone
from .backbones.base import RoutableBackbone
from .budget import DualAscent, LagrangianPenalty
from .checkpoints import load_state_dict
from .core import DECIDE_AT, INVALID_ACTION_MODES, RoutingCore, RoutingView, check_widths, skip_offered
from .data import SPLITS
from .latency import check_cost_spec, cost_table
from .rewards import RewardFn, builtin_reward, is_custom, make_reward, spec_name
from .validation import check_field, check_flag

OBS_MODES = ("vector", "heads")
"""``vector``: the five keys of docs/design.md §2. ``heads`` adds ``heads`` (H, C), the softmax of every
exit head evaluated so far in the episode (zeros where a head has not run), and ``heads_mask`` (H,):
whether two cascade members agree is a signal the latest head alone does not carry."""

BACKBONE_TARGETS = ("exit", "heads")
"""What co-training's cross-entropy covers (``backbone_targets``): ``exit``, the head each episode
exited at (Guan et al.'s joint objective); ``heads``, every head on the episode's route up to its exit
(deep supervision along the route the policy took; :func:`~routing_env.cotraining.heads_on_route`)."""


COTRAINING_OPTIONS = ("backbone_lr", "backbone_update_every", "backbone_targets", "backbone_augment")
"""The options that only co-training reads (``EnvConfig``'s "Co-training:" fields; some, such as
``backbone_augment``, are refused without ``train_backbone``): an evaluation drops them, a joint run sets them itself."""


@dataclass(frozen=True)
class EnvConfig:
    """The environment's options (docs/design.md §1); the same names are the CLI's ``--env-kwargs``."""

    backbone: str = DEFAULT_BACKBONE
    """A built-in backbone (``routing_env.backbones.BACKBONES``) or a pretrained model's name; the
    default is the shipped CIFAR-10 ResNet cascade (``pretrained/cifar10-resnet-cascade``)."""
    dataset: str | None = None
    """Data set; ``None`` takes the one the backbone was trained for."""
    split: str = "val"
    """``train``, ``val`` (policies learn here) or ``test`` (reports only)."""
    lam: float = 0.1
    """λ, the price of compute in the reward, per unit of ``macs_fraction``."""
    reward: str | RewardFn = "accuracy"
    """A reward spec string (``routing_env.rewards.REWARD_SPECS``), ``module.path:name``
    (:func:`routing_env.rewards.custom_reward`), either with parameters (``accuracy-hinge[budget=0.3]``:
    :func:`routing_env.rewards.parse_spec`), or a ``RewardFn``."""
    max_macs: float | None = None
    """Hard budget in units of the reference MACs: a move after which no prediction fits is masked, and
    replaced like any invalid action (docs/design.md §5), so ``macs_fraction <= max_macs`` always holds.
    ``None`` or ``inf``: no budget (stored as ``None``)."""
    target_macs: float | None = None
    """A budget to train toward (a fraction of the reference cost, MACs unless ``cost`` says otherwise):
    a spec reward is built with λ = 0 and priced instead by a λ the environment adapts by dual ascent
    (:mod:`routing_env.budget`), starting from ``lam``, so that the mean cost converges to it;
    ``info["lam"]`` reports the current λ. A ``RewardFn`` object is used as given, plus that price.
    The adapted λ is the environment's training state, not an episode's: ``reset(seed=…)`` leaves it
    where it is, so a reseeded environment replays the episodes but not their rewards.
    Evaluation environments leave it out (λ must not drift while a policy is scored)."""
    cost: str | dict[str, Any] = "macs"
    """What the reward charges for compute (:mod:`routing_env.latency`): ``"macs"``; ``"latency"``, the
    profile ``routing-env profile --backbone NAME`` measured on this machine at batch 1; a path to such
    a profile; or a dict table (``prefix``, ``stage``, ``skip``, ``head``). ``max_macs`` and
    ``info["macs"]`` stay in MACs."""
    target_lr: float = 1e-4
    """The dual ascent's step size: λ moves by this times each ended episode's cost above the target."""
    invalid_action: str = "fallback"
    """``fallback``, ``penalize`` or ``raise`` (docs/design.md §5)."""
    invalid_penalty: float = 0.1
    """The reward penalty per invalid action under ``invalid_action="penalize"``."""
    allow_skip: bool | None = None
    """Offer SKIP; ``None`` takes the backbone's default (off for cascades)."""
    widths: tuple[float, ...] | None = None
    """The widths ``RUN`` offers, a subset of the backbone's (``None``: all). The action space keeps a
    ``RUN`` per backbone width; the others are masked and, chosen anyway, follow ``invalid_action``
    (``fallback``: the next narrower offered width, else the next wider). With ``allow_skip=False``, ``widths=[1.0]`` leaves a
    dynamic ResNet only early exit on the full network: a smaller problem for the dearer λ, where the
    exit-when-sure threshold lies above every mixture of fixed routes."""
    decide_at: str = "block"
    """Where the policy decides (:data:`~routing_env.core.DECIDE_AT`): before every block, or ``head``:
    at the start and after each exit head, the move repeating in between (one step per decision, so
    fewer steps per episode; :func:`~routing_env.core.decision_points`). Fewer decisions cost less at
    batch 1 (:class:`~routing_env.routed.RoutedModel` takes the same option)."""
    obs_mode: str = "vector"
    """Observation mode: ``vector`` (docs/design.md §2), or ``heads`` (also every head's softmax so far;
    :data:`OBS_MODES`)."""
    train_backbone: bool = False
    """Co-train the backbone (:mod:`routing_env.cotraining`): the environment runs its own copy of the
    backbone live and reports each ended episode's instance and route; ``gym.make``/``make_vec`` wrap it
    in :class:`~routing_env.cotraining.CoTrainBackbone`, which updates that copy on the cross-entropy of
    the exits taken. Needs the image data; refused on ``test``."""
    backbone_lr: float = 0.01
    """Co-training: learning rate of the backbone's SGD (momentum 0.9)."""
    backbone_update_every: int = 32
    """Co-training: one optimizer step per this many ended episodes."""
    backbone_targets: str = "exit"
    """Co-training: the heads whose cross-entropy the backbone descends, ``exit`` (the one each episode
    exited at: Guan et al.) or ``heads`` (every head on its route up to the exit; :data:`BACKBONE_TARGETS`)."""
    backbone_augment: bool = False
    """Co-training: every episode reads a fresh crop-and-flip view of its image, and the backbone's
    loss another (:class:`~routing_env.data.FreshViews`); ``reset(seed=...)`` seeds them. Joint
    training revisits each ``train`` image for many epochs, and without new views the members
    memorise them. Needs ``train_backbone=True`` and image data."""
    backbone_weights: str | None = None
    """A state_dict file to load over the backbone's weights, e.g. the ``backbone.pt`` a co-trained
    ``train`` run writes (evaluating it: the same backbone name, these weights, frozen)."""
    device: str = "cpu"
    """Torch device for backbone computation."""
    data_root: str | None = None
    """Root of the image data (else ``$ROUTING_ENV_DATA``); not needed where a feature cache exists."""

    def skip_offered(self, spec: BackboneSpec) -> bool:
        """Whether SKIP is offered on a backbone with ``spec``: ``allow_skip``, else the backbone's default."""
        return skip_offered(self.allow_skip, spec.skip_by_default)

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> EnvConfig:
        """Build from keyword options. An unknown name raises the ``TypeError`` Python itself raises for an
        unexpected keyword argument (same wording, so that libraries which retry without a conventional
        option, such as torchrl with ``frameskip``, recognise it), with the valid options listed."""
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(options) - set(names))
        if unknown:
            raise TypeError(
                f"{cls.__name__}.__init__() got an unexpected keyword argument {unknown[0]!r} "
                f"(unknown environment option(s) {unknown}; valid options: {names})"
            )
        return cls(**options)

    def __post_init__(self) -> None:
        check_field(self, "lam", low=0)
        check_field(self, "invalid_penalty", low=0, hint=" (a penalty; a negative one would reward invalid actions)")
        if isinstance(self.reward, str) and not is_custom(self.reward):  # a misspelt spec or parameter, before the backbone loads
            builtin_reward(self.reward, self.lam)
        skip_offered(self.allow_skip, False)  # a bad value is refused here, before the backbone loads
        if self.widths is not None:
            object.__setattr__(self, "widths", check_widths(self.widths))
        if self.split not in SPLITS:
            raise ValueError(f"unknown split {self.split!r}; expected one of {SPLITS}")
        if self.invalid_action not in INVALID_ACTION_MODES:
            raise ValueError(f"unknown invalid_action {self.invalid_action!r}; expected one of {INVALID_ACTION_MODES}")
        if self.decide_at not in DECIDE_AT:
            raise ValueError(f"unknown decide_at {self.decide_at!r}; expected one of {DECIDE_AT}")
        if self.obs_mode not in OBS_MODES:
            raise ValueError(f"unknown obs_mode {self.obs_mode!r}; expected one of {OBS_MODES}")
        check_field(self, "target_macs", optional=True, above=0)
        check_field(self, "target_lr", above=0)
        if self.target_macs is not None and spec_name(self.reward) in ("blockdrop", "accuracy-hinge"):
            raise ValueError(f"reward {self.reward!r} has no price of every unit of compute for target_macs to adapt (blockdrop "
                             "prices compute by 1 − cost² and uses λ, if at all, as a wrong answer's penalty; accuracy-hinge charges "
                             "only above its budget): use accuracy, cross-entropy or a shaped spec")
        check_cost_spec(self.cost)
        check_field(self, "max_macs", optional=True, above=0, infinite=True, hint=" (a fraction of the reference MACs) or None")
        if self.max_macs == math.inf:  # no budget, as RoutedModel reads it: stored as None, so configs stay plain JSON
            object.__setattr__(self, "max_macs", None)
        check_field(self, "backbone_lr", above=0)
        check_field(self, "backbone_update_every", low=1, integer=True)
        object.__setattr__(self, "train_backbone", check_flag("train_backbone", self.train_backbone))  # a bool, not "False"
        if self.backbone_targets not in BACKBONE_TARGETS:
            raise ValueError(f"unknown backbone_targets {self.backbone_targets!r}; expected one of {BACKBONE_TARGETS}")
        if not isinstance(self.backbone_augment, bool) or (self.backbone_augment and not self.train_backbone):
            raise ValueError(f"backbone_augment must be true or false, and true only with train_backbone=True, got {self.backbone_augment!r}")
        if self.train_backbone and self.split == "test":
            raise ValueError(
                "train_backbone=True on split='test' would train on the test labels; co-train on 'train' or 'val', "
                "and evaluate the saved backbone frozen (backbone_weights=...)"
            )
        if not isinstance(self.device, (str, torch.device)):
            raise ValueError(f"device must be a torch device or its name such as 'cpu' or 'cuda:0', got {self.device!r}")
        object.__setattr__(self, "device", str(torch_device(self.device)))  # a name: config.json writes it
        inert = self.inert_options()
        if inert:
            warnings.warn("environment options set with no effect: " + "; ".join(
                f"{name}={getattr(self, name)!r} does nothing without {needs}" for name, needs in inert.items()), stacklevel=3)

    def inert_options(self) -> dict[str, str]:
        """The options set away from their default whose controlling option is off, each with what it
        needs (``backbone_lr`` without ``train_backbone=True``, ``target_lr`` without ``target_macs``,
        ``invalid_penalty`` under another ``invalid_action``): a run that sets one and forgets the other
        trains as if it had set neither, so the environment warns."""
        needs = {**{name: "train_backbone=True" for name in COTRAINING_OPTIONS if name != "backbone_augment"},  # that one is refused
                 "target_lr": "target_macs", "invalid_penalty": "invalid_action='penalize'"}
        on = {"train_backbone=True": self.train_backbone, "target_macs": self.target_macs is not None,
              "invalid_action='penalize'": self.invalid_action == "penalize"}
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        return {name: need for name, need in needs.items() if not on[need] and getattr(self, name) != defaults[name]}


def torch_device(name: str) -> torch.device:
    """``torch.device(name)``, with a ``ValueError`` naming ``name`` where torch cannot parse it."""
    try:
        return torch.device(name)
    except RuntimeError as e:
        raise ValueError(f"invalid device {name!r}: {e}") from None


def present_device(name: str) -> torch.device:
    """:func:`torch_device`, and a ``ValueError`` naming ``name`` where it is CUDA and this machine has
    none: what a command that runs work there checks before it writes anything."""
    device = torch_device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r}: this machine has no CUDA device")
    return device


def build_backbone(config: EnvConfig) -> RoutableBackbone:
    """The backbone an environment with ``config`` routes: a fresh object (no module is shared between
    environments), with ``backbone_weights`` loaded, on ``device``."""
    device = present_device(config.device)  # before the weights load: the option named, not CUDA's own error
    backbone = make_backbone(config.backbone)
    if config.backbone_weights is not None:
        load_weights(backbone, config.backbone_weights, config.backbone)
    return backbone.to(device)


def load_weights(backbone: RoutableBackbone, path: str, name: str) -> None:
    """Load the state_dict file ``path`` over ``backbone``'s weights; a ``ValueError`` in one line,
    naming the file and the backbone, where its keys or shapes are another network's (torch lists
    every key over many lines)."""
    try:
        state = load_state_dict(path)
    except (pickle.UnpicklingError, RuntimeError) as e:  # a whole pickled module, a truncated file: torch's message is many lines
        raise ValueError(f"backbone_weights {path!r} is not a plain state_dict that torch.load(weights_only=True) reads: "
                         f"{str(e).splitlines()[0]}") from None
    if not isinstance(state, dict):
        raise ValueError(f"backbone_weights {path!r} holds a {type(state).__name__}, not a state_dict")
    try:
        backbone.load_weights(state)
    except RuntimeError as e:
        mine = backbone.module.state_dict()
        missing, unexpected = sorted(set(mine) - set(state)), sorted(set(state) - set(mine))
        shapes = [k for k in sorted(set(mine) & set(state)) if tuple(mine[k].shape) != tuple(getattr(state[k], "shape", ()))]
        found = "; ".join(f"{len(keys)} {what} (e.g. {keys[0]!r})" for what, keys in
                          (("missing keys", missing), ("unexpected keys", unexpected), ("shapes differ", shapes)) if keys)
        raise ValueError(f"backbone_weights {path!r} do not fit backbone {name!r}: {found or str(e).splitlines()[0]}") from None


def build_core(config: EnvConfig, num_slots: int) -> RoutingCore:
    """The routing core an environment with ``config`` steps, for ``num_slots`` episodes."""
    backbone = build_backbone(config)
    dataset = config.dataset or backbone_dataset(config.backbone)
    allow_skip = config.skip_offered(backbone.spec)
    price = cost_table(config.cost, backbone, config.backbone)
    reward = make_reward(config.reward, config.lam)
    ascent = None
    if config.target_macs is not None:
        ascent = DualAscent(config.target_macs, config.lam, config.target_lr)
        reward = make_reward(config.reward, 0.0) + LagrangianPenalty(ascent)
    return RoutingCore(
        backbone,
        dataset,
        config.split,
        num_slots,
        reward,
        max_macs=config.max_macs,
        invalid_action=config.invalid_action,
        invalid_penalty=config.invalid_penalty,
        allow_skip=allow_skip,
        widths=config.widths,
        data_root=config.data_root,
        live=config.train_backbone,
        augment=config.backbone_augment,
        track_heads=config.obs_mode == "heads",
        ascent=ascent,
        price=price,
        decide_at=config.decide_at,
    )


def observation_space(core: RoutingCore) -> spaces.Dict:
    """The single-episode observation space (docs/design.md §2)."""
    d, c, n, a = core.feature_dim, core.num_classes, core.num_stages, core.num_actions
    big = np.finfo(np.float32).max  # features are unbounded in principle; finite bounds for checkers
    keys: dict[str, spaces.Space] = {
        "features": spaces.Box(-big, big, (d,), np.float32),
        "probs": spaces.Box(0.0, 1.0, (c,), np.float32),
        "position": spaces.Box(0.0, 1.0, (n + 1,), np.float32),
        "cost": spaces.Box(0.0, np.float32(core.max_cost_fraction * 1.001), (1,), np.float32),
        "action_mask": spaces.MultiBinary(a),
    }
    if core.track_heads:
        h = len(core.head_positions)
        keys["heads"] = spaces.Box(0.0, 1.0, (h, c), np.float32)
        keys["heads_mask"] = spaces.MultiBinary(h)
    return spaces.Dict(keys)


def check_action(action: Any, space: spaces.Discrete) -> int:
    """The action as an ``int``; ``ValueError`` naming it and the space when it is not in ``space``."""
    value = action
    if isinstance(action, np.ndarray) and action.shape == ():
        value = action.item()
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or not 0 <= value < space.n:
        raise ValueError(f"action {action!r} is not in the action space {space} (an integer in 0..{space.n - 1})")
    return int(value)


def check_actions(actions: Any, num_envs: int, n: int) -> np.ndarray:
    """A batch of actions as an int64 array of shape ``(num_envs,)``; ``ValueError`` otherwise."""
    arr = np.asarray(actions)
    if arr.shape != (num_envs,) or arr.dtype.kind not in "iu":  # integers (not bool: kind "b")
        raise ValueError(
            f"actions must be an integer array of shape ({num_envs},), got {actions!r} "
            f"(shape {arr.shape}, dtype {arr.dtype})"
        )
    bad = (arr < 0) | (arr >= n)
    if bad.any():
        raise ValueError(f"actions {arr[bad].tolist()} are not in the action space Discrete({n}) (0..{n - 1})")
    return arr.astype(np.int64)


SLOT0 = np.zeros(1, dtype=np.int64)


class RoutingEnv(gym.Env[dict[str, np.ndarray], int]):
    """Route one input through a backbone: exit early, skip a stage, or run it at a channel width.

    ## Description
    A routable backbone is a chain of stages with exit heads (docs/design.md §1). Each episode routes one
    input of a data split: at decision point ``k`` (before stage ``k``) the agent sees the current
    features and the prediction of the latest exit head, and chooses to stop or to go on. The reward
    trades accuracy against the multiply-accumulates (MACs) spent. ``routing_env/Cascade-v0`` is the
    cascade of classifiers of Guan et al. (IJCAI 2018); by default the shipped CIFAR-10 ResNet-8 →
    ResNet-20 → ResNet-56 cascade, routed from its feature caches with no image data.
    ``routing_env/DynamicResNet-v0`` is the dynamic ResNet of LC-Net / BlockDrop / SkipNet: a decision
    before every residual block (skip it, or run it at a channel width), exit heads after each stage,
    the chosen blocks executed for real on the images (by default the shipped CIFAR-10 ResNet-20).

    ## Action Space
    ``Discrete(2 + len(widths))``: ``0`` EXIT (predict with the latest head; ends the episode),
    ``1`` SKIP (stage ``k`` becomes the identity), ``2 + j`` RUN at width ``widths[j]``. The valid
    ones are in ``obs["action_mask"]`` and ``info["action_mask"]``. An action outside the space raises
    ``ValueError``; a valid-space action that is invalid here follows ``invalid_action``.

    ## Observation Space
    ``Dict``: ``features`` (D,) pooled activation, zero-padded; ``probs`` (C,) softmax of the latest
    exit head (zeros if none); ``position`` (N+1,) one-hot decision point; ``cost`` (1,) MACs spent /
    reference MACs; ``action_mask`` (A,) int8.

    ## Rewards
    Default ``1[correct] − λ·macs_fraction`` at the end of the episode; see ``routing_env.rewards``
    for cross-entropy, per-step charging, BlockDrop's reward and potential-based shaping, or name one of
    your own as ``module.path:name``. Computing a head to fill ``probs`` is charged. The terminal
    ``info["reward_terms"]`` holds each term summed over the episode (they add up to its return).

    ## Starting State
    An instance drawn uniformly from the split with ``self.np_random`` (or ``options={"index": i}``);
    the mandatory prefix (a cascade's first classifier, a ResNet's stem) has run and is charged.

    ## Episode End
    Terminates on EXIT (only EXIT is valid after the last stage): at most ``N + 1`` steps (with
    ``decide_at="head"``, at most one per decision point). Never truncates.

    ## Arguments
    See :class:`EnvConfig`: ``backbone``, ``dataset``, ``split``, ``lam``, ``reward``, ``max_macs``,
    ``target_macs``, ``target_lr``, ``cost``, ``invalid_action``, ``invalid_penalty``, ``allow_skip``,
    ``widths``, ``decide_at``, ``obs_mode``, ``train_backbone``,
    ``backbone_lr``, ``backbone_update_every``, ``backbone_targets``, ``backbone_augment``, ``backbone_weights``, ``device``, ``data_root``.

    ## Version History
    * v0: initial release (``DynamicResNet-v0`` and co-training since routing-env 0.2.0). Since
      routing-env 0.4.0 the terminal ``info["reward_terms"]`` are the episode's totals (before, the last
      step's); rewards, observations and dynamics are unchanged.
    """

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(self, render_mode: str | None = None, **options: Any) -> None:
        if render_mode is not None:
            raise ValueError(f"render_mode {render_mode!r} is not supported; expected None")
        self._setup(EnvConfig.from_options(options))

    @classmethod
    def from_config(cls, config: EnvConfig) -> RoutingEnv:
        """An environment with exactly these options (rewards and other objects are kept as they are;
        ``dataclasses.replace(config, …)`` makes a variant)."""
        env = cls.__new__(cls)
        env._setup(config)
        return env

    def _setup(self, config: EnvConfig) -> None:
        self.config = config
        self.core = build_core(self.config, 1)
        self.routing = RoutingView(self.core)
        """The read-only structure agents and reports use (:class:`~routing_env.core.RoutingView`)."""
        self.observation_space = observation_space(self.core)
        self.action_space = spaces.Discrete(self.core.num_actions)
        self._needs_reset = True

    @property
    def num_instances(self) -> int:
        """The number of instances in the split (``reset(options={"index": i})`` takes ``0 <= i <`` this)."""
        return self.core.num_instances

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        options = check_reset_options(options, ("index",))
        given = check_index(options["index"], self.num_instances) if "index" in options else None  # refused before anything changes
        super().reset(seed=seed)
        if seed is not None:
            self.core.seed_views(seed)
        index = given if given is not None else int(self.np_random.integers(self.num_instances))
        self.core.reset(SLOT0, np.array([index]))
        self._needs_reset = False
        return self._observation(), self._info(invalid=False)

    def step(self, action: Any) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        a = check_action(action, self.action_space)
        if self._needs_reset:
            raise ResetNeeded("call reset() before step(): the episode has ended or not started")
        result = self.core.step(SLOT0, np.array([a]))
        terminated = bool(result.terminated[0])
        info = self._info(invalid=bool(result.invalid[0]))
        if terminated:
            self._needs_reset = True
            info.update(
                prediction=int(result.prediction[0]),
                label=int(result.label[0]),
                correct=bool(result.correct[0]),
                exit_position=int(result.exit_position[0]),
                instance=int(result.instance[0]),
                route=result.route[0],
                reward_terms={name: float(v[0]) for name, v in result.terms.items()},
            )
        return self._observation(), float(result.reward[0]), terminated, False, info

    def action_masks(self) -> np.ndarray:
        """The valid actions now (bool), as sb3-contrib's MaskablePPO asks for them."""
        return self.core.action_mask(SLOT0)[0]

    def backbone_state_dict(self) -> dict[str, torch.Tensor]:
        """A copy of the weights of the backbone this environment runs (a co-trained one's current weights)."""
        return backbone_state_dict(self.core)

    def _observation(self) -> dict[str, np.ndarray]:
        return {key: value[0] for key, value in self.core.observation(SLOT0).items()}

    def _info(self, invalid: bool) -> dict[str, Any]:
        info = self.core.info(SLOT0)
        out = {
            "action_mask": info["action_mask"][0],
            "macs": float(info["macs"][0]),
            "macs_fraction": float(info["macs_fraction"][0]),
            "decision_point": int(info["decision_point"][0]),
            "invalid_action": invalid,
        }
        for key in ("lam", "cost_fraction"):  # budget targeting's price, a cost model's priced spend
            if key in info:
                out[key] = float(info[key][0])
        return out


def backbone_state_dict(core: RoutingCore) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in core.backbone.module.state_dict().items()}


TERMINAL_KEYS = ("prediction", "label", "correct", "exit_position", "instance", "route", "reward_terms")
"""The info keys of a step that ends an episode (masked to those episodes in a vector env)."""


def terminal_info(info: dict[str, Any]) -> dict[str, Any]:
    """The info dict that holds a vector step's terminal keys, whatever the autoreset mode: under
    ``SameStep`` they are in ``info["final_info"]`` (the top level then describes the new episodes)."""
    return info["final_info"] if "final_info" in info else info


def check_reset_options(options: dict[str, Any] | None, known: tuple[str, ...]) -> dict[str, Any]:
    """``reset``'s ``options`` (``{}`` for ``None``), refused before anything changes if a key is not one
    of ``known``: a misspelt ``index`` must not silently route a random instance."""
    options = options or {}
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ValueError(f"unknown reset options {unknown}; expected some of {list(known)}")
    return options


def check_index(index: Any, num_instances: int) -> int:
    if isinstance(index, (bool, np.bool_)) or not isinstance(index, (int, np.integer)) or not 0 <= index < num_instances:
        raise ValueError(f"options['index'] must be an integer in 0..{num_instances - 1}, got {index!r}")
    return int(index)


class RoutingVectorEnv(VectorEnv):
    """B routing episodes stepped in lock-step over the batched core (natively vectorised).

    Same options as :class:`RoutingEnv`, plus ``num_envs`` and ``autoreset_mode``: ``NextStep`` (the
    default), ``SameStep`` (``info["final_obs"]`` / ``info["final_info"]``) or ``Disabled`` (ended slots
    wait for ``reset(options={"reset_mask": m})``; stepping them raises ``ResetNeeded``), as
    Gymnasium's own vector environments. Infos are dicts of
    arrays with ``_key`` masks; the terminal keys (:data:`TERMINAL_KEYS`) are masked to the episodes
    that ended (:func:`terminal_info` finds them in either mode). ``reset`` accepts
    ``options={"index": array of num_envs indices}``, and ``options={"reset_mask": bool array}`` to
    start new episodes in the masked slots only (the others go on; a pending autoreset of a masked
    slot is done by this reset).
    """

    def __init__(self, num_envs: int = 1, autoreset_mode: str | AutoresetMode = AutoresetMode.NEXT_STEP, **options: Any) -> None:
        self._setup(EnvConfig.from_options(options), num_envs, autoreset_mode)

    @classmethod
    def from_config(
        cls, config: EnvConfig, num_envs: int = 1, autoreset_mode: str | AutoresetMode = AutoresetMode.NEXT_STEP
    ) -> RoutingVectorEnv:
        """A vector environment with exactly these options (rewards and other objects are kept as they
        are; ``dataclasses.replace(config, …)`` makes a variant)."""
        env = cls.__new__(cls)
        env._setup(config, num_envs, autoreset_mode)
        return env

    def _setup(self, config: EnvConfig, num_envs: int, autoreset_mode: str | AutoresetMode) -> None:
        if isinstance(num_envs, bool) or not isinstance(num_envs, (int, np.integer)) or num_envs < 1:
            raise ValueError(f"num_envs must be a positive integer, got {num_envs!r}")
        modes = (AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP, AutoresetMode.DISABLED)
        try:
            mode = AutoresetMode(autoreset_mode)
        except ValueError:
            mode = None
        if mode not in modes:
            raise ValueError(f"unknown autoreset_mode {autoreset_mode!r}; expected one of {[m.value for m in modes]}")
        self.metadata = {"autoreset_mode": mode, "render_modes": []}
        self.render_mode = None
        self.config = config
        self.num_envs = int(num_envs)
        self.core = build_core(self.config, self.num_envs)
        self.routing = RoutingView(self.core)
        """The read-only structure agents and reports use (:class:`~routing_env.core.RoutingView`)."""
        self.single_observation_space = observation_space(self.core)
        self.single_action_space = spaces.Discrete(self.core.num_actions)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self._slots = np.arange(self.num_envs)
        self._autoreset = np.zeros(self.num_envs, dtype=bool)
        self._needs_reset = True

    @property
    def autoreset_mode(self) -> AutoresetMode:
        return self.metadata["autoreset_mode"]

    @property
    def num_instances(self) -> int:
        return self.core.num_instances

    def backbone_state_dict(self) -> dict[str, torch.Tensor]:
        """A copy of the weights of the backbone this environment runs (a co-trained one's current weights)."""
        return backbone_state_dict(self.core)

    @property
    def views_generator(self) -> torch.Generator | None:
        """The generator of the fresh views under ``backbone_augment`` (part of a run's random state,
        which a checkpoint keeps), else ``None``."""
        views = self.core.executor.views
        return None if views is None else views.generator

    def sampled_cost(self) -> tuple[int, float]:
        """The episodes that have ended under ``target_macs`` and their total cost (a window's mean is the
        difference of two readings): what the dual ascent holds at the target."""
        if self.core.ascent is None:
            raise ValueError("sampled_cost needs an environment made with target_macs")
        return self.core.ascent.episodes, self.core.ascent.cost_sum

    def _draw(self, count: int) -> np.ndarray:
        return self.np_random.integers(self.num_instances, size=count)

    def reset(
        self, *, seed: int | list[int] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        if isinstance(seed, list):  # Gymnasium's per-env seeds; the batch draws from one stream, seeded by the first
            if len(seed) != self.num_envs:  # Gymnasium's own vector envs assert it
                raise ValueError(f"reset(seed=...) takes an integer, None, or a list of {self.num_envs} (one per "
                                 f"environment; the batch shares one stream, seeded by the first), got {len(seed)}: {seed!r}")
            seed = seed[0]
        options = check_reset_options(options, ("index", "reset_mask"))
        if "reset_mask" in options:
            if seed is not None:
                raise ValueError("reset(seed=...) cannot be combined with options['reset_mask']: a partial reset goes on with the current random stream")
            return self._partial_reset(options)
        given = self._given_indices(options["index"]) if "index" in options else None  # refused before anything changes
        if seed is not None or self._np_random is None:
            self._np_random, self._np_random_seed = seeding.np_random(seed)
        if seed is not None:
            self.core.seed_views(seed)
        indices = given if given is not None else self._draw(self.num_envs)
        self.core.reset(self._slots, indices)
        self._autoreset[:] = False
        self._needs_reset = False
        return self.core.observation(self._slots), self._info(np.zeros(self.num_envs, dtype=bool), None)

    def _given_indices(self, index: Any) -> np.ndarray:
        """``options["index"]``, one instance per environment, each checked."""
        indices = np.asarray(index)
        if indices.shape != (self.num_envs,):
            raise ValueError(f"options['index'] must have shape ({self.num_envs},), got {indices.shape}")
        return np.array([check_index(i, self.num_instances) for i in indices.tolist()])

    def _partial_reset(self, options: dict[str, Any]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """``reset(options={"reset_mask": m})``: new episodes in the slots where ``m`` is True, drawn from
        the current random stream; nothing changes (the stream included) if the call is refused."""
        mask = np.asarray(options["reset_mask"])
        if mask.shape != (self.num_envs,) or mask.dtype != np.bool_:
            raise ValueError(f"options['reset_mask'] must be a bool array of shape ({self.num_envs},), got {options['reset_mask']!r}")
        if set(options) - {"reset_mask"}:
            raise ValueError(f"options {sorted(set(options) - {'reset_mask'})} cannot be combined with reset_mask")
        if self._needs_reset:
            raise ResetNeeded("call reset() without reset_mask first: no episode has started")
        slots = self._slots[mask]
        if len(slots):
            self.core.reset(slots, self._draw(len(slots)))
        self._autoreset[mask] = False
        return self.core.observation(self._slots), self._info(np.zeros(self.num_envs, dtype=bool), None)

    def step(self, actions: Any) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        actions = check_actions(actions, self.num_envs, self.core.num_actions)
        if self._needs_reset:
            raise ResetNeeded("call reset() before step()")
        if self.autoreset_mode == AutoresetMode.DISABLED and self._autoreset.any():
            raise ResetNeeded(
                f"slots {np.flatnonzero(self._autoreset).tolist()} have ended and autoreset_mode is Disabled: "
                "restart them with reset(options={'reset_mask': mask}) before the next step"
            )
        b = self.num_envs
        restart = self._slots[self._autoreset]
        active = self._slots[~self._autoreset]
        result = None
        if len(active):  # first: if it raises (invalid_action="raise"), nothing has changed, restarts included
            result = self.core.step(active, actions[active])
            rewards = spread(result.reward, active, b)
            terminated = spread(result.terminated, active, b)
            invalid = spread(result.invalid, active, b)
        else:
            rewards, terminated, invalid = np.zeros(b), np.zeros(b, dtype=bool), np.zeros(b, dtype=bool)
        if len(restart):  # disjoint from the stepped slots, and a step draws nothing: the same draws as before it
            self.core.reset(restart, self._draw(len(restart)))
        truncated = np.zeros(b, dtype=bool)
        info = self._info(invalid, (active, result) if result is not None else None)
        if self.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP and terminated.any():
            ended = self._slots[terminated]
            final_obs = self.core.observation(ended)
            # Gymnasium's rule: final_info covers the slots that ended, so every key's mask is cut to them
            final_info = {k: v & terminated if k.startswith("_") else v for k, v in info.items()}
            self.core.reset(ended, self._draw(len(ended)))
            info = self._info(invalid & ~terminated, None)  # the slots that go on keep their flag
            info["final_obs"] = np.full(b, None, dtype=object)
            for j, i in enumerate(ended.tolist()):
                info["final_obs"][i] = {k: v[j] for k, v in final_obs.items()}
            info["_final_obs"] = terminated.copy()
            info["final_info"] = final_info
            info["_final_info"] = terminated.copy()
            self._autoreset[:] = False
        else:
            self._autoreset = terminated.copy()
        return self.core.observation(self._slots), rewards, terminated, truncated, info

    def action_masks(self) -> np.ndarray:
        """(num_envs, A) bool: the valid actions of every episode now."""
        return self.core.action_mask(self._slots)

    def _info(self, invalid: np.ndarray, stepped: tuple[np.ndarray, Any] | None) -> dict[str, Any]:
        b = self.num_envs
        every = np.ones(b, dtype=bool)
        info: dict[str, Any] = {}
        for key, value in self.core.info(self._slots).items():
            info[key], info[f"_{key}"] = value, every
        info["invalid_action"], info["_invalid_action"] = invalid, every
        if stepped is None:
            return info
        active, result = stepped
        ended = spread(result.terminated, active, b).copy()  # not the returned `terminated` itself
        if not ended.any():
            return info
        for key in ("prediction", "label", "correct", "exit_position", "instance", "route"):
            info[key], info[f"_{key}"] = spread(getattr(result, key), active, b), ended
        info["reward_terms"] = {name: spread(value, active, b) for name, value in result.terms.items()}
        info["_reward_terms"] = ended
        return info


def spread(values: np.ndarray, active: np.ndarray, num_envs: int) -> np.ndarray:
    """Rows over all ``num_envs`` slots: ``values`` of the ``active`` slots (in order), zeros
    elsewhere; ``values`` itself when every slot is active."""
    if len(active) == num_envs:
        return values
    column = np.zeros((num_envs, *values.shape[1:]), dtype=values.dtype)
    column[active] = values
    return column


def registered_id(env: RoutingEnv | RoutingVectorEnv) -> str:
    """The registered id that builds an environment like ``env``: ``DynamicResNet-v0`` for a dynamic
    ResNet, ``Cascade-v0`` for anything else (a cascade, a custom family)."""
    from .backbones import DynamicResNetBackbone

    return "routing_env/DynamicResNet-v0" if isinstance(env.core.backbone, DynamicResNetBackbone) else "routing_env/Cascade-v0"


FAMILY_NAMES = {"routing_env/Cascade-v0": "a cascade", "routing_env/DynamicResNet-v0": "a dynamic ResNet"}
"""What each registered id routes, as an error message names it."""


def refuse_other_family(env: RoutingEnv | RoutingVectorEnv, env_id: str) -> None:
    """Refuse a built-in backbone family that is not the registered id's: ``Cascade-v0`` with a dynamic
    ResNet (or the reverse) would run, under a name that says otherwise. Custom families pass."""
    from .backbones import Cascade, DynamicResNetBackbone

    own = registered_id(env)
    if own != env_id and isinstance(env.core.backbone, (Cascade, DynamicResNetBackbone)):
        env.close()
        raise ValueError(f"{env_id} got backbone {env.config.backbone!r}, which is {FAMILY_NAMES[own]}; use {own} for it")


def make_env(**options: Any) -> gym.Env:
    """The registered ids' entry point: a :class:`RoutingEnv`, wrapped in
    :class:`~routing_env.cotraining.CoTrainBackboneEnv` when ``train_backbone=True``."""
    from .cotraining import CoTrainBackboneEnv

    env = RoutingEnv(**options)
    return CoTrainBackboneEnv(env) if env.config.train_backbone else env


def make_vector_env(num_envs: int = 1, autoreset_mode: str | AutoresetMode = AutoresetMode.NEXT_STEP, **options: Any) -> VectorEnv:
    """The registered ids' vector entry point: a :class:`RoutingVectorEnv`, wrapped in
    :class:`~routing_env.cotraining.CoTrainBackbone` when ``train_backbone=True``."""
    from .cotraining import CoTrainBackbone

    env = RoutingVectorEnv(num_envs, autoreset_mode, **options)
    return CoTrainBackbone(env) if env.config.train_backbone else env


def of_family(make: Callable[..., Any], env_id: str, *args: Any, **options: Any) -> Any:
    """``make(*args, **options)`` (:func:`make_env` or :func:`make_vector_env`), refused by
    :func:`refuse_other_family` unless its backbone is ``env_id``'s family."""
    env = make(*args, **options)
    refuse_other_family(env.unwrapped, env_id)
    return env


# the registered ids' entry points (routing_env/__init__.py), single and vector
make_cascade_env = partial(of_family, make_env, "routing_env/Cascade-v0")
make_dynamic_env = partial(of_family, make_env, "routing_env/DynamicResNet-v0")
make_cascade_vector_env = partial(of_family, make_vector_env, "routing_env/Cascade-v0")
make_dynamic_vector_env = partial(of_family, make_vector_env, "routing_env/DynamicResNet-v0")
