"""Reward strategies (docs/design.md §4), batched: every term is an array over the episodes of a step.

A reward function maps an :class:`Outcome` to ``(reward, terms)``; ``terms`` names each component
per step, and ``reward`` is their sum; summed over an episode they are its terminal
``info["reward_terms"]``. Functions compose with ``+``.
"""

from __future__ import annotations

import abc
import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .plugins import import_named, option_value, source_sha256
from .validation import check_number


@dataclass(frozen=True)
class Outcome:
    """What happened in one step, for B episodes. Terminal fields are meaningful where ``terminated``."""

    terminated: np.ndarray
    """(B,) bool: the episode ended with EXIT this step."""
    correct: np.ndarray
    """(B,) bool: the prediction is right (terminal steps)."""
    cross_entropy: np.ndarray
    """(B,) float: cross-entropy of the chosen exit's logits against the label (terminal steps; 0 elsewhere;
    NaN when the reward function says it does not use it)."""
    macs_fraction: np.ndarray
    """(B,) float: MACs of the whole episode so far / reference MACs."""
    step_macs_fraction: np.ndarray
    """(B,) float: MACs charged to this step / reference MACs (the first step carries the prefix)."""
    invalid: np.ndarray
    """(B,) bool: the action was replaced by a valid one."""
    potential_before: np.ndarray
    """(B,) float: max softmax probability before the step (0 when no head was evaluated)."""
    potential_after: np.ndarray
    """(B,) float: the same after the step."""
    probs_before: np.ndarray | None = None
    """(B, C): the softmax the agent saw before the step (zeros when no head was evaluated); only for
    rewards that declare ``uses_probs``, else ``None``."""
    probs_after: np.ndarray | None = None
    """(B, C): the same after the step."""
    label: np.ndarray | None = None
    """(B,) int: the true class (``uses_probs`` rewards only)."""
    cost_fraction: np.ndarray = None  # type: ignore[assignment]
    """(B,) float: the priced cost of the whole episode so far / the reference's, what compute terms
    charge (:mod:`routing_env.latency`); ``macs_fraction`` when not given (``cost="macs"``)."""
    step_cost_fraction: np.ndarray = None  # type: ignore[assignment]
    """(B,) float: the priced cost charged to this step / the reference's; ``step_macs_fraction`` when not given."""
    position_before: np.ndarray | None = None
    """(B,) int: the decision point the step was taken at, 0 … ``num_stages`` (the observation's
    ``position``), so that a reward can price or shape by depth (a potential of the position)."""
    position_after: np.ndarray | None = None
    """(B,) int: the decision point after the step (on a terminal step, where EXIT was taken; the head
    that predicted is at ``exit_position``, which may lie before it)."""
    num_stages: int | None = None
    """N, the number of stages: ``position / num_stages`` is the share of the decision points passed."""

    def __post_init__(self) -> None:
        if self.cost_fraction is None:
            object.__setattr__(self, "cost_fraction", self.macs_fraction)
        if self.step_cost_fraction is None:
            object.__setattr__(self, "step_cost_fraction", self.step_macs_fraction)


Terms = dict[str, np.ndarray]


class RewardFn(abc.ABC):
    """A reward: ``fn(outcome) -> (reward, terms)``.

    ``uses_cross_entropy`` (default ``True``) tells the environment whether to compute
    ``outcome.cross_entropy``; a reward that sets it ``False`` receives NaN there. ``uses_probs``
    (default ``False``) asks for ``probs_before``, ``probs_after`` and ``label``. ``terminal_only``
    (default ``False``) declares every term zero before the terminal step, so the environment need
    not sum the terms over an episode for ``info["reward_terms"]`` (the last step's are the
    episode's); only a class's own declaration counts (:func:`terminal_only`), so a subclass that adds
    a per-step term is summed. A reward returns the same term names on every step. ``source`` names
    the paper a formulation comes from (``routing-env rewards --json`` lists it).
    """

    uses_cross_entropy: bool = True
    uses_probs: bool = False
    terminal_only: bool = False
    source: str = ""

    @abc.abstractmethod
    def terms(self, outcome: Outcome) -> Terms:
        """The named components of the reward."""

    def __call__(self, outcome: Outcome) -> tuple[np.ndarray, Terms]:
        terms = self.terms(outcome)
        reward = np.zeros(len(outcome.terminated), dtype=np.float64)
        for value in terms.values():
            reward += value
        return reward, terms

    def __add__(self, other: RewardFn) -> RewardFn:
        return Sum(self, other)


