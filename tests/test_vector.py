import gymnasium as gym
import numpy as np
import pytest
from gymnasium.vector import AutoresetMode

from helpers import assert_same
from routing_env import RoutingEnv, RoutingVectorEnv
from routing_env.core import EXIT, RUN


def test_make_vec_returns_the_native_vector_env() -> None:
    venv = gym.make_vec("routing_env/Cascade-v0", backbone="tiny-cascade", num_envs=4, vectorization_mode="vector_entry_point")
    assert isinstance(venv, RoutingVectorEnv)
    assert venv.metadata["autoreset_mode"] == AutoresetMode.NEXT_STEP
    obs, info = venv.reset(seed=0)
    assert venv.observation_space.contains(obs)
    assert venv.single_action_space.n == 3 and venv.action_space.shape == (4,)


def test_vector_spaces_contain_every_observation() -> None:
    venv = RoutingVectorEnv(backbone="tiny-cascade", num_envs=16, allow_skip=True)
    obs, _ = venv.reset(seed=1)
    rng = np.random.default_rng(0)
    for _ in range(30):
        assert venv.observation_space.contains(obs)
        obs, reward, terminated, truncated, info = venv.step(rng.integers(0, 3, size=16))
        assert reward.shape == terminated.shape == truncated.shape == (16,)


def test_vector_and_single_envs_agree_on_the_same_instances() -> None:
    venv = RoutingVectorEnv(backbone="tiny-cascade", num_envs=5, allow_skip=True)
    single = RoutingEnv(backbone="tiny-cascade", allow_skip=True)
    indices = np.array([0, 3, 7, 11, 19])
    plans = [[EXIT], [RUN, EXIT], [RUN, RUN, EXIT], [1, EXIT], [RUN, 1, EXIT]]
    obs, info = venv.reset(options={"index": indices})
    for i, plan in enumerate(plans):
        s_obs, _ = single.reset(options={"index": int(indices[i])})
        assert_same({k: v[i] for k, v in obs.items()}, s_obs)
    for t in range(3):
        actions = np.array([p[min(t, len(p) - 1)] for p in plans])
        obs, reward, terminated, _, info = venv.step(actions)
        for i, plan in enumerate(plans):
            if t >= len(plan):
                continue
            s_obs, s_reward, s_term, _, s_info = single_step(single, indices[i], plan[: t + 1])
            assert reward[i] == s_reward and terminated[i] == s_term
            assert info["macs"][i] == s_info["macs"]
            if not s_term:
                assert_same({k: v[i] for k, v in obs.items()}, s_obs)
            else:
                assert info["_correct"][i] and info["correct"][i] == s_info["correct"]
                assert info["reward_terms"]["correct"][i] == s_info["reward_terms"]["correct"]


def single_step(env: RoutingEnv, index: int, actions: list[int]):
    env.reset(options={"index": int(index)})
    for a in actions:
        result = env.step(a)
    return result


def test_next_step_autoreset_ignores_the_action_after_the_end() -> None:
    venv = RoutingVectorEnv(backbone="tiny-cascade", num_envs=2)
    venv.reset(seed=0)
    _, reward, terminated, _, info = venv.step(np.array([EXIT, RUN]))
    assert terminated.tolist() == [True, False]
    assert info["_correct"].tolist() == [True, False]
    obs, reward, terminated, _, info = venv.step(np.array([RUN, RUN]))
    assert reward[0] == 0.0 and not terminated[0]
    assert obs["position"][0].argmax() == 0 and obs["position"][1].argmax() == 2


def test_same_step_autoreset_returns_final_observations() -> None:
    venv = RoutingVectorEnv(backbone="tiny-cascade", num_envs=2, autoreset_mode="SameStep")
    venv.reset(seed=0)
    obs, _, terminated, _, info = venv.step(np.array([RUN, EXIT]))
    assert terminated.tolist() == [False, True]
    assert info["_final_obs"].tolist() == [False, True]
    assert info["final_obs"][1]["position"].argmax() == 0
    assert info["final_info"]["_correct"][1]
    masks = [k for k in info["final_info"] if k.startswith("_")]
    assert "_macs" in masks and all(info["final_info"][k].tolist() == [False, True] for k in masks)  # only the slot that ended
    assert info["_macs"].tolist() == [True, True]
    assert obs["position"][1].argmax() == 0 and obs["position"][0].argmax() == 1


def test_seeded_vector_envs_are_identical() -> None:
    def trace(seed: int) -> list:
        venv = RoutingVectorEnv(backbone="tiny-cascade", num_envs=8, allow_skip=True)
        out = [venv.reset(seed=seed)]
        rng = np.random.default_rng(1)
        for _ in range(20):
            out.append(venv.step(rng.integers(0, 3, size=8)))
        return out

    assert_same(trace(3), trace(3))
    with pytest.raises(AssertionError):  # and the seed is what decides
        assert_same(trace(3), trace(4))


