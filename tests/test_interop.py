"""What other RL libraries meet: Gymnasium's own wrappers, the autoreset modes, Python's TypeError for
unknown options, and the flat observation with the mask where each library expects it."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.error import ResetNeeded
from gymnasium.utils.env_checker import check_env

import routing_env  # noqa: F401
from routing_env import RoutingVectorEnv
from routing_env.core import EXIT, RUN
from routing_env.wrappers import FlatObservation, FlatObservationVector

ID = "routing_env/Cascade-v0"


def test_unknown_options_raise_pythons_own_type_error() -> None:
    with pytest.raises(TypeError, match=r"__init__\(\) got an unexpected keyword argument 'frameskip'"):
        gym.make(ID, backbone="tiny-cascade", frameskip=4)


def test_no_info_key_reuses_an_observation_key_with_another_meaning() -> None:
    env = gym.make(ID, backbone="tiny-cascade")
    obs, info = env.reset(seed=0)
    onward = next(int(a) for a in np.flatnonzero(obs["action_mask"]) if a != EXIT)
    obs, _, terminated, _, info = env.step(onward)  # an episode going on: info describes the same state as obs
    shared = set(obs) & set(info)
    assert not terminated and shared
    for key in shared:
        np.testing.assert_array_equal(obs[key], info[key], err_msg=key)
    _, _, _, _, info = env.step(EXIT)
    for key in set(obs) & set(info):
        assert np.shape(obs[key]) == np.shape(info[key]), key


FAMILIES = [("routing_env/Cascade-v0", "tiny-cascade"), ("routing_env/DynamicResNet-v0", "tiny-dynamic-resnet")]
"""Each registered id with its family's tiny backbone."""


@pytest.mark.parametrize("wrap", [
    lambda e: gym.wrappers.RecordEpisodeStatistics(e),
    lambda e: gym.wrappers.TimeLimit(e, max_episode_steps=2),
    lambda e: gym.wrappers.FlattenObservation(e),
    lambda e: gym.wrappers.NormalizeReward(e),
])
@pytest.mark.parametrize("env_id,backbone", FAMILIES)
def test_gymnasium_wrappers_work_on_a_single_env(wrap, env_id: str, backbone: str) -> None:  # noqa: ANN001
    env = wrap(gym.make(env_id, backbone=backbone))
    obs, info = env.reset(seed=0)
    episodes, rng = 0, np.random.default_rng(0)
    for _ in range(30):
        obs, reward, terminated, truncated, info = env.step(RUN if rng.random() < 0.5 else EXIT)
        assert env.observation_space.contains(obs)
        if terminated or truncated:
            episodes += 1
            obs, info = env.reset()
    assert episodes > 0


@pytest.mark.parametrize("mode,env_id,backbone", [
    (mode, *family) if (mode, family[1]) != ("async", "tiny-dynamic-resnet")
    else pytest.param(mode, *family, marks=pytest.mark.expensive)  # three spawned workers, each importing torch
    for mode in ("vector_entry_point", "sync", "async") for family in FAMILIES
])
def test_gymnasium_vector_wrappers_work_under_every_vectorization_mode(mode: str, env_id: str, backbone: str) -> None:
    # async workers are spawned: a forked copy of a process whose torch thread pool is running can hang
    # in the dynamic ResNet's blocks (the README says so for users)
    spawn = {"vector_kwargs": {"context": "spawn"}} if mode == "async" and "Dynamic" in env_id else {}
    env = gym.make_vec(env_id, num_envs=3, vectorization_mode=mode, backbone=backbone, **spawn)
    env = gym.wrappers.vector.RecordEpisodeStatistics(gym.wrappers.vector.NormalizeReward(gym.wrappers.vector.FlattenObservation(env)))
    obs, _ = env.reset(seed=0)
    ended, recorded = 0, 0
    for _ in range(12):
        obs, reward, terminated, truncated, info = env.step(np.array([EXIT, RUN, EXIT]))
        assert obs.shape[0] == 3 and np.isfinite(reward).all()
        ended += int(terminated.sum())
        recorded += int(info["_episode"].sum()) if "episode" in info else 0
    assert ended > 0 and recorded == ended
    env.close()


