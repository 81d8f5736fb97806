"""The routing core's bookkeeping as compiled loops (numba), one pass over the stepped slots each.

Why: a transition is a few dozen small array operations (resolve, advance, masks, softmax, rewards'
inputs). In numpy each costs its dispatch, 0.5–3 µs whatever B is, so a single environment's step
was ~40 dispatches, and at B = 1024 the step was a few percent of the look-up ceiling (``routing-env
bench``). These kernels do that work in one call each, for any B: the core keeps one
implementation of the transition for B = 1 and B = 1024 (:class:`~routing_env.core.RoutingCore`
calls them). Every value is computed as numpy computed it, bit for bit: the
softmax stays numpy's (a compiled ``exp`` and sum round differently in the last bit, and a trained
policy's figures move with them), and the float64 sums add in the same order.

Each kernel mutates the core's state arrays in place (indexed by slot) and returns per-row results
(indexed by the position of a slot in ``slots``). Compiled on first use and cached on disk
(``cache=True``), so only the first process on a machine pays the compilation.

:func:`observe_one` is the one kernel outside the core: :class:`~routing_env.routed.RoutedModel`'s
batch-1 observation (pooling and an exit head), for the same reason at deployment. It is not bit for
bit torch's (its sums run in float64), only equal up to float32 rounding.
"""

from __future__ import annotations

import numba
import numpy as np

from .backbones.base import SKIP_CHOICE

EXIT, SKIP, RUN = 0, 1, 2  # the action codes of routing_env.core (imported from there would be circular)
BUDGET_TOLERANCE = 1e-9  # routing_env.core.BUDGET_TOLERANCE, checked equal in the tests

NO_ACTION = np.iinfo(np.int64).max


@numba.njit(cache=True)
def resolve_and_advance(
    slots: np.ndarray,
    actions: np.ndarray,
    mask: np.ndarray,
    fallback_ranks: np.ndarray,
    stop_if_invalid: bool,
    position: np.ndarray,
    route: np.ndarray,
    macs: np.ndarray,
    act_cost: np.ndarray,
    priced: np.ndarray,
    price_act_cost: np.ndarray,
    priced_separately: bool,
    evaluates: np.ndarray,
):
    """Replace invalid actions (the first valid one in ``fallback_ranks`` order) and advance the
    episodes that do not EXIT: route, MACs (and priced cost), position.

    Returns ``(actions, invalid, group_slots, group_keys, group_starts, evaluated)``: the moving slots
    sorted by ``key = position · A + action`` (stable), the distinct keys ascending and where each
    group starts in ``group_slots`` (one executor call per group), and the moving slots whose move
    evaluates the head on arrival (in ``slots`` order). With ``stop_if_invalid`` and an invalid action,
    nothing is changed and the groups are empty (the caller raises). A row whose mask has no valid
    move (a slot never reset) EXITs, as numpy's argmin over all-excluded ranks did.

    numba does not check bounds, so the caller passes slots in ``0..len(position)-1``, each once, and
    actions in ``0..A-1`` (:func:`check_rows` says which are not)."""
    b, num_actions = len(slots), mask.shape[1]
    resolved = actions.copy()
    invalid = np.zeros(b, dtype=np.bool_)
    any_invalid = False
    for i in range(b):
        s, a = slots[i], actions[i]
        if not mask[s, a]:
            invalid[i] = True
            any_invalid = True
            best = NO_ACTION
            resolved[i] = EXIT
            for c in range(num_actions):
                if mask[s, c] and fallback_ranks[a, c] < best:
                    best = fallback_ranks[a, c]
                    resolved[i] = c
    keys = np.empty(b, dtype=np.int64)
    evaluated = np.empty(b, dtype=np.int64)
    if stop_if_invalid and any_invalid:
        return resolved, invalid, keys[:0], keys[:0], keys[:0], evaluated[:0]
    moving = 0
    num_evaluated = 0
    for i in range(b):
        a = resolved[i]
        if a == EXIT:
            continue
        s = slots[i]
        k = position[s]
        keys[moving] = k * num_actions + a
        moving += 1
        if evaluates[k, a]:
            evaluated[num_evaluated] = s
            num_evaluated += 1
        route[s, k] = SKIP_CHOICE if a == SKIP else a - RUN
        macs[s] += act_cost[k, a]
        if priced_separately:
            priced[s] += price_act_cost[k, a]
        position[s] = k + 1
    moving_slots = np.empty(moving, dtype=np.int64)
    j = 0
    for i in range(b):
        if resolved[i] != EXIT:
            moving_slots[j] = slots[i]
            j += 1
    order = np.argsort(keys[:moving], kind="mergesort")
    group_slots = moving_slots[order]
    sorted_keys = keys[:moving][order]
    group_keys = np.empty(moving, dtype=np.int64)
    group_starts = np.empty(moving + 1, dtype=np.int64)
    groups = 0
    for i in range(moving):
        if i == 0 or sorted_keys[i] != sorted_keys[i - 1]:
            group_keys[groups] = sorted_keys[i]
            group_starts[groups] = i
            groups += 1
    group_starts[groups] = moving
    return resolved, invalid, group_slots, group_keys[:groups], group_starts[: groups + 1], evaluated[:num_evaluated]


@numba.njit(cache=True)
def check_rows(slots: np.ndarray, actions: np.ndarray, num_slots: int, num_actions: int) -> int:
    """The first row whose slot is outside ``0..num_slots-1`` or repeated, or whose action is outside
    ``0..num_actions-1``; -1 when every row is fine (the kernels' precondition, checked in one pass)."""
    seen = np.zeros(num_slots, dtype=np.bool_)
    for i in range(len(slots)):
        s, a = slots[i], actions[i]
        if s < 0 or s >= num_slots or seen[s] or a < 0 or a >= num_actions:
            return i
        seen[s] = True
    return -1


