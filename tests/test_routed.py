"""RoutedModel: the policy and the dynamic ResNet in one module, equal to the environment."""

from __future__ import annotations

import numpy as np
import torch

from agents import make_agent
from routing_env import RoutingVectorEnv
from routing_env.evaluation import route_split
from routing_env.routed import RoutedModel


def test_routed_model_equals_the_environment_on_the_same_policy() -> None:
    env = RoutingVectorEnv(num_envs=64, backbone="tiny-dynamic-resnet", split="test", lam=0.3)
    agent = make_agent("reinforce", env, seed=0)
    agent.learn(3000)
    records = route_split(agent, env)
    routed = RoutedModel(env.core.backbone, agent.policy_module())
    logits, macs, exits, decisions = routed(env.core.executor.inputs)
    labels = torch.from_numpy(env.core.labels)
    np.testing.assert_array_equal((logits.argmax(1) == labels).numpy(), records.correct)
    np.testing.assert_array_equal(exits.numpy(), records.exit_position)
    np.testing.assert_allclose(macs.numpy(), records.macs)
    np.testing.assert_array_equal(decisions.numpy(), records.decisions)
    assert len(np.unique(records.exit_position)) > 1 or len(np.unique(records.macs)) > 1  # the routes differ
    assert routed.policy_macs_per_decision == agent.policy_macs()
