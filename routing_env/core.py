"""The batched routing core: positions, masks, costs, rewards and termination for B episodes.

Both :class:`routing_env.env.RoutingEnv` (B = 1) and :class:`routing_env.env.RoutingVectorEnv` are
views over this one implementation; nothing here knows about Gymnasium.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import kernels
from .backbones.base import BackboneSpec, CostTable, RoutableBackbone
from .rewards import InvalidActionPenalty, Outcome, RewardFn, terminal_only
from .validation import check_number

EXIT = 0
SKIP = 1
RUN = 2
"""Action codes: ``EXIT``, ``SKIP``, then ``RUN + j`` runs at ``widths[j]``."""

INVALID_ACTION_MODES = ("fallback", "penalize", "raise")

DECIDE_AT = ("block", "head")
"""Where the policy decides: before every block (``block``), or only at the start and where an exit
head has just been read (``head``; in between, the move decided last repeats). See :func:`decision_points`."""


def decision_points(has_head: np.ndarray, decide_at: str) -> np.ndarray:
    """(N+1,) bool: the points where the policy is asked for a move under ``decide_at``.

    ``head`` asks at point 0 and at every point with an exit head, and repeats the move decided last
    (as resolved at its decision point) at the points between, each repeat resolved again by the
    usual fallback where it is invalid there (over the budget: a narrower width, or EXIT). On a
    dynamic ResNet with a head after each stage that is one move per stage and the exit choice at
    each head, four decisions instead of ten: at batch 1 each decision costs its observation (pooled
    features, numpy views, mask) and the policy's forward, which with ten of them cost half as much
    again as the blocks (issue 20). A stage whose first block cannot be skipped (a downsampling one)
    cannot be skipped either: SKIP is masked at its decision point, so on the CIFAR ResNets only stage
    1 can be skipped, whole. Where every point has a head (a cascade, or a head after every block)
    both modes are the same."""
    if decide_at not in DECIDE_AT:
        raise ValueError(f"unknown decide_at {decide_at!r}; expected one of {DECIDE_AT}")
    if decide_at == "block":
        return np.ones(len(has_head), dtype=bool)
    points = np.asarray(has_head, dtype=bool).copy()
    points[0] = True
    return points

def skip_offered(allow_skip: bool | None, skip_by_default: bool) -> bool:
    """Whether SKIP is offered: ``allow_skip``, else (``None``) the backbone's default. The one rule of
    the environment's option and :class:`~routing_env.routed.RoutedModel`'s, so that a policy deploys
    with the move set it learned; anything but a bool or ``None`` is refused (``"False"`` is truthy)."""
    if allow_skip is not None and not isinstance(allow_skip, bool):
        raise ValueError(f"allow_skip must be true, false or None (the backbone's default), got {allow_skip!r}")
    return skip_by_default if allow_skip is None else allow_skip

BUDGET_TOLERANCE = 1e-9
"""Relative slack of the hard budget, so that a route costing exactly ``max_macs`` fits despite rounding."""

NOT_REACHED = -2
"""In a route, the choice of a stage the episode never reached (``SKIP_CHOICE`` = -1 is a skip; a width
index is a run)."""


def fits(macs: Any, committed: Any, budget: float) -> Any:
    """Whether spending ``committed`` more MACs after ``macs`` stays within ``budget``: the budget rule,
    for numpy arrays and torch tensors (:class:`~routing_env.routed.RoutedModel`). The environment's
    compiled mask (:func:`routing_env.kernels.update_masks`) applies it row by row; a test holds the two equal."""
    return macs[:, None] + committed <= budget * (1 + BUDGET_TOLERANCE)


def fallback_order(action: int, num_widths: int) -> list[int]:
    """The replacements of an invalid ``action``, nearest first (the first valid one is taken).

    - ``RUN(w)``: the narrower widths from ``w`` down, then the wider ones up, then ``SKIP``, then
      ``EXIT`` (a RUN over the budget becomes the widest RUN that fits, and ends the episode only
      when no RUN or SKIP fits; at the last point only EXIT is valid).
    - ``SKIP``: the RUNs from the narrowest up (the cheapest way on), then ``EXIT``.
    - ``EXIT`` (no prediction yet): the RUNs from the widest down, then ``SKIP``.
    """
    runs = [RUN + j for j in range(num_widths)]
    if action == EXIT:
        return runs[::-1] + [SKIP]
    if action == SKIP:
        return runs + [EXIT]
    j = action - RUN
    return runs[:j][::-1] + runs[j + 1 :] + [SKIP, EXIT]


def check_widths(widths: Any) -> tuple[float, ...]:
    """``widths`` (the option) as a tuple of floats; ``ValueError`` naming it unless it is a non-empty
    list of numbers in (0, 1]. Whether they are the backbone's is :func:`offered_widths`' check."""
    if not isinstance(widths, (list, tuple)) or len(widths) == 0 or any(
        isinstance(w, bool) or not isinstance(w, (int, float)) or not 0 < w <= 1 for w in widths
    ):
        raise ValueError(f"widths must be a non-empty list of widths in (0, 1] (a subset of the backbone's), or None for all, got {widths!r}")
    return tuple(float(w) for w in widths)


def offered_widths(backbone_widths: tuple[float, ...], widths: Sequence[float] | None) -> tuple[bool, ...]:
    """Per backbone width, whether RUN offers it: all for ``None``, else those in ``widths``, which must
    be a non-empty subset of ``backbone_widths`` (``ValueError`` naming the first that is not)."""
    if widths is None:
        return (True,) * len(backbone_widths)
    for w in check_widths(widths):
        if not any(math.isclose(w, b) for b in backbone_widths):
            raise ValueError(f"width {w!r} is not one of the backbone's widths {list(backbone_widths)}")
    return tuple(any(math.isclose(w, b) for w in widths) for b in backbone_widths)


def action_names(widths: tuple[float, ...]) -> tuple[str, ...]:
    """Readable names of the action codes: ``EXIT``, ``SKIP``, ``RUN(0.25)`` …"""
    return ("EXIT", "SKIP") + tuple(f"RUN({w:g})" for w in widths)


@dataclass(frozen=True)
class StepResult:
    """Arrays over the stepped slots: rewards, termination, and what a terminal step reports."""

    reward: np.ndarray
    terminated: np.ndarray
    invalid: np.ndarray
    terms: dict[str, np.ndarray]
    """Each reward term summed over the episode so far, this step included (what a terminal step
    reports as ``info["reward_terms"]``: they add up to the episode's undiscounted return)."""
    prediction: np.ndarray
    label: np.ndarray
    correct: np.ndarray
    exit_position: np.ndarray
    instance: np.ndarray
    """The instance (index into the split) each stepped episode routes."""
    route: np.ndarray
    """(len(slots), N): each episode's choice per stage so far: a width index, ``SKIP_CHOICE`` (-1),
    or ``NOT_REACHED``. With ``instance`` and ``exit_position`` it replays an ended episode (co-training)."""


def row_max(x: np.ndarray) -> np.ndarray:
    """``x.max(axis=1)`` of a 2-D array, the same values ~8x faster for short rows (numpy reduces a
    short last axis slowly; the transposed contiguous copy reduces along the long axis)."""
    return np.ascontiguousarray(x.T).max(axis=0)


def softmax(logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row softmax of 2-D ``logits`` and each row's largest probability, ``exp(0) / sum = 1 / sum``
    (the same value as the max over the row, without another reduction)."""
    e = logits - row_max(logits)[:, None]
    np.exp(e, out=e)
    total = e.sum(axis=-1, keepdims=True)
    e /= total
    return e, 1.0 / total[:, 0]


def cross_entropy(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64)
    m = row_max(z)
    lse = m + np.log(np.exp(z - m[:, None]).sum(axis=-1))
    return lse - z[np.arange(len(labels)), labels]


@dataclass(frozen=True)
class ActionTables:
    """What each move does at each decision point, from a backbone's spec and costs alone: shared by
    the environment core and :class:`~routing_env.routed.RoutedModel`, so both mask alike."""

    has_head: np.ndarray
    """(N+1,) bool: the point carries an exit head."""
    static_valid: np.ndarray
    """(N+1, A) bool: the move is possible at point k (EXIT is decided by whether a head has run)."""
    act_cost: np.ndarray
    """(N+1, A): MACs the move charges, the head evaluated on arrival included (inf where impossible)."""
    evaluates: np.ndarray
    """(N+1, A) bool: the move evaluates the head at the point it arrives at."""
    min_to_head: np.ndarray
    """(N+1,): the cheapest way from point k, no head evaluated yet, to a prediction."""
    need: np.ndarray
    """(N+1, A): MACs a move commits to when no head has been evaluated yet."""
    valid_now: np.ndarray
    """(N+1, 2, A) bool: the mask at point k with or without a prediction, before any budget; without
    one, only the moves from which a head can still be reached (``need`` finite)."""
    fallback_ranks: np.ndarray
    """(A, A): for invalid action a, the preference of each replacement (lower first; :func:`fallback_order`)."""

    @classmethod
    def build(cls, spec: BackboneSpec, costs: CostTable, allow_skip: bool, widths: Sequence[float] | None = None) -> ActionTables:
        """The tables of a backbone with ``spec`` and ``costs``, offering SKIP where ``allow_skip`` and
        the backbone allow it, and RUN at ``widths`` (a subset of the backbone's; ``None``: all)."""
        n, a = spec.num_stages, spec.num_actions
        offered = offered_widths(spec.widths, widths)
        has_head = np.zeros(n + 1, dtype=bool)
        has_head[list(spec.head_positions)] = True
        static_valid = np.zeros((n + 1, a), dtype=bool)
        act_cost = np.full((n + 1, a), np.inf)
        act_cost[:, EXIT] = 0.0
        evaluates = np.zeros((n + 1, a), dtype=bool)
        for k in range(n):
            if allow_skip and spec.skippable[k]:
                static_valid[k, SKIP] = True
                evaluates[k, SKIP] = bool(has_head[k + 1] and spec.head_after_skip)
                act_cost[k, SKIP] = costs.skip[k] + costs.head[k + 1] * evaluates[k, SKIP]
            for j, ok in enumerate(spec.width_supported[k]):
                if ok and offered[j]:
                    static_valid[k, RUN + j] = True
                    evaluates[k, RUN + j] = bool(has_head[k + 1])
                    act_cost[k, RUN + j] = costs.stage[k, j] + costs.head[k + 1] * has_head[k + 1]
            if not static_valid[k].any():
                supported = [w for w, ok in zip(spec.widths, spec.width_supported[k]) if ok]
                raise ValueError(f"stage {k} would have no valid move: it runs only at widths {supported}, none of the offered "
                                 f"{[w for w, ok in zip(spec.widths, offered) if ok]}, and cannot be skipped "
                                 f"(allow_skip={allow_skip}, skippable={spec.skippable[k]})")
        min_to_head = np.full(n + 1, np.inf)
        for k in range(n - 1, -1, -1):
            rest = np.where(evaluates[k], 0.0, min_to_head[k + 1])
            min_to_head[k] = np.min(np.where(static_valid[k], act_cost[k] + rest, np.inf))
        need = act_cost.copy()
        need[:n] += np.where(evaluates[:n], 0.0, min_to_head[1:, None])
        # without a prediction, a move from which no head can be reached (SKIPs past the last head where
        # heads are not read after SKIP) would strand the episode with nothing to EXIT on: masked, budget or not
        valid_now = np.stack([static_valid & np.isfinite(need), static_valid], axis=1)
        valid_now[:, 0, EXIT], valid_now[:, 1, EXIT] = False, True
        fallback_ranks = np.zeros((a, a), dtype=np.int64)
        for action in range(a):
            order = fallback_order(action, len(spec.widths))
            fallback_ranks[action, [action] + order] = np.arange(a)
        tables = (has_head, static_valid, act_cost, evaluates, min_to_head, need, valid_now, fallback_ranks)
        for table in tables:  # shared with RoutingView and RoutedModel: nobody may change them
            table.flags.writeable = False
        return cls(*tables)

    def budget(self, costs: CostTable, max_macs: float | None) -> float:
        """The MACs budget of ``max_macs`` (a fraction of the reference; ``inf`` for ``None``);
        ``ValueError`` if no route to a prediction fits in it."""
        if max_macs is None:
            return np.inf
        # NaN would mask nothing; inf, like None, is no budget
        check_number("max_macs", max_macs, above=0, infinite=True, hint=" (a fraction of the reference MACs) or None")
        budget = float(max_macs) * costs.reference
        first = costs.prefix + (costs.head[0] if self.has_head[0] else self.min_to_head[0])
        if first > budget * (1 + BUDGET_TOLERANCE):
            raise ValueError(
                f"max_macs={max_macs} is below the cheapest route to a prediction "
                f"({first / costs.reference:.4g} of the reference MACs)"
            )
        return budget



class RoutingCore:
    """B routing episodes over one backbone and one data split, stepped together.

    Args:
        backbone: the routable backbone.
        dataset: the data set episodes draw instances from.
        split: its split (``train``, ``val`` or ``test``).
        num_slots: B, the number of concurrent episodes.
        reward_fn: the reward strategy.
        max_macs: hard budget in units of the reference MACs; actions that would exceed it are masked
            (and replaced like any invalid action), so ``macs_fraction <= max_macs`` always holds.
        invalid_action: ``"fallback"``, ``"penalize"`` or ``"raise"`` (docs/design.md §5).
        invalid_penalty: penalty per invalid action under ``"penalize"``.
        allow_skip: offer ``SKIP`` where the backbone can skip.
        widths: the widths ``RUN`` offers, a subset of the backbone's (``None``: all).
        data_root: root of the image data, where the backbone needs it.
        live: run the backbone's own network (trainable, e.g. by
            :class:`~routing_env.cotraining.BackboneTrainer`) instead of a frozen copy or cache.
        augment: a live backbone reads fresh crop-and-flip views of the images (``backbone_augment``).
        track_heads: keep every exit head's softmax per episode (the ``heads`` observation of
            ``obs_mode="heads"``); off by default, since the plain observation does not need it.
        ascent: a :class:`~routing_env.budget.DualAscent` the reward reads λ from, updated here from the
            cost of the episodes that end (``target_macs``).
        price: the cost model the reward charges (:mod:`routing_env.latency`); ``None``: the MACs.
        decide_at: ``block`` or ``head`` (:func:`decision_points`): under ``head`` one step applies
            the move at a decision point and repeats it up to the next one (or the end of the episode).
    """

    def __init__(
        self,
        backbone: RoutableBackbone,
        dataset: str,
        split: str,
        num_slots: int,
        reward_fn: RewardFn,
        *,
        max_macs: float | None = None,
        invalid_action: str = "fallback",
        invalid_penalty: float = 0.1,
        allow_skip: bool = False,
        widths: Sequence[float] | None = None,
        data_root: str | None = None,
        live: bool = False,
        augment: bool = False,
        track_heads: bool = False,
        ascent: Any = None,
        price: CostTable | None = None,
        decide_at: str = "block",
    ) -> None:
        if invalid_action not in INVALID_ACTION_MODES:
            raise ValueError(f"unknown invalid_action {invalid_action!r}; expected one of {INVALID_ACTION_MODES}")
        if num_slots < 1:
            raise ValueError(f"num_slots must be >= 1, got {num_slots}")
        spec, costs = backbone.spec, backbone.costs
        self.backbone = backbone
        self.dataset = dataset
        self.split = split
        self.num_slots = num_slots
        self.invalid_action = invalid_action
        if invalid_action == "penalize":
            reward_fn = reward_fn + InvalidActionPenalty(invalid_penalty)
        self.reward_fn = reward_fn
        self.uses_cross_entropy = reward_fn.uses_cross_entropy
        self.uses_probs = reward_fn.uses_probs
        self.term_totals: dict[str, np.ndarray] | None = None if terminal_only(reward_fn) else {}
        """Each term summed over each slot's episode so far (``StepResult.terms``); ``None`` where the
        reward's terms are all terminal, so the last step's are the episode's at no cost."""
        self.live = live
        self.ascent = ascent
        self.executor = backbone.executor(dataset, split, num_slots, data_root, live)
        if augment:
            self.executor.augment(seed=0)
        self.labels = self.executor.labels
        self.num_instances = len(self.labels)
        self.num_stages = n = spec.num_stages
        self.num_actions = spec.num_actions
        self.num_classes = spec.num_classes
        self.feature_dim = spec.feature_dim
        self.action_names = action_names(spec.widths)
        self.reference_macs = costs.reference
        self._build_tables(allow_skip, widths)
        self.budget = self.tables.budget(costs, max_macs)
        self.price = price
        self.price_tables = ActionTables.build(spec, price, allow_skip, widths) if price is not None else None
        priced, priced_tables = (price, self.price_tables) if price is not None else (costs, self.tables)
        self.max_cost_fraction = float(
            (priced.prefix + priced.head[0] * self.has_head[0] + np.nan_to_num(priced_tables.act_cost[:n, 1:], posinf=0.0).max(axis=1).sum())
            / priced.reference
        )
        """The most an episode can spend, as a fraction of the reference (the bound of ``obs["cost"]``)."""
        b = num_slots
        self.index = np.zeros(b, dtype=np.int64)
        self.position = np.zeros(b, dtype=np.int64)
        self.macs = np.zeros(b, dtype=np.float64)
        self.charged = np.zeros(b, dtype=np.float64)
        self.priced = np.zeros(b, dtype=np.float64) if price is not None else self.macs
        """The priced cost spent (the MACs themselves under the default cost model)."""
        self.priced_charged = np.zeros(b, dtype=np.float64) if price is not None else self.charged
        self.has_probs = np.zeros(b, dtype=bool)
        self.potential = np.zeros(b, dtype=np.float64)
        self.mask = np.zeros((b, self.num_actions), dtype=bool)
        self.features = np.zeros((b, self.feature_dim), dtype=np.float32)
        self.logits = np.zeros((b, self.num_classes), dtype=np.float32)
        self.probs = np.zeros((b, self.num_classes), dtype=np.float32)
        self.exit_position = np.full(b, -1, dtype=np.int64)
        self.route = np.full((b, n), NOT_REACHED, dtype=np.int64)
        self.head_positions = np.array(sorted(spec.head_positions))
        self.head_slot = np.full(n + 1, -1, dtype=np.int64)
        self.head_slot[self.head_positions] = np.arange(len(self.head_positions))
        """Per decision point, its row in ``head_probs`` (-1 where there is no head)."""
        self.track_heads = track_heads
        tracked = b if track_heads else 0  # untracked: empty arrays, so the compiled kernels see one type
        self.head_probs = np.zeros((tracked, len(self.head_positions), self.num_classes), dtype=np.float32)
        """(B, H, C): each head's softmax on the episode's input, zeros where it has not run."""
        self.head_seen = np.zeros((tracked, len(self.head_positions)), dtype=bool)
        self.onehot = np.eye(n + 1, dtype=np.float32)
        self.decide_at = decide_at
        self.decides = decision_points(self.has_head, decide_at)
        self.decides.flags.writeable = False  # shared with RoutingView
        self.repeats = not self.decides.all()
        """Whether a step may repeat its move past a point (``decide_at="head"`` with points between heads)."""
        """Per point, whether the policy decides there (:func:`decision_points`)."""

    # --- static tables ------------------------------------------------------------------------
    def _build_tables(self, allow_skip: bool, widths: Sequence[float] | None) -> None:
        self.tables = tables = ActionTables.build(self.backbone.spec, self.backbone.costs, allow_skip, widths)
        self.has_head, self.static_valid, self.act_cost, self.evaluates = tables.has_head, tables.static_valid, tables.act_cost, tables.evaluates

    # --- queries ------------------------------------------------------------------------------
    def action_mask(self, slots: np.ndarray) -> np.ndarray:
        """(len(slots), A) bool: the valid actions of each slot now (a copy)."""
        return self.mask[slots]

    def _update_mask(self, slots: np.ndarray) -> None:
        """Recompute the valid actions of ``slots`` from their state (after every transition): a move
        is valid if the cheapest prediction after it fits in the budget."""
        t = self.tables
        kernels.update_masks(slots, self.position, self.has_probs, self.macs, t.valid_now, self.budget, t.act_cost, t.need, self.mask)

    def observation(self, slots: np.ndarray) -> dict[str, np.ndarray]:
        """The observation arrays (docs/design.md §2) of ``slots``, freshly allocated; with
        ``track_heads`` also ``heads`` (every head's softmax so far) and ``heads_mask``."""
        obs = {
            "features": self.features[slots],
            "probs": self.probs[slots],
            "position": self.onehot[self.position[slots]],
            "cost": self.cost_fraction(slots)[:, None].astype(np.float32),
            "action_mask": self.mask[slots].astype(np.int8),
        }
        if self.track_heads:
            obs["heads"] = self.head_probs[slots]
            obs["heads_mask"] = self.head_seen[slots].astype(np.int8)
        return obs

    def seed_views(self, seed: int) -> None:
        """Seed the fresh views of an augmenting executor (``backbone_augment``); nothing otherwise."""
        if self.executor.views is not None:
            self.executor.views.generator.manual_seed(seed)

    # --- transitions --------------------------------------------------------------------------
    def reset(self, slots: np.ndarray, indices: np.ndarray) -> None:
        """Start new episodes on instances ``indices`` in ``slots``; charge the mandatory prefix."""
        costs = self.backbone.costs
        self.index[slots] = indices
        self.position[slots] = 0
        self.macs[slots] = costs.prefix
        self.charged[slots] = 0.0
        if self.price is not None:
            self.priced[slots] = self.price.prefix + (self.price.head[0] if self.has_head[0] else 0.0)
            self.priced_charged[slots] = 0.0
        self.has_probs[slots] = False
        self.probs[slots] = 0.0
        self.potential[slots] = 0.0
        self.exit_position[slots] = -1
        self.route[slots] = NOT_REACHED
        if self.term_totals:
            for total in self.term_totals.values():
                total[slots] = 0.0
        if self.track_heads:
            self.head_probs[slots] = 0.0
            self.head_seen[slots] = False
        self.executor.begin(slots, indices)
        self.features[slots] = self.executor.features(slots)
        if self.has_head[0]:
            self.macs[slots] += costs.head[0]
            self._evaluate_heads(slots, np.zeros(len(slots), dtype=np.int64))
        self._update_mask(slots)

    def _evaluate_heads(self, slots: np.ndarray, positions: np.ndarray) -> None:
        """Evaluate the head at each slot's ``positions`` (one executor call for all of them; the move
        that arrived there has charged it)."""
        logits = self.executor.head(slots, positions)
        probs, potential = softmax(logits)
        kernels.absorb_heads(
            slots, logits, probs, potential, self.logits, self.probs, self.potential, self.has_probs,
            self.exit_position, positions, self.track_heads, self.head_probs, self.head_seen, self.head_slot,
        )

    def invalid_error(self, slot: int, action: int) -> ValueError:
        """The error ``invalid_action="raise"`` raises for ``action`` in ``slot``, naming the valid ones."""
        valid = [self.action_names[c] for c in np.flatnonzero(self.mask[slot])]
        return ValueError(
            f"action {action} ({self.action_names[action]}) is invalid at decision point "
            f"{int(self.position[slot])}; valid actions now: {valid}"
        )

    def step(self, slots: np.ndarray, actions: np.ndarray) -> StepResult:
        """Apply ``actions`` (valid codes in the action space) to the episodes in ``slots``: invalid
        ones are replaced (per ``invalid_action``), the moving episodes advance, the executor runs
        each (point, move) group once, heads reached on arrival are read, and the masks are renewed."""
        requested = np.asarray(actions, dtype=np.int64)
        bad = kernels.check_rows(slots, requested, self.num_slots, self.num_actions)
        if bad >= 0:  # the environments check first; a direct caller gets this instead of corrupted state
            raise ValueError(
                f"row {bad}: slot {int(slots[bad])} (of 0..{self.num_slots - 1}, each once) or action "
                f"{int(requested[bad])} (of 0..{self.num_actions - 1}) is out of range or repeated"
            )
        potential_before = self.potential[slots]
        position_before = self.position[slots]  # a copy: the move below advances self.position in place
        probs_before = self.probs[slots] if self.uses_probs else None
        price = self.price_tables.act_cost if self.price_tables is not None else self.act_cost
        actions, invalid, group_slots, group_keys, group_starts, evaluated = kernels.resolve_and_advance(
            slots, requested, self.mask, self.tables.fallback_ranks, self.invalid_action == "raise",
            self.position, self.route, self.macs, self.act_cost, self.priced, price, self.price_tables is not None, self.evaluates,
        )
        if self.invalid_action == "raise" and invalid.any():  # nothing has changed
            i = int(np.flatnonzero(invalid)[0])
            raise self.invalid_error(int(slots[i]), int(requested[i]))
        done = actions == EXIT
        self._execute(group_slots, group_keys, group_starts, evaluated)
        self._update_mask(slots)
        if self.repeats:
            self._repeat_to_decision_points(slots, actions, done, price)
        prediction, labels, correct, macs, step_macs = kernels.settle(slots, self.logits, self.index, self.labels, self.macs, self.charged)
        if self.uses_cross_entropy:
            entropy = np.zeros(len(slots))
            if done.any():  # only the terminal steps' cross-entropy is meaningful (and computed)
                entropy[done] = cross_entropy(self.logits[slots[done]], labels[done])
        else:
            entropy = np.full(len(slots), np.nan)
        macs_fraction, step_macs_fraction = macs / self.reference_macs, step_macs / self.reference_macs
        if self.price is None:
            cost_fraction, step_cost_fraction = macs_fraction, step_macs_fraction
        else:
            priced = self.priced[slots]
            cost_fraction = priced / self.price.reference
            step_cost_fraction = (priced - self.priced_charged[slots]) / self.price.reference
            self.priced_charged[slots] = priced
        outcome = Outcome(
            terminated=done,
            correct=correct,
            cross_entropy=entropy,
            macs_fraction=macs_fraction,
            step_macs_fraction=step_macs_fraction,
            cost_fraction=cost_fraction,
            step_cost_fraction=step_cost_fraction,
            invalid=invalid,
            potential_before=potential_before,
            potential_after=self.potential[slots],
            probs_before=probs_before,
            probs_after=self.probs[slots] if self.uses_probs else None,
            label=labels if self.uses_probs else None,
            position_before=position_before,
            position_after=self.position[slots],
            num_stages=self.num_stages,
        )
        try:
            reward, terms = self.reward_fn(outcome)
        except TypeError as e:
            if self.uses_probs or "NoneType" not in str(e):
                raise
            raise TypeError(f"{e}: the reward {self.reward_fn!r} reads the softmax or the label, which an Outcome carries "
                            f"(probs_before, probs_after, label) only for a reward that sets uses_probs = True") from e
        if self.term_totals is not None:
            terms = self.sum_terms(slots, terms)
        if self.ascent is not None and done.any():  # the price for the next steps
            self.ascent.update(outcome.cost_fraction[done])
        return StepResult(
            reward=reward,
            terminated=done,
            invalid=invalid,
            terms=terms,
            prediction=prediction,
            label=labels,
            correct=outcome.correct,
            exit_position=self.exit_position[slots].copy(),
            instance=self.index[slots],
            route=self.route[slots],
        )

    def sum_terms(self, slots: np.ndarray, terms: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Add this step's ``terms`` to the episodes' running totals; the totals of ``slots``."""
        totals = self.term_totals
        assert totals is not None
        for name, value in terms.items():
            if name not in totals:  # a reward's term names are fixed: made on the first step, zero since every reset
                totals[name] = np.zeros(self.num_slots, dtype=np.float64)
            totals[name][slots] += value
        return {name: total[slots] for name, total in totals.items()}

    def _execute(self, group_slots: np.ndarray, group_keys: np.ndarray, group_starts: np.ndarray, evaluated: np.ndarray) -> None:
        """Run each (point, move) group once, store the moved slots' features, read the heads reached."""
        for g, key in enumerate(group_keys.tolist()):  # the distinct (point, move) keys, ascending
            group = group_slots[group_starts[g] : group_starts[g + 1]]
            k, a = divmod(key, self.num_actions)
            if a == SKIP:
                self.executor.skip(group, k)
            else:
                self.executor.run(group, k, a - RUN)
        if len(group_slots):
            self.features[group_slots] = self.executor.features(group_slots)
        if len(evaluated):  # heads reached on arrival, all groups at once
            self._evaluate_heads(evaluated, self.position[evaluated])

    def _repeat_to_decision_points(self, slots: np.ndarray, actions: np.ndarray, done: np.ndarray, price: np.ndarray) -> None:
        """``decide_at="head"``: advance each moving slot with the move it just made (the fallback
        where that is invalid at a point; never an invalid-action penalty or error, the policy did
        not choose it there) until it stands at a decision point; a slot whose fallback is EXIT ends,
        and ``done`` says so."""
        rows = np.flatnonzero(~done)
        while True:
            rows = rows[~self.decides[self.position[slots[rows]]]]
            if not len(rows):
                return
            moving = slots[rows]
            resolved, _, group_slots, group_keys, group_starts, evaluated = kernels.resolve_and_advance(
                moving, actions[rows], self.mask, self.tables.fallback_ranks, False,
                self.position, self.route, self.macs, self.act_cost, self.priced, price, self.price_tables is not None, self.evaluates,
            )
            self._execute(group_slots, group_keys, group_starts, evaluated)
            self._update_mask(moving)
            ended = resolved == EXIT
            done[rows[ended]] = True
            rows = rows[~ended]

    def info(self, slots: np.ndarray) -> dict[str, np.ndarray]:
        """The per-step info arrays (docs/design.md §3) shared by every step."""
        macs = self.macs[slots]
        info = {
            "action_mask": self.mask[slots].astype(np.int8),
            "macs": macs,
            "macs_fraction": macs / self.reference_macs,
            "decision_point": self.position[slots],
        }
        if self.ascent is not None:
            info["lam"] = np.full(len(slots), self.ascent.lam)
        if self.price is not None:
            info["cost_fraction"] = self.cost_fraction(slots)
        return info

    def cost_fraction(self, slots: np.ndarray) -> np.ndarray:
        """The priced cost each of ``slots`` has spent, as a fraction of the reference's."""
        reference = self.reference_macs if self.price is None else self.price.reference
        return self.priced[slots] / reference



class RoutingView:
    """A read-only view of an environment's routing structure, for agents and experiments.

    Everything a policy or a report may need besides the observations: the stages and widths, what
    each move costs and where it is possible, the heads, and which instances the episodes route now
    (privileged: only upper bounds such as the oracle read them). Its arrays are the core's own tables,
    made read-only where they are built (:class:`ActionTables`).
    """

    def __init__(self, core: RoutingCore) -> None:
        self._core = core
        self._weights_sha256: str | None = None if core.live else core.backbone.weights_sha256
        spec, costs, tables = core.backbone.spec, core.backbone.costs, core.tables
        self.backbone_name: str = core.backbone.name
        self.dataset: str = core.dataset
        self.split: str = core.split
        self.num_instances: int = core.num_instances
        self.num_stages: int = spec.num_stages
        self.num_actions: int = spec.num_actions
        self.widths: tuple[float, ...] = spec.widths
        self.offered_widths: tuple[bool, ...] = tuple(bool(v) for v in tables.static_valid[:-1, RUN:].any(axis=0))
        """Per width, whether ``RUN`` offers it anywhere (the ``widths`` option)."""
        self.action_names: tuple[str, ...] = core.action_names
        self.head_positions: tuple[int, ...] = tuple(sorted(spec.head_positions))
        self.reference_macs: float = float(costs.reference)
        """The MACs that ``macs_fraction`` divides by."""
        self.prefix_macs: float = float(costs.prefix)
        """The mandatory prefix, charged at reset."""
        self.static_valid: np.ndarray = tables.static_valid
        """(N+1, A) bool: the move is possible at point k (SKIP only where offered)."""
        self.act_cost: np.ndarray = tables.act_cost
        """(N+1, A): the MACs each move charges, the head it evaluates included (inf where impossible)."""
        self.budget: float = float(core.budget)
        """The hard budget in MACs (``inf`` without ``max_macs``)."""
        self.decision_points: np.ndarray = core.decides
        """(N+1,) bool: where the policy is asked for a move (``decide_at``; :func:`decision_points`)."""
        members = getattr(core.backbone, "member_names", None)
        self.member_names: tuple[str, ...] | None = tuple(members) if members is not None else None
        """A cascade's classifiers, by head position (``None`` for other backbones)."""
        member_macs = getattr(core.backbone, "member_macs", None)
        self.member_macs: tuple[float, ...] | None = tuple(member_macs) if member_macs is not None else None
        """The MACs of each cascade member run alone (``None`` for other backbones)."""

    @property
    def live(self) -> bool:
        """Whether the backbone runs live (``train_backbone=True``: its weights may change)."""
        return self._core.live

    @property
    def weights_sha256(self) -> str:
        """The sha256 of the weights this environment routes with (what results computed on them are
        keyed by): for a frozen environment those of its snapshot or cache, taken once when it was
        built; for a live one, those of the network now."""
        if self._weights_sha256 is None or self._core.live:
            self._weights_sha256 = self._core.backbone.weights_sha256
        return self._weights_sha256

    def instances(self) -> np.ndarray:
        """The instance (index into the split) each slot routes now (a copy; privileged)."""
        return self._core.index.copy()
