"""Property tests over random action sequences: cost accounting, budgets, masks."""

import re

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from routing_env import RoutingEnv
from routing_env.core import EXIT, RUN, SKIP

ENVS: dict[tuple, RoutingEnv] = {}


def make(allow_skip: bool, max_macs: float | None) -> RoutingEnv:
    key = (allow_skip, max_macs)
    if key not in ENVS:
        ENVS[key] = RoutingEnv(backbone="tiny-cascade", allow_skip=allow_skip, max_macs=max_macs)
    return ENVS[key]


budgets = st.one_of(st.none(), st.floats(min_value=0.02, max_value=1.2))


def expected_mask(env: RoutingEnv, position: int, macs: float, budget: float) -> list[int]:
    """The valid actions of the cascade, written out from the cost table independently of the core."""
    costs, n = env.core.backbone.costs, env.core.num_stages
    mask = [1, 0, 0]  # the prefix evaluates classifier 0's head, so EXIT is always valid
    if position < n:
        run = costs.stage[position, 0] + costs.head[position + 1]
        mask[RUN] = int(macs + run <= budget * (1 + 1e-9))
        mask[SKIP] = int(env.core.static_valid[position, SKIP] and macs + costs.skip[position] <= budget * (1 + 1e-9))
    return mask


@settings(max_examples=60, deadline=None)
@given(
    allow_skip=st.booleans(),
    max_macs=budgets,
    seed=st.integers(0, 2**16),
    actions=st.lists(st.integers(0, 2), min_size=1, max_size=40),
)
def test_macs_budget_and_masks_over_random_action_sequences(allow_skip, max_macs, seed, actions) -> None:
    env = make(allow_skip, max_macs)
    budget = np.inf if max_macs is None else max_macs * env.core.reference_macs
    costs = env.core.backbone.costs
    obs, info = env.reset(seed=seed)
    spent, position = costs.prefix + costs.head[0], 0
    for requested in actions:
        mask = expected_mask(env, position, spent, budget)
        assert obs["action_mask"].tolist() == mask
        assert info["action_mask"].tolist() == mask
        obs, reward, terminated, truncated, info = env.step(requested)
        taken = requested if mask[requested] else _fallback(requested, mask)
        assert info["invalid_action"] == (not mask[requested])
        if taken == RUN:
            spent += costs.stage[position, 0] + costs.head[position + 1]
            position += 1
        elif taken == SKIP:
            spent += costs.skip[position]
            position += 1
        assert info["decision_point"] == position
        assert info["macs"] == np.float64(spent)
        assert info["macs"] <= budget * (1 + 1e-9)
        assert info["macs_fraction"] == spent / env.core.reference_macs
        assert terminated == (taken == EXIT)
        if terminated:
            obs, info = env.reset()
            spent, position = costs.prefix + costs.head[0], 0


def _fallback(action: int, mask: list[int]) -> int:
    """The fallback rule (docs/design.md §5) for the cascade's one width: SKIP → RUN else EXIT;
    RUN past the end or over budget → SKIP else EXIT."""
    if action == SKIP and mask[RUN]:
        return RUN
    if action == RUN and mask[SKIP]:
        return SKIP
    return EXIT


@settings(max_examples=30, deadline=None)
@given(value=st.one_of(st.integers(max_value=-1), st.integers(min_value=3), st.floats(), st.text(max_size=3)))
def test_out_of_space_actions_raise_naming_the_value(value) -> None:
    env = make(False, None)
    env.reset(seed=0)
    try:
        env.step(value)
    except ValueError as e:
        assert repr(value) in str(e) and "Discrete(3)" in str(e)
    else:
        raise AssertionError(f"action {value!r} was accepted")


DYNAMIC_ENVS: dict[float, object] = {}


@settings(max_examples=40, deadline=None)
@given(
    max_macs=st.floats(min_value=0.1, max_value=1.1),
    seed=st.integers(0, 2**16),
    actions=st.lists(st.integers(0, 5), min_size=1, max_size=60),
)
def test_the_hard_budget_holds_on_the_dynamic_resnet_whatever_the_actions(max_macs, seed, actions) -> None:
    """On the dynamic family too, no sequence of actions (invalid ones included) spends more than
    ``max_macs``, and every episode still ends with a prediction."""
    from routing_env import RoutingVectorEnv

    if max_macs not in DYNAMIC_ENVS:
        try:
            DYNAMIC_ENVS[max_macs] = RoutingVectorEnv(num_envs=8, backbone="tiny-dynamic-resnet", max_macs=max_macs)
        except ValueError as e:  # below the cheapest route to a prediction: refused, as documented, and only then
            cheapest = re.search(r"below the cheapest route to a prediction \(([0-9.e+-]+) of the reference MACs\)", str(e))
            assert cheapest is not None, str(e)
            assert max_macs < float(cheapest.group(1)) * 1.001
            return
    env = DYNAMIC_ENVS[max_macs]
    env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    for a in actions:
        obs, _, terminated, _, info = env.step(np.where(rng.random(8) < 0.5, a, rng.integers(0, 6, 8)))
        assert (info["macs_fraction"] <= max_macs * (1 + 1e-9)).all()
        if terminated.any():
            assert (info["exit_position"][terminated] >= 1).all()  # a head had been evaluated
