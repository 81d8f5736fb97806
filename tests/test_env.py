import copy
import pickle
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.error import ResetNeeded
from gymnasium.utils.env_checker import check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

from helpers import assert_same, rollout
from routing_env import ENV_IDS, RoutingEnv, RoutingVectorEnv
from routing_env.core import EXIT, RUN, SKIP

TINY_OF = {"routing_env/Cascade-v0": "tiny-cascade", "routing_env/DynamicResNet-v0": "tiny-dynamic-resnet"}
"""Each registered id with the built-in tiny backbone of its family."""


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_gymnasium_and_sb3_checkers_pass_without_warnings(env_id: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        env = gym.make(env_id, backbone=TINY_OF[env_id])
        check_env(env.unwrapped, skip_render_check=True)
        sb3_check_env(env.unwrapped, warn=True)


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_checkers_pass_with_skip_budget_and_penalties(env_id: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        env = gym.make(env_id, backbone=TINY_OF[env_id], allow_skip=True, max_macs=0.5, invalid_action="penalize", reward="cross-entropy-per-step")
        check_env(env.unwrapped, skip_render_check=True)
        sb3_check_env(env.unwrapped, warn=True)


def test_seeded_environments_are_identical() -> None:
    actions = list(np.random.default_rng(0).integers(0, 3, size=200))
    a = rollout(RoutingEnv(backbone="tiny-cascade", allow_skip=True), actions, seed=7)
    b = rollout(RoutingEnv(backbone="tiny-cascade", allow_skip=True), actions, seed=7)
    assert_same(a, b)
    c = rollout(RoutingEnv(backbone="tiny-cascade", allow_skip=True), actions, seed=8)
    with pytest.raises(AssertionError):
        assert_same(a, c)


def test_pickle_round_trip_continues_identically() -> None:
    env = RoutingEnv(backbone="tiny-cascade")
    env.reset(seed=3)
    env.step(RUN)
    clone = pickle.loads(pickle.dumps(env))
    for e in (env, clone):
        e.step(RUN)
    actions = [RUN, RUN, EXIT] * 10
    trace_env = [env.step(EXIT)] + rollout_from(env, actions)
    trace_clone = [clone.step(EXIT)] + rollout_from(clone, actions)
    assert_same(trace_env, trace_clone)


def rollout_from(env: RoutingEnv, actions: list[int]) -> list:
    out = []
    env.reset()
    for a in actions:
        step = env.step(a)
        out.append(step)
        if step[2]:
            out.append(env.reset())
    return out


def test_reset_index_option_routes_that_instance(env: RoutingEnv) -> None:
    env.reset(options={"index": 5})
    *_, info = env.step(EXIT)
    assert info["label"] == env.core.labels[5]
    with pytest.raises(ValueError, match="index"):
        env.reset(options={"index": env.unwrapped.num_instances})
    with pytest.raises(ValueError, match=r"unknown reset options \['indx'\]; expected some of \['index'\]"):
        env.reset(options={"indx": 5})  # a typo must not route a random instance


def test_terminal_info_has_every_key(env: RoutingEnv) -> None:
    env.reset(seed=0)
    obs, reward, terminated, truncated, info = env.step(EXIT)
    assert terminated and not truncated
    for key in ("action_mask", "macs", "macs_fraction", "decision_point", "invalid_action",
                "prediction", "label", "correct", "exit_position", "reward_terms"):
        assert key in info
    assert info["action_mask"].dtype == np.int8
    assert info["correct"] == (info["prediction"] == info["label"])
    assert reward == pytest.approx(sum(info["reward_terms"].values()))


def test_only_exit_is_valid_after_the_last_stage(env: RoutingEnv) -> None:
    obs, _ = env.reset(seed=0)
    for _ in range(env.core.num_stages):
        obs, *_ = env.step(RUN)
    assert obs["action_mask"].tolist() == [1, 0, 0]
    obs, reward, terminated, _, info = env.step(RUN)  # RUN past the end falls back to EXIT
    assert terminated and info["invalid_action"]


def test_skip_is_masked_unless_allowed() -> None:
    obs, _ = RoutingEnv(backbone="tiny-cascade").reset(seed=0)
    assert obs["action_mask"][SKIP] == 0
    obs, _ = RoutingEnv(backbone="tiny-cascade", allow_skip=True).reset(seed=0)
    assert obs["action_mask"][SKIP] == 1


def test_invalid_action_raise_mode_names_the_action() -> None:
    env = RoutingEnv(backbone="tiny-cascade", invalid_action="raise")
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"action 1 \(SKIP\) is invalid"):
        env.step(SKIP)


def test_a_vector_step_that_raises_changes_nothing_not_even_the_pending_restarts() -> None:
    """A caught ``invalid_action="raise"`` error leaves the episodes as they were: a slot that ended the
    step before is not restarted on a draw that the retry would throw away."""
    envs = [RoutingVectorEnv(backbone="tiny-cascade", num_envs=2, invalid_action="raise") for _ in range(2)]
    for venv in envs:
        venv.reset(seed=0)
        venv.step(np.array([EXIT, RUN]))  # slot 0 ends; it restarts on the next step
    failing, clean = envs
    before = failing.routing.instances()
    with pytest.raises(ValueError, match=r"action 1 \(SKIP\) is invalid"):
        failing.step(np.array([EXIT, SKIP]))
    assert np.array_equal(failing.routing.instances(), before)
    for venv in envs:
        venv.step(np.array([EXIT, EXIT]))
    assert np.array_equal(failing.routing.instances(), clean.routing.instances())


def test_invalid_action_penalize_adds_a_penalty_term() -> None:
    env = RoutingEnv(backbone="tiny-cascade", invalid_action="penalize", invalid_penalty=0.25)
    env.reset(seed=0)
    _, reward, _, _, info = env.step(SKIP)
    assert info["invalid_action"] and reward == pytest.approx(-0.25)


@pytest.mark.parametrize("action", [3, -1, 1.0, "0", None, np.array([0]), True])
def test_out_of_space_actions_raise_value_error_naming_them(env: RoutingEnv, action: object) -> None:
    env.reset(seed=0)
    with pytest.raises(ValueError, match="not in the action space Discrete\\(3\\)"):
        env.step(action)


def test_numpy_integer_actions_are_accepted(env: RoutingEnv) -> None:
    env.reset(seed=0)
    obs, _, terminated, _, info = env.step(np.int64(RUN))  # read as RUN, not resolved from something else
    assert not terminated and not info["invalid_action"] and obs["position"].argmax() == 1
    _, _, terminated, _, info = env.step(np.array(EXIT))
    assert terminated and not info["invalid_action"] and info["exit_position"] == 1


def test_step_before_reset_and_after_the_end_needs_reset(env: RoutingEnv) -> None:
    with pytest.raises(ResetNeeded):
        env.step(EXIT)
    env.reset(seed=0)
    env.step(EXIT)
    with pytest.raises(ResetNeeded):
        env.step(EXIT)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"colour": "red"}, TypeError, r"got an unexpected keyword argument 'colour' \(unknown environment option\(s\) \['colour'\]; valid options: \['backbone'"),
        ({"backbone": "resnet9000"}, ValueError, r"unknown backbone 'resnet9000'; expected one of \['cifar10-resnet-cascade', .*'tiny-cascade', 'tiny-dynamic-resnet'\]"),
        ({"obs_mode": "pixels"}, ValueError, r"unknown obs_mode 'pixels'; expected one of \('vector', 'heads'\)"),
        ({"lam": -0.1}, ValueError, r"lam must be a finite number >= 0, got -0.1"),
        ({"split": "holdout"}, ValueError, r"unknown split 'holdout'"),
        ({"dataset": "mnist"}, ValueError, r"unknown dataset 'mnist'"),
        ({"invalid_action": "ignore"}, ValueError, r"unknown invalid_action 'ignore'"),
        ({"reward": "f1"}, ValueError, r"unknown reward 'f1'"),
        ({"max_macs": 0.001}, ValueError, r"max_macs=0.001 is below the cheapest route"),
        ({"max_macs": -1}, ValueError, r"max_macs must be a number > 0"),
        ({"train_backbone": True, "backbone_lr": -1.0}, ValueError, r"backbone_lr must be a finite number > 0"),
        ({"device": "gpu7"}, ValueError, r"invalid device 'gpu7'"),
    ],
)
def test_bad_options_give_clear_errors(kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        gym.make("routing_env/Cascade-v0", **{"backbone": "tiny-cascade", **kwargs})


def test_observations_are_fresh_arrays(env: RoutingEnv) -> None:
    obs, _ = env.reset(seed=0)
    kept = copy.deepcopy(obs)
    env.step(RUN)
    assert_same(obs, kept)


def test_heads_observation_holds_every_head_evaluated_so_far() -> None:
    from gymnasium.utils.env_checker import check_env

    from routing_env.core import softmax

    env = RoutingEnv(backbone="tiny-cascade", obs_mode="heads", allow_skip=True)
    check_env(env, skip_render_check=True)
    h, c = env.observation_space["heads"].shape
    assert (h, c) == (3, env.observation_space["probs"].shape[0]) and env.observation_space["heads_mask"].n == 3
    cache = env.unwrapped.core.executor.cache
    obs, info = env.reset(seed=3, options={"index": 7})

    def expected(member: int) -> np.ndarray:
        return softmax(cache.logits[member, 7][None].astype(np.float32).copy())[0][0]

    np.testing.assert_array_equal(obs["heads_mask"], [1, 0, 0])
    np.testing.assert_allclose(obs["heads"][0], expected(0), rtol=1e-6)
    np.testing.assert_array_equal(obs["heads"][1:], 0.0)
    obs, *_ = env.step(SKIP)  # a skipped member's head is not evaluated
    np.testing.assert_array_equal(obs["heads_mask"], [1, 0, 0])
    obs, *_ = env.step(RUN)
    np.testing.assert_array_equal(obs["heads_mask"], [1, 0, 1])
    np.testing.assert_allclose(obs["heads"][2], expected(2), rtol=1e-6)
    np.testing.assert_allclose(obs["heads"][2], obs["probs"])
    np.testing.assert_allclose(obs["heads"][0], expected(0), rtol=1e-6)
    np.testing.assert_array_equal(obs["heads"][1], 0.0)
    obs, _ = env.reset(options={"index": 8})  # a new episode starts clean
    np.testing.assert_array_equal(obs["heads_mask"], [1, 0, 0])
    np.testing.assert_array_equal(obs["heads"][1:], 0.0)


def test_agents_read_the_heads_observation() -> None:
    from routing_env.agents import make_agent
    from routing_env.agents.features import input_dim

    venv = RoutingVectorEnv(num_envs=16, backbone="tiny-cascade", obs_mode="heads", autoreset_mode="SameStep")
    plain = RoutingVectorEnv(num_envs=16, backbone="tiny-cascade")
    assert input_dim(venv.single_observation_space) == input_dim(plain.single_observation_space) + 3 * 4 + 3
    for name in ("reinforce", "ppo"):
        agent = make_agent(name, venv, seed=0, **({"n_steps": 16, "batch_size": 64} if name == "ppo" else {}))
        agent.learn(512)
        obs, _ = venv.reset(seed=0)
        assert agent.predict(obs, venv).shape == (16,)