def terminal_only(fn: RewardFn) -> bool:
    """Whether every term of ``fn`` is zero before the terminal step, as its class itself declares
    (``RewardFn.terminal_only`` set in the class body, not inherited; a ``Sum``: every part)."""
    if isinstance(fn, Sum):
        return all(terminal_only(part) for part in fn.parts)
    return "terminal_only" in type(fn).__dict__ and bool(fn.terminal_only)


class Sum(RewardFn):
    """The sum of several reward functions; term names must not clash."""

    def __init__(self, *parts: RewardFn) -> None:
        self.parts: tuple[RewardFn, ...] = tuple(
            q for p in parts for q in (p.parts if isinstance(p, Sum) else (p,))
        )

    @property
    def uses_cross_entropy(self) -> bool:  # type: ignore[override]
        return any(part.uses_cross_entropy for part in self.parts)

    @property
    def uses_probs(self) -> bool:  # type: ignore[override]
        return any(part.uses_probs for part in self.parts)

    def terms(self, outcome: Outcome) -> Terms:
        out: Terms = {}
        for part in self.parts:
            for name, value in part.terms(outcome).items():
                if name in out:
                    raise ValueError(f"reward term {name!r} appears twice in {self!r}")
                out[name] = value
        return out

    def __repr__(self) -> str:
        return " + ".join(repr(p) for p in self.parts)


@dataclass(frozen=True)
class Correctness(RewardFn):
    """``correct`` if the terminal prediction is right, else ``incorrect``."""

    uses_cross_entropy = False
    terminal_only = True
    source = "Guan et al., IJCAI 2018"

    correct: float = 1.0
    incorrect: float = 0.0

    def terms(self, outcome: Outcome) -> Terms:
        value = np.where(outcome.correct, self.correct, self.incorrect)
        return {"correct": np.where(outcome.terminated, value, 0.0)}


@dataclass(frozen=True)
class NegCrossEntropy(RewardFn):
    """``-cross_entropy`` of the chosen exit at termination."""

    terminal_only = True

    def terms(self, outcome: Outcome) -> Terms:
        return {"cross_entropy": np.where(outcome.terminated, -outcome.cross_entropy, 0.0)}


@dataclass(frozen=True)
class ComputePenalty(RewardFn):
    """``-lam · macs_fraction``, charged at termination or per step as spent (same undiscounted sum)."""

    uses_cross_entropy = False

    lam: float
    per_step: bool = False

    def __post_init__(self) -> None:
        if not self.lam >= 0:
            raise ValueError(f"lam must be >= 0, got {self.lam}")

    @property
    def terminal_only(self) -> bool:  # type: ignore[override]
        return not self.per_step

    def terms(self, outcome: Outcome) -> Terms:
        if self.per_step:
            return {"compute": -self.lam * outcome.step_cost_fraction}
        return {"compute": np.where(outcome.terminated, -self.lam * outcome.cost_fraction, 0.0)}


@dataclass(frozen=True)
class BlockDropReward(RewardFn):
    """BlockDrop (Wu et al. 2018): ``1 - min(cost_fraction, 1)²`` if correct, else ``-gamma``.

    The cap matters where a route can cost more than the reference (a cascade that runs every member
    pays 1.42 of ResNet-56 alone): uncapped, a right answer there would score below a wrong one."""

    uses_cross_entropy = False
    terminal_only = True
    source = "Wu et al., BlockDrop, CVPR 2018"

    gamma: float = 1.0

    def __post_init__(self) -> None:
        if not 0 <= self.gamma < float("inf"):
            raise ValueError(f"BlockDrop's gamma (the penalty of a wrong answer) must be a finite number >= 0, got {self.gamma}")

    def terms(self, outcome: Outcome) -> Terms:
        value = np.where(outcome.correct, 1.0 - np.minimum(outcome.cost_fraction, 1.0) ** 2, -self.gamma)
        return {"blockdrop": np.where(outcome.terminated, value, 0.0)}


@dataclass(frozen=True)
class InvalidActionPenalty(RewardFn):
    """``-penalty`` on each step whose action was invalid (``invalid_action="penalize"``)."""

    uses_cross_entropy = False

    penalty: float = 0.1

    def terms(self, outcome: Outcome) -> Terms:
        return {"invalid": np.where(outcome.invalid, -self.penalty, 0.0)}


