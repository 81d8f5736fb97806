"""Learning tests with fixed seeds (not timed): policies learn to route on the synthetic cascade."""

import pytest

from routing_env import RoutingVectorEnv
from routing_env.agents import make_agent
from routing_env.evaluation import route_split

LAM = 0.02
STEPS = 30_000


@pytest.fixture(scope="module")
def results() -> dict:
    val = RoutingVectorEnv(backbone="tiny-cascade", num_envs=16, split="val", lam=LAM)
    val_eval = RoutingVectorEnv(backbone="tiny-cascade", num_envs=256, split="val", lam=LAM)
    test = RoutingVectorEnv(backbone="tiny-cascade", num_envs=256, split="test", lam=LAM)
    out = {}
    for name in ("random", "reinforce", "ppo", "maskable-ppo", "oracle"):
        agent = make_agent(name, val, seed=0)
        agent.learn(STEPS)
        out[name] = route_split(agent, test)
        out[f"{name}/val"] = route_split(agent, val_eval)
    out["largest"] = route_split(make_agent("fixed", val, position=2), test)
    return out


@pytest.mark.parametrize("name", ["reinforce", "ppo", "maskable-ppo"])
def test_learned_policies_beat_random_on_reward(results: dict, name: str) -> None:
    assert results[name].reward.mean() > results["random"].reward.mean() + 0.05


def test_best_policy_matches_the_largest_classifier_at_lower_cost(results: dict) -> None:
    largest = results["largest"]
    # the best policy is chosen on val (by reward); its numbers are read on test
    best = max(("reinforce", "ppo", "maskable-ppo"), key=lambda n: results[f"{n}/val"].reward.mean())
    assert results[best].correct.mean() >= largest.correct.mean()
    # the largest classifier alone costs exactly the reference MACs (fraction 1.0)
    assert results[best].macs_fraction.mean() < 0.5


def test_oracle_bounds_every_policy(results: dict) -> None:
    oracle = results["oracle"]
    for name in ("random", "reinforce", "ppo", "maskable-ppo", "largest"):
        assert oracle.correct.mean() >= results[name].correct.mean()
        assert oracle.macs_fraction.mean() <= results[name].macs_fraction.mean()
