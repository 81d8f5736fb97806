"""tianshou collects episodes with its own masking convention (``obs.obs``, ``obs.mask``) through
``FlatObservation`` (issue 19).

Runs in its own venv with tianshou installed (``make test-clients``); skipped elsewhere."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

pytestmark = pytest.mark.clients

pytest.importorskip("tianshou")

from tianshou.algorithm.modelfree.dqn import DQN, DiscreteQLearningPolicy  # noqa: E402
from tianshou.algorithm.optim import AdamOptimizerFactory  # noqa: E402
from tianshou.algorithm.random import MARLRandomDiscreteMaskedOffPolicyAlgorithm  # noqa: E402
from tianshou.data import Collector, VectorReplayBuffer  # noqa: E402
from tianshou.env import DummyVectorEnv  # noqa: E402
from tianshou.utils.net.common import Net  # noqa: E402
from tianshou.utils.torch_utils import policy_within_training_step  # noqa: E402

from helpers import readme_block  # noqa: E402
from routing_env.wrappers import FlatObservation  # noqa: E402


def make_env() -> gym.Env:
    """The README's recipe: the flat vector under ``obs``, the mask, as bools, under ``mask``."""
    env = gym.make("routing_env:routing_env/Cascade-v0", backbone="tiny-cascade")
    return FlatObservation(env, obs_key="obs", mask_key="mask", mask_dtype=bool)


def collected(collector: Collector) -> tuple[int, int]:
    """(steps in the buffer, invalid actions among them: by the mask seen, and by the env's own flag)."""
    batch, _ = collector.buffer.sample(0)
    mask = np.asarray(batch.obs.mask)
    assert mask.dtype == np.bool_
    by_mask = int((~mask[np.arange(len(batch)), batch.act]).sum())
    by_env = int(np.asarray(batch.info.invalid_action).sum())
    return len(batch), by_mask + by_env


def test_masked_random_policy_collects_only_valid_actions() -> None:
    envs = DummyVectorEnv([make_env for _ in range(4)])
    envs.seed(0)
    algorithm = MARLRandomDiscreteMaskedOffPolicyAlgorithm(make_env().action_space)
    collector = Collector(algorithm, envs, VectorReplayBuffer(2000, len(envs)))
    collector.reset()
    stats = collector.collect(n_episode=40)
    assert stats.n_collected_episodes == 40 and np.isfinite(stats.returns).all()
    assert set(stats.lens.tolist()) <= {1, 2, 3} and stats.lens.max() > 1  # tiny-cascade: 1 to 3 decisions
    steps, invalid = collected(collector)
    assert steps == stats.n_collected_steps and invalid == 0


def test_dqn_collects_with_the_mask_and_updates() -> None:
    env = make_env()
    envs = DummyVectorEnv([make_env for _ in range(4)])
    envs.seed(0)
    net = Net(state_shape=env.observation_space["obs"].shape, action_shape=env.action_space.n, hidden_sizes=[32])
    policy = DiscreteQLearningPolicy(model=net, action_space=env.action_space, observation_space=env.observation_space,
                                     eps_training=0.5)
    algorithm = DQN(policy=policy, optim=AdamOptimizerFactory(lr=1e-3))
    collector = Collector(algorithm, envs, VectorReplayBuffer(2000, len(envs)), exploration_noise=True)
    collector.reset()
    with policy_within_training_step(algorithm.policy):
        stats = collector.collect(n_step=200)
    assert stats.n_collected_episodes > 0 and np.isfinite(stats.returns).all()
    steps, invalid = collected(collector)
    assert steps >= 200 and invalid == 0  # greedy and ε-random actions both honour the mask
    with policy_within_training_step(algorithm.policy):
        update = algorithm.update(buffer=collector.buffer, sample_size=64)
    assert np.isfinite(update.loss)


def test_the_readme_recipe_runs_as_written() -> None:
    namespace: dict = {}
    exec(compile(readme_block("tianshou-recipe"), "README.md: tianshou-recipe", "exec"), namespace)
    stats = namespace["stats"]
    assert stats.n_collected_episodes == 100 and np.isfinite(stats.returns).all()
    steps, invalid = collected(namespace["collector"])
    assert steps == stats.n_collected_steps and invalid == 0