@dataclass(frozen=True)
class ConfidenceShaping(RewardFn):
    """Potential-based shaping ``F = γΦ(s') − Φ(s)`` (Ng et al. 1999), Φ = max softmax probability.

    Φ is 0 after termination, so with ``gamma=1`` the shaping sums to ``-Φ(s_0)`` on every episode and
    leaves the optimal policy unchanged while rewarding steps that raise confidence.
    """

    uses_cross_entropy = False
    source = "Ng, Harada, Russell, ICML 1999 (potential-based shaping)"

    gamma: float = 1.0
    scale: float = 1.0

    def __post_init__(self) -> None:
        check_shaping(self.gamma, self.scale)

    def terms(self, outcome: Outcome) -> Terms:
        after = np.where(outcome.terminated, 0.0, outcome.potential_after)
        return {"shaping": self.scale * (self.gamma * after - outcome.potential_before)}


def check_shaping(gamma: float, scale: float) -> None:
    """A shaping's γ is a discount, in [0, 1] (a negative one rewards a fall in confidence), and its
    scale a finite number."""
    check_number("gamma", gamma, low=0, high=1, hint=" (the shaping's discount)")
    check_number("scale", scale)


def potential(probs: np.ndarray, kind: str) -> np.ndarray:
    """Φ of a batch of softmax rows (B, C): ``max-prob``, ``margin`` (top-1 minus top-2) or
    ``neg-entropy`` (−H, in [−log C, 0]); 0 for rows with no head evaluated yet (all zeros)."""
    seen = probs.sum(axis=1) > 0
    if kind == "max-prob":
        value = probs.max(axis=1)
    elif kind == "margin":
        top = np.sort(probs, axis=1)
        value = top[:, -1] - top[:, -2]
    elif kind == "neg-entropy":
        with np.errstate(divide="ignore", invalid="ignore"):
            value = np.where(probs > 0, probs * np.log(probs), 0.0).sum(axis=1)
    else:
        raise ValueError(f"unknown potential {kind!r}; expected one of {POTENTIALS}")
    return np.where(seen, value, 0.0)


POTENTIALS = ("max-prob", "margin", "neg-entropy")


@dataclass(frozen=True)
class PotentialShaping(RewardFn):
    """Potential-based shaping ``F = γΦ(s') − Φ(s)`` (Ng et al. 1999) with Φ one of :data:`POTENTIALS`
    of the softmax the agent sees: the confidence margin, or the negative entropy. Φ is 0 after
    termination, so with ``gamma=1`` an episode's shaping sums to ``−Φ(s_0)``: the optimal policy is
    unchanged (a test checks the sum on both families)."""

    uses_cross_entropy = False
    uses_probs = True
    source = "Ng, Harada, Russell, ICML 1999 (potential-based shaping)"

    potential: str = "margin"
    gamma: float = 1.0
    scale: float = 1.0

    def __post_init__(self) -> None:
        if self.potential not in POTENTIALS:
            raise ValueError(f"unknown potential {self.potential!r}; expected one of {POTENTIALS}")
        check_shaping(self.gamma, self.scale)

    def terms(self, outcome: Outcome) -> Terms:
        after = np.where(outcome.terminated, 0.0, potential(outcome.probs_after, self.potential))
        return {"shaping": self.scale * (self.gamma * after - potential(outcome.probs_before, self.potential))}


@dataclass(frozen=True)
class HingePenalty(RewardFn):
    """``−lam · max(0, macs_fraction − budget)`` at termination: compute is free up to a budget and
    priced beyond it (a soft version of the hard ``max_macs``)."""

    uses_cross_entropy = False
    terminal_only = True
    source = "hinge-loss budget penalty, as in budgeted dynamic networks (e.g. Bejnordi et al., ICLR 2020)"

    lam: float
    budget: float = 0.5

    def __post_init__(self) -> None:
        if not self.lam >= 0 or not self.budget > 0:
            raise ValueError(f"hinge penalty needs lam >= 0 and budget > 0, got {self.lam} and {self.budget}")

    def terms(self, outcome: Outcome) -> Terms:
        over = np.maximum(outcome.cost_fraction - self.budget, 0.0)
        return {"compute": np.where(outcome.terminated, -self.lam * over, 0.0)}