@numba.njit(cache=True)
def absorb_heads(
    slots: np.ndarray,
    head_logits: np.ndarray,
    head_probs_now: np.ndarray,
    head_potential: np.ndarray,
    logits: np.ndarray,
    probs: np.ndarray,
    potential: np.ndarray,
    has_probs: np.ndarray,
    exit_position: np.ndarray,
    positions: np.ndarray,
    track_heads: bool,
    head_probs: np.ndarray,
    head_seen: np.ndarray,
    head_slot: np.ndarray,
) -> None:
    """Each slot's head output (row ``i``: logits, their softmax and its largest value) becomes its
    ``logits``, ``probs`` and ``potential``, and its prediction's exit position is ``positions[i]``;
    with ``track_heads`` also that head's row of ``head_probs``. (The softmax itself stays numpy's,
    :func:`routing_env.core.softmax`: a compiled one rounds differently in the last bit, and every
    trained policy's figures would move with it.)"""
    for i in range(len(slots)):
        s = slots[i]
        logits[s, :] = head_logits[i, :]
        probs[s, :] = head_probs_now[i, :]
        potential[s] = head_potential[i]
        has_probs[s] = True
        exit_position[s] = positions[i]
        if track_heads:
            h = head_slot[positions[i]]
            head_probs[s, h, :] = head_probs_now[i, :]
            head_seen[s, h] = True


@numba.njit(cache=True)
def update_masks(
    slots: np.ndarray,
    position: np.ndarray,
    has_probs: np.ndarray,
    macs: np.ndarray,
    valid_now: np.ndarray,
    budget: float,
    act_cost: np.ndarray,
    need: np.ndarray,
    mask: np.ndarray,
) -> None:
    """Each slot's valid moves (:attr:`~routing_env.core.ActionTables.valid_now` at its point, with or
    without a prediction) and, under a finite ``budget``, only those whose committed MACs fit: a
    move's own cost with a prediction in hand, else also the cheapest way on to one (the budget rule
    of :func:`routing_env.core.fits`, with its tolerance)."""
    limit = budget * (1 + BUDGET_TOLERANCE)
    check = np.isfinite(budget)
    for i in range(len(slots)):
        s = slots[i]
        p, hp = position[s], has_probs[s]
        for c in range(mask.shape[1]):
            ok = valid_now[p, 1 if hp else 0, c]
            if ok and check:
                ok = macs[s] + (act_cost[p, c] if hp else need[p, c]) <= limit
            mask[s, c] = ok


@numba.njit(cache=True)
def settle(
    slots: np.ndarray,
    logits: np.ndarray,
    index: np.ndarray,
    labels: np.ndarray,
    macs: np.ndarray,
    charged: np.ndarray,
):
    """What a step reports per row: the prediction (``argmax``: the first largest logit or NaN), the label,
    whether they agree, the MACs spent so far and the MACs this step charged (``charged`` becomes the
    spend, so each MAC is charged once)."""
    b = len(slots)
    prediction = np.empty(b, dtype=np.int64)
    label = np.empty(b, dtype=labels.dtype)
    correct = np.empty(b, dtype=np.bool_)
    spent = np.empty(b, dtype=np.float64)
    step = np.empty(b, dtype=np.float64)
    for i in range(b):
        s = slots[i]
        best = 0  # numpy's argmax: the first largest value, or the first NaN
        for c in range(logits.shape[1]):
            if np.isnan(logits[s, c]):
                best = c
                break
            if logits[s, c] > logits[s, best]:
                best = c
        prediction[i] = best
        label[i] = labels[index[s]]
        correct[i] = best == label[i]
        spent[i] = macs[s]
        step[i] = macs[s] - charged[s]
        charged[s] = macs[s]
    return prediction, label, correct, spent, step


@numba.njit(cache=True)
def observe_one(h: np.ndarray, pooled: np.ndarray, weight: np.ndarray, bias: np.ndarray, logits: np.ndarray,
                probs: np.ndarray) -> None:
    """One input's observation after a block, in place: ``pooled`` (F,) the global average of its map
    ``h`` given as ``(H, W, C)`` (a channels-last map's memory order: then contiguous, and the sums run
    along memory; any strides work), zero beyond C (the environment's padding); where there is an
    exit head (``weight`` (K, C') non-empty, C' <= F), its ``logits`` (K,) = ``weight @ pooled[:C'] +
    bias`` and their softmax ``probs``.

    Why: at batch 1, ``pooled_features``, the head's linear layer and the softmax are four eager torch
    ops, ~25 µs at every head of a routed walk, for ~20k additions (issue 20). The sums run in
    float64 and round once to float32, so the values equal torch's up to float32 rounding (the
    batch-1 and batched walks are tested to decide alike)."""
    height, width, c = h.shape
    total = np.zeros(c, np.float64)
    for y in range(height):
        for x in range(width):
            for j in range(c):
                total[j] += h[y, x, j]
    area = height * width
    for j in range(c):
        pooled[j] = total[j] / area
    pooled[c:] = 0.0
    if weight.shape[0] == 0:
        return
    largest = -np.inf
    for r in range(weight.shape[0]):
        acc = 0.0
        for j in range(weight.shape[1]):
            acc += weight[r, j] * np.float64(pooled[j])
        logits[r] = acc + bias[r]
        largest = max(largest, np.float64(logits[r]))
    exps = np.empty(weight.shape[0], np.float64)
    for r in range(weight.shape[0]):
        exps[r] = np.exp(np.float64(logits[r]) - largest)
    norm = exps.sum()
    for r in range(weight.shape[0]):
        probs[r] = exps[r] / norm