def test_make_vec_time_limit_truncates_long_episodes() -> None:
    # TimeLimit inside each sub-environment (make_vec's max_episode_steps): a dynamic ResNet route of
    # 9 decisions on tiny-dynamic-resnet is cut at 2, reported as truncated, and the slot starts again
    env = gym.make_vec("routing_env/DynamicResNet-v0", num_envs=2, vectorization_mode="sync", max_episode_steps=2,
                       backbone="tiny-dynamic-resnet")
    env.reset(seed=0)
    truncated_any = False
    for _ in range(6):
        _, _, terminated, truncated, _ = env.step(np.array([RUN, RUN]))
        truncated_any |= bool(truncated.any())
        assert not (terminated & truncated).any()
    assert truncated_any
    env.close()


def test_disabled_autoreset_waits_for_a_partial_reset() -> None:
    env = RoutingVectorEnv(num_envs=2, backbone="tiny-cascade", autoreset_mode="Disabled")
    assert env.autoreset_mode == gym.vector.AutoresetMode.DISABLED
    env.reset(seed=0)
    _, _, terminated, _, _ = env.step(np.array([EXIT, RUN]))
    assert terminated.tolist() == [True, False]
    with pytest.raises(ResetNeeded, match=r"slots \[0\] have ended"):
        env.step(np.array([RUN, RUN]))
    obs, _ = env.reset(options={"reset_mask": terminated})
    assert obs["position"][0].argmax() == 0 and obs["position"][1].argmax() == 1
    env.step(np.array([RUN, RUN]))


@pytest.mark.parametrize("obs_key,mask_key", [("observations", "action_mask"), ("obs", "mask")])
def test_flat_observation_puts_the_mask_where_the_library_wants_it(obs_key: str, mask_key: str) -> None:
    base = gym.make(ID, backbone="tiny-cascade")
    env = FlatObservation(base, obs_key=obs_key, mask_key=mask_key)
    check_env(env.unwrapped, skip_render_check=True)
    obs, _ = env.reset(seed=0)
    assert set(obs) == {obs_key, mask_key} and env.observation_space.contains(obs)
    raw = base.unwrapped.core.observation(np.zeros(1, dtype=np.int64))
    want = np.concatenate([raw[k][0].ravel() for k in ("features", "probs", "position", "cost")])
    np.testing.assert_array_equal(obs[obs_key], want.astype(np.float32))
    np.testing.assert_array_equal(obs[mask_key], raw["action_mask"][0])
    venv = FlatObservationVector(gym.make_vec(ID, num_envs=4, vectorization_mode="vector_entry_point", backbone="tiny-cascade"),
                                 obs_key=obs_key, mask_key=mask_key)
    vobs, _ = venv.reset(seed=0)
    assert vobs[obs_key].shape == (4, want.size) and vobs[mask_key].shape == (4, 3)
    assert venv.observation_space.contains(vobs)
    with pytest.raises(ValueError, match="must differ"):
        FlatObservation(base, obs_key="x", mask_key="x")


@pytest.mark.parametrize("mode", ["vector_entry_point", "sync"])
def test_flat_observation_vector_gives_the_masks_of_any_vector_env(mode: str) -> None:
    """``action_masks()`` (MaskablePPO's question) on our vector env and on Gymnasium's own, whose
    sub-environments each answer it: the same rows as the flat observation's mask."""
    venv = FlatObservationVector(gym.make_vec(ID, num_envs=3, vectorization_mode=mode, backbone="tiny-cascade"))
    obs, _ = venv.reset(seed=0)
    obs, *_ = venv.step(np.array([RUN, EXIT, RUN]))
    masks = venv.action_masks()
    assert masks.shape == (3, 3) and masks.dtype == bool
    np.testing.assert_array_equal(masks, obs["action_mask"].astype(bool))
    venv.close()