@dataclass(frozen=True)
class DenseConfidence(RewardFn):
    """A dense reward per step: the change in the true class's probability minus the step's compute
    ``−lam · step_macs_fraction``; the episode's sum is the final head's ``p(y)`` minus the first one's,
    minus ``lam · macs_fraction``."""

    uses_cross_entropy = False
    uses_probs = True
    source = "dense progress reward, cf. SkipNet's hybrid RL (Wang et al., ECCV 2018) and Runtime Neural Pruning (Lin et al., NeurIPS 2017)"

    lam: float

    def __post_init__(self) -> None:
        if not self.lam >= 0:
            raise ValueError(f"lam must be >= 0, got {self.lam}")

    def terms(self, outcome: Outcome) -> Terms:
        rows = np.arange(len(outcome.label))
        gain = outcome.probs_after[rows, outcome.label] - outcome.probs_before[rows, outcome.label]
        return {"progress": gain, "compute": -self.lam * outcome.step_cost_fraction}


def _shaped(potential_kind: str | None) -> Callable[..., RewardFn]:
    """``accuracy`` plus potential-based shaping with Φ of ``potential_kind`` (``None``: max softmax)."""
    def build(lam: float, gamma: float = 1.0, scale: float = 1.0) -> RewardFn:
        shaping = (ConfidenceShaping(gamma, scale) if potential_kind is None
                   else PotentialShaping(potential_kind, gamma, scale))
        return Correctness() + ComputePenalty(lam) + shaping
    return build


BUILDERS: dict[str, Callable[..., RewardFn]] = {
    "accuracy": lambda lam: Correctness() + ComputePenalty(lam),
    "accuracy-per-step": lambda lam: Correctness() + ComputePenalty(lam, per_step=True),
    "cross-entropy": lambda lam: NegCrossEntropy() + ComputePenalty(lam),
    "cross-entropy-per-step": lambda lam: NegCrossEntropy() + ComputePenalty(lam, per_step=True),
    "blockdrop": lambda lam, gamma=None: BlockDropReward(gamma=lam if gamma is None else gamma),  # None: γ = λ
    "accuracy-shaped": _shaped(None),
    "accuracy-margin-shaped": _shaped("margin"),
    "accuracy-entropy-shaped": _shaped("neg-entropy"),
    "accuracy-hinge": lambda lam, budget=0.5: Correctness() + HingePenalty(lam, budget),
    "dense": lambda lam: DenseConfidence(lam),
}
"""Each built-in spec's ``builder(lam, **parameters)``; a parameter's default is its keyword default
(:func:`reward_parameters`), set per spec string as ``name[key=value,…]`` (:func:`parse_spec`)."""

REWARD_SPECS = tuple(BUILDERS)

REWARD_DESCRIPTIONS: dict[str, tuple[str, str]] = {
    "accuracy": ("1[correct] − λ·macs_fraction at the end (the default)", "Guan et al., IJCAI 2018"),
    "accuracy-per-step": ("the same, compute charged per step as spent (same undiscounted return)", "Guan et al., IJCAI 2018"),
    "cross-entropy": ("−CE(chosen exit) − λ·macs_fraction at the end", "Guan et al., IJCAI 2018 (the classifier's loss as reward)"),
    "cross-entropy-per-step": ("the same, compute charged per step", "Guan et al., IJCAI 2018"),
    "blockdrop": ("1 − macs_fraction² if correct, else −γ (γ = λ, or blockdrop[gamma=…] with λ unused)", BlockDropReward.source),
    "accuracy-shaped": ("accuracy plus γΦ(s') − Φ(s), Φ = max softmax", PotentialShaping.source),
    "accuracy-margin-shaped": ("accuracy plus shaping with Φ = top-1 minus top-2 probability", PotentialShaping.source),
    "accuracy-entropy-shaped": ("accuracy plus shaping with Φ = −entropy of the softmax", PotentialShaping.source),
    "accuracy-hinge": ("1[correct] − λ·max(0, macs_fraction − budget): compute free up to the budget (default half the reference)",
                       HingePenalty.source),
    "dense": ("per step: Δp(true class) − λ·step_macs_fraction", DenseConfidence.source),
}
"""Each spec's one-line description and its source (``routing-env rewards --json``)."""


