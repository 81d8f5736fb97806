"""Rewards by name: the built-in spec strings (``accuracy``, ``accuracy-hinge[budget=0.3]``, …), their
parameters and descriptions, and rewards of one's own named ``module.path:name[…]``. A spec string is
what ``train``, ``sweep``, ``study`` and a run's ``config.json`` carry; :func:`make_reward` builds it."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Any

from ..plugins import import_named, option_value, source_sha256
from .base import RewardFn
from .shaping import ConfidenceShaping, PotentialShaping
from .terms import BlockDropReward, ComputePenalty, Correctness, DenseConfidence, HingePenalty, NegCrossEntropy


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
    "blockdrop": ("1 − min(cost_fraction, 1)² if correct, else −γ (γ = λ, or blockdrop[gamma=…] with λ unused)", BlockDropReward.source),
    "accuracy-shaped": ("accuracy plus γΦ(s') − Φ(s), Φ = max softmax", PotentialShaping.source),
    "accuracy-margin-shaped": ("accuracy plus shaping with Φ = top-1 minus top-2 probability", PotentialShaping.source),
    "accuracy-entropy-shaped": ("accuracy plus shaping with Φ = −entropy of the softmax", PotentialShaping.source),
    "accuracy-hinge": ("1[correct] − λ·max(0, cost_fraction − budget): compute free up to the budget (default half the reference)",
                       HingePenalty.source),
    "dense": ("per step: Δp(true class) − λ·step_cost_fraction", DenseConfidence.source),
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