@pytest.mark.parametrize(
    ("actions", "match"),
    [(np.array([0, 1]), r"shape \(3,\)"), (np.array([0.0, 1.0, 2.0]), "integer array"), (np.array([0, 1, 5]), r"\[5\] are not in")],
)
def test_bad_action_batches_raise(actions: np.ndarray, match: str) -> None:
    venv = RoutingVectorEnv(backbone="tiny-cascade", num_envs=3)
    venv.reset(seed=0)
    with pytest.raises(ValueError, match=match):
        venv.step(actions)


def test_bad_vector_options() -> None:
    with pytest.raises(ValueError, match="num_envs must be a positive integer"):
        RoutingVectorEnv(backbone="tiny-cascade", num_envs=0)
    with pytest.raises(ValueError, match="unknown autoreset_mode"):
        RoutingVectorEnv(backbone="tiny-cascade", num_envs=2, autoreset_mode="Later")
    venv = RoutingVectorEnv(backbone="tiny-cascade", num_envs=2)
    with pytest.raises(ValueError, match=r"must have shape \(2,\)"):
        venv.reset(options={"index": [1]})


@pytest.mark.parametrize(
    "options",
    [
        {"backbone": "tiny-cascade", "allow_skip": True, "invalid_action": "penalize"},
        {"max_macs": 0.5, "reward": "cross-entropy-per-step"},  # the shipped CIFAR-10 cascade, from its caches
        {"backbone": "tiny-dynamic-resnet", "max_macs": 0.7, "reward": "accuracy-shaped"},
    ],
    ids=["tiny-cascade", "cifar10-cascade", "tiny-dynamic-resnet"],
)
def test_every_slot_of_a_vector_env_follows_the_single_env_trajectory(options: dict) -> None:
    """Random actions (invalid ones included) on B slots with autoreset: each slot's observations,
    rewards, terminations and infos equal a single environment's on the same instances and actions
    (exactly from a cascade's caches; a dynamic ResNet's convolutions round differently at other batch
    sizes, so its features and rewards agree to float rounding and everything discrete exactly)."""
    b, steps = 6, 40
    exact = "dynamic" not in options.get("backbone", "")
    same = assert_same if exact else assert_close
    venv = RoutingVectorEnv(num_envs=b, **options)
    singles = [RoutingEnv(**options) for _ in range(b)]
    rng = np.random.default_rng(0)
    obs, _ = venv.reset(seed=3)
    for i, env in enumerate(singles):
        s_obs, _ = env.reset(options={"index": int(venv.core.index[i])})
        same({k: v[i] for k, v in obs.items()}, s_obs)
    restarting = np.zeros(b, dtype=bool)
    ended = 0
    for _ in range(steps):
        actions = rng.integers(0, venv.single_action_space.n, size=b)
        obs, reward, terminated, _, info = venv.step(actions)
        for i, env in enumerate(singles):
            if restarting[i]:  # NextStep autoreset: this step started a new episode in slot i
                s_obs, s_info = env.reset(options={"index": int(venv.core.index[i])})
                assert reward[i] == 0.0 and not terminated[i]
            else:
                s_obs, s_reward, s_terminated, _, s_info = env.step(int(actions[i]))
                same(reward[i], s_reward)
                assert terminated[i] == s_terminated
                assert info["invalid_action"][i] == s_info["invalid_action"]
                if s_terminated:
                    ended += 1
                    for key in ("prediction", "label", "correct", "exit_position"):
                        assert info[f"_{key}"][i] and info[key][i] == s_info[key]
                    same({k: v[i] for k, v in info["reward_terms"].items()}, s_info["reward_terms"])
            same({k: v[i] for k, v in obs.items()}, s_obs)
            for key in ("action_mask", "macs", "macs_fraction", "decision_point"):
                assert_same(info[key][i], s_info[key])
        restarting = terminated.copy()
    assert ended >= b  # episodes ended and restarted in every slot on average


def assert_close(a: object, b: object) -> None:
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            assert_close(a[k], b[k])
    else:
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("backbone", ["tiny-cascade", "tiny-dynamic-resnet"])
def test_a_one_slot_vector_env_and_a_single_env_give_the_same_trajectory_for_the_same_seed(backbone: str) -> None:
    venv = RoutingVectorEnv(num_envs=1, backbone=backbone)
    env = RoutingEnv(backbone=backbone)
    same = assert_same if "cascade" in backbone else assert_close  # convolutions round by batch size
    obs, _ = venv.reset(seed=7)
    s_obs, _ = env.reset(seed=7)
    same({k: v[0] for k, v in obs.items()}, s_obs)
    rng = np.random.default_rng(1)
    restart, episodes = False, 0
    for _ in range(150):
        action = int(rng.integers(venv.single_action_space.n))
        obs, reward, terminated, _, _ = venv.step(np.array([action]))
        if restart:  # the vector env's autoreset step draws the next instance, as reset() does
            s_obs, _ = env.reset()
            episodes += 1
        else:
            s_obs, s_reward, s_terminated, _, _ = env.step(action)
            same(reward[0], s_reward)
            assert terminated[0] == s_terminated
        same({k: v[0] for k, v in obs.items()}, s_obs)
        restart = bool(terminated[0])
    assert episodes >= 20