def parse_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """``name[key=value,…]`` as ``(name, {key: value})``; a value that parses as JSON (a number,
    ``true``) is taken as such, else as a string, as ``--env-kwargs`` reads its values. A plain
    ``name`` has no parameters. So a grid over a reward's own parameter (a hinge's budget, a shaping's
    γ) is a list of spec strings, and each stays one string in a run's ``config.json``."""
    name, bracket, body = spec.partition("[")
    if not bracket:
        if "]" in spec:
            raise ValueError(f"malformed reward {spec!r}: a ']' with no '['; expected 'name' or 'name[key=value,...]'")
        return spec, {}
    if not body.endswith("]") or "[" in body or "]" in body[:-1] or not name:
        raise ValueError(f"malformed reward {spec!r}; expected 'name' or 'name[key=value,...]'")
    params: dict[str, Any] = {}
    for item in body[:-1].split(","):
        key, sep, raw = (part.strip() for part in item.partition("="))
        if not sep or not key.isidentifier():
            raise ValueError(f"malformed reward {spec!r}: parameter {item.strip()!r} is not of the form key=value")
        if key in params:
            raise ValueError(f"malformed reward {spec!r}: parameter {key!r} is given twice")
        params[key] = option_value(raw)
    return name, params


def split_specs(raw: str) -> tuple[str, ...]:
    """A comma-separated list of reward specs, splitting only outside brackets:
    ``accuracy,accuracy-shaped[gamma=0.9,scale=2]`` is two specs (``--rewards`` of ``routing-env study``)."""
    specs, depth, start = [], 0, 0
    for i, char in enumerate(raw):
        depth += {"[": 1, "]": -1}.get(char, 0)
        if char == "," and depth == 0:
            specs.append(raw[start:i])
            start = i + 1
    specs.append(raw[start:])
    return tuple(s.strip() for s in specs if s.strip())


def spec_name(spec: object) -> object:
    """A spec string's name without its parameters (``accuracy-hinge`` of ``accuracy-hinge[budget=0.3]``);
    anything else as it is."""
    return spec.partition("[")[0] if isinstance(spec, str) else spec


def reward_parameters(name: str) -> dict[str, Any]:
    """The parameters a built-in spec takes beside λ, with their defaults (its builder's keywords;
    ``None``: set from λ, as BlockDrop's γ is)."""
    signature = inspect.signature(BUILDERS[name])
    return {p.name: p.default for p in list(signature.parameters.values())[1:]}


def show_default(value: Any) -> str:
    """A parameter's default as the CLI and the errors print it (``None``, set from λ, as ``λ``)."""
    return "λ" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


def canonical_spec(spec: str) -> str:
    """``spec`` with its parameters sorted and, for a built-in, its defaults filled in, so that two
    spellings of one reward compare equal (``accuracy-hinge`` and ``accuracy-hinge[budget=0.5]``;
    ``[ budget=0.30 ]``): what a study checks its rewards for repeats by."""
    name, params = parse_spec(spec)
    if not is_custom(spec) and name in BUILDERS:
        params = {**{k: v for k, v in reward_parameters(name).items() if v is not None}, **params}
    shown = {k: (float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v) for k, v in params.items()}
    return name + (f"[{','.join(f'{k}={shown[k]!r}' for k in sorted(shown))}]" if shown else "")


def is_custom(spec: object) -> bool:
    """Whether ``spec`` names a reward of one's own, ``module.path:name`` (:func:`custom_reward`)."""
    return isinstance(spec, str) and ":" in spec.partition("[")[0]


def reward_fingerprint(spec: object) -> dict[str, str]:
    """``{"reward_sha256": …}`` for a reward named by module path, the sha256 of its module's source
    (the name stays when the code changes: a run records it, a sweep compares it before reusing one);
    ``{}`` for a built-in spec or an object."""
    return {"reward_sha256": source_sha256(str(spec_name(spec)))} if is_custom(spec) else {}


def reward_factory(spec: str) -> Callable[..., RewardFn]:
    """The callable ``module.path:name`` names (imported; parameters in brackets left aside), refused by
    name if it is not there."""
    factory = import_named(str(spec_name(spec)), "reward", "module.path:name")
    if not callable(factory):
        raise ValueError(f"custom reward {spec!r} is a {type(factory).__name__}, expected a RewardFn class or a function of lam")
    return factory