def test_flat_observation_can_sort_probs_as_our_agents_read_them() -> None:
    plain = FlatObservationVector(gym.make_vec(ID, num_envs=4, vectorization_mode="vector_entry_point", backbone="tiny-cascade"))
    ranked = FlatObservationVector(gym.make_vec(ID, num_envs=4, vectorization_mode="vector_entry_point", backbone="tiny-cascade"),
                                   sort_probs=True)
    a, _ = plain.reset(seed=0)
    b, _ = ranked.reset(seed=0)
    features = plain.unwrapped.single_observation_space["features"].shape[0]
    classes = plain.unwrapped.single_observation_space["probs"].shape[0]
    probs = slice(features, features + classes)
    assert not np.array_equal(a["observations"][:, probs], b["observations"][:, probs])  # class order differs from rank order
    np.testing.assert_array_equal(b["observations"][:, probs], -np.sort(-a["observations"][:, probs], axis=1))
    np.testing.assert_array_equal(np.delete(a["observations"], probs, axis=1), np.delete(b["observations"], probs, axis=1))
    single = FlatObservation(gym.make(ID, backbone="tiny-cascade"), sort_probs=True)
    obs, _ = single.reset(seed=0)
    assert (np.diff(obs["observations"][probs]) <= 0).all() and single.observation_space.contains(obs)


def test_flat_observation_gives_tianshou_a_bool_mask() -> None:
    # tianshou's masked policies take ``~obs.mask``: on our int8 mask that is -2/-1 (fancy indexing that
    # masks the wrong actions), so its recipe asks for a bool mask.
    env = FlatObservation(gym.make(ID, backbone="tiny-cascade"), obs_key="obs", mask_key="mask", mask_dtype=bool)
    assert env.observation_space["mask"] == gym.spaces.Box(0, 1, (3,), dtype=bool)
    obs, _ = env.reset(seed=0)
    for action in (RUN, RUN, EXIT):  # through every decision point of the tiny cascade
        assert obs["mask"].dtype == np.bool_ and env.observation_space.contains(obs)
        np.testing.assert_array_equal(obs["mask"], env.unwrapped.action_masks())
        logits = np.ones(3)
        logits[~obs["mask"]] = -np.inf  # tianshou's MARLRandomDiscreteMaskedOffPolicyAlgorithm
        assert obs["mask"][logits.argmax()]
        obs, _, terminated, _, _ = env.step(action)
    assert terminated
    venv = FlatObservationVector(gym.make_vec(ID, num_envs=4, vectorization_mode="vector_entry_point", backbone="tiny-cascade"),
                                 obs_key="obs", mask_key="mask", mask_dtype=bool)
    vobs, _ = venv.reset(seed=0)
    assert vobs["mask"].dtype == np.bool_ and venv.observation_space.contains(vobs)
    assert FlatObservation(gym.make(ID, backbone="tiny-cascade"), mask_dtype=np.float32).reset(seed=0)[0]["action_mask"].dtype == np.float32
    with pytest.raises(ValueError, match="mask_dtype"):
        FlatObservation(gym.make(ID, backbone="tiny-cascade"), mask_dtype=str)


def test_the_readmes_sb3_recipe_learns_to_route_and_scores_test() -> None:
    """SB3 and sb3-contrib used directly, as the README shows: MaskablePPO on the Dict observation
    with the project's extractor, the mask read from ``action_masks()``, scored on every test image."""
    from helpers import readme_block

    namespace: dict = {}
    exec(compile(readme_block("sb3-recipe"), "README.md: sb3-recipe", "exec"), namespace)
    routing = namespace["test"].unwrapped.routing
    cache = routing_env.backbones.make_backbone("tiny-cascade").feature_cache("synthetic", "test")
    first = float((cache.logits[0].argmax(1) == cache.labels).mean())
    assert len(namespace["outcomes"]) == len(cache.labels)
    # learned to route: more accurate than the first head, and cheaper than running every member
    assert first < namespace["accuracy"] and namespace["macs_fraction"] < sum(routing.member_macs) / routing.reference_macs
