"""A learned policy's greedy cost calibrated to a budget on ``val`` by one bias on its EXIT score
(``routing_env.agents.calibration``, issue 14's budget targets)."""

from __future__ import annotations

import numpy as np
import pytest

from routing_env import RoutingVectorEnv
from routing_env.agents import make_agent
from routing_env.agents.calibration import ExitBias, calibrate_exit_bias, greedy_cost


@pytest.fixture(scope="module")
def val() -> RoutingVectorEnv:
    return RoutingVectorEnv(backbone="tiny-cascade", num_envs=256, split="val", lam=0.05)


@pytest.mark.parametrize("name", ["reinforce", "ppo", "dqn"])
def test_no_bias_acts_as_the_policy_and_a_larger_one_never_costs_more(name: str, val: RoutingVectorEnv) -> None:
    policy = make_agent(name, RoutingVectorEnv(backbone="tiny-cascade", num_envs=8, split="val", lam=0.05), seed=0)
    policy.learn(2048)
    obs, _ = val.reset(seed=0)
    np.testing.assert_array_equal(ExitBias(val, policy=policy).predict(obs, val), policy.predict(obs, val))
    costs = [greedy_cost(ExitBias(val, policy=policy, bias=b), val) for b in (-30.0, -2.0, 0.0, 2.0, 30.0)]
    assert all(a >= b for a, b in zip(costs, costs[1:])) and costs[0] > costs[-1]


# the guarantee is the calibration's, not the agent's: ppo keeps it in the default suite, dqn (slower) only here
@pytest.mark.parametrize("name", ["ppo", pytest.param("dqn", marks=pytest.mark.expensive)])
def test_on_a_dynamic_resnet_the_bias_never_lengthens_a_route(name: str) -> None:
    # before the first exit head EXIT is invalid: an unmasked policy's biased EXIT there would fall back to a RUN
    env = RoutingVectorEnv(backbone="tiny-dynamic-resnet", num_envs=64, split="val", lam=0.05)
    costs = {}
    for seed in (1, 2):
        policy = make_agent(name, RoutingVectorEnv(backbone="tiny-dynamic-resnet", num_envs=8, split="val", lam=0.05), seed=seed)
        costs[seed] = [greedy_cost(ExitBias(env, policy=policy, bias=b), env) for b in (-30.0, -1.0, 0.0, 1.0, 2.0, 30.0)]
        assert all(a >= b - 1e-12 for a, b in zip(costs[seed], costs[seed][1:])), (seed, costs[seed])
    calibrated = calibrate_exit_bias(policy, env, 0.3)
    assert greedy_cost(calibrated, env) <= 0.3


def test_calibration_meets_the_budget_on_val_as_closely_as_the_routes_allow(val: RoutingVectorEnv) -> None:
    policy = make_agent("reinforce", RoutingVectorEnv(backbone="tiny-cascade", num_envs=8, split="val", lam=0.05), seed=0)
    policy.learn(2048)
    for target in (0.2, 0.5):
        calibrated = calibrate_exit_bias(policy, val, target)
        assert greedy_cost(calibrated, val) <= target
        # the bias found is the smallest that fits: a little less and the policy spends more than the budget
        assert greedy_cost(ExitBias(val, policy=policy, bias=calibrated.bias - 1e-4), val) > target
    with pytest.raises(ValueError, match="has no policy_module"):
        ExitBias(val, policy=make_agent("threshold", val))