def custom_reward(spec: str, lam: float) -> RewardFn:
    """The reward ``module.path:name`` names: ``name(lam, **parameters)`` from an importable module, a
    ``RewardFn`` class whose constructor takes λ or a function returning a ``RewardFn``; parameters as
    in ``module.path:name[gamma=0.9,scale=2]`` (:func:`parse_spec`). A string, unlike an object, goes
    where spec strings go (``train``, ``sweep``, ``study``, a run's ``config.json``), so a reward of
    one's own is studied as the built-in ones are (as ``--agent module.path:ClassName`` is for agents)."""
    _, params = parse_spec(spec)
    factory = reward_factory(spec)
    try:
        inspect.signature(factory).bind(lam, **params)
    except TypeError as e:
        raise ValueError(f"custom reward {spec!r} cannot be called as {getattr(factory, '__name__', spec_name(spec))}(lam"
                         f"{''.join(f', {k}={v!r}' for k, v in params.items())}): {e}") from None
    except ValueError:  # a callable with no signature to read: let the call itself say what is wrong
        pass
    reward = factory(lam, **params)
    if not isinstance(reward, RewardFn):
        raise TypeError(f"custom reward {spec!r}: it returned a {type(reward).__name__} for lam={lam}, expected a "
                        "routing_env.rewards.RewardFn")
    return reward


def describe(spec: str) -> tuple[str, str]:
    """A spec's one-line description and source: :data:`REWARD_DESCRIPTIONS` (with its parameters, if
    set), or for a custom reward the first line of its factory's docstring and the reward's ``source``
    (else the spec itself)."""
    name, params = parse_spec(spec)
    if not is_custom(spec):
        description, source = REWARD_DESCRIPTIONS[name]
        return (f"{description}; with {', '.join(f'{k}={v}' for k, v in params.items())}" if params else description), source
    doc = (reward_factory(spec).__doc__ or "").strip()
    return (doc.splitlines()[0] if doc else spec), custom_reward(spec, 0.0).source or spec


def builtin_reward(spec: str, lam: float) -> RewardFn:
    """A built-in spec, ``name`` or ``name[key=value,…]``, built with λ; an unknown name or parameter,
    or a parameter that is not a finite number, refused naming it and what is accepted."""
    name, params = parse_spec(spec)
    if name not in BUILDERS:
        raise ValueError(f"unknown reward {spec!r}; expected one of {REWARD_SPECS}, 'module.path:name' or a RewardFn")
    accepted = reward_parameters(name)
    for key, value in params.items():
        if key not in accepted:
            raise ValueError(f"reward {spec!r}: {name!r} takes no parameter {key!r}; it takes "
                             f"{', '.join(f'{k} (default {show_default(v)})' for k, v in accepted.items()) or 'none beside lam'}")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"reward {spec!r}: {key} must be a finite number, got {value!r}")
    try:
        return BUILDERS[name](lam, **{k: float(v) for k, v in params.items()})
    except ValueError as e:  # a term's own range check (a hinge's budget > 0), named by the spec
        raise ValueError(f"reward {spec!r}: {e}") from None


def make_reward(spec: str | RewardFn, lam: float) -> RewardFn:
    """A reward function from an object, a spec string (see ``REWARD_SPECS``), optionally with
    parameters (``accuracy-hinge[budget=0.3]``, ``accuracy-shaped[gamma=0.99,scale=2]``), or
    ``module.path:name[…]`` (:func:`custom_reward`).

    ``accuracy``: ``1[correct] − λ·macs_fraction`` at the end (the default); ``-per-step`` charges the
    compute as it is spent; ``cross-entropy``: ``−CE − λ·macs_fraction``; ``blockdrop``: BlockDrop's
    ``1 − macs_fraction²`` or ``−γ`` with ``γ = λ`` (or ``blockdrop[gamma=…]``, as in the paper, where λ
    prices nothing); ``accuracy-shaped``: ``accuracy`` plus
    confidence shaping (``gamma``, ``scale``); ``accuracy-hinge``: compute free up to ``budget``.
    """
    if isinstance(spec, RewardFn):
        return spec
    if not isinstance(spec, str):
        raise TypeError(f"reward must be a RewardFn, one of {REWARD_SPECS} or 'module.path:name', each optionally with "
                        f"'[key=value,...]' parameters, got {spec!r}")
    if not lam >= 0:
        raise ValueError(f"lam must be >= 0, got {lam}")
    return custom_reward(spec, lam) if is_custom(spec) else builtin_reward(spec, lam)
