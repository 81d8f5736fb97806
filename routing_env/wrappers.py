"""Observation wrappers for RL libraries that want a flat vector with the action mask beside it.

Our observation is a one-level ``Dict`` (docs/design.md §2) whose ``action_mask`` is the valid moves.
SB3's ``MultiInputPolicy`` reads it as it is; other libraries expect one flat array and the mask under
their own key: tianshou reads ``obs["mask"]`` (a bool array: its masked policies index with ``~mask``),
RLlib's action-masking module ``obs["action_mask"]`` beside ``obs["observations"]``, torchrl an
``action_mask`` entry. :class:`FlatObservation` gives exactly that, for a single environment or
(:class:`FlatObservationVector`) a vector one, so nobody writes the adapter again; for tianshou,
``FlatObservation(env, obs_key="obs", mask_key="mask", mask_dtype=bool)``.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.vector import VectorEnv, VectorObservationWrapper
from gymnasium.vector.utils import batch_space

FLAT_KEYS = ("features", "probs", "position", "cost")
"""The vector parts, concatenated in this order (and ``heads``, flattened, under ``obs_mode="heads"``)."""


def _flat_keys(space: spaces.Dict, obs_key: str, mask_key: str) -> list[str]:
    """The observation keys flattened, in order; ``ValueError`` if the two output keys clash, or if the
    space is not a routing environment's (a ``Dict`` with ``features`` and ``action_mask``: a wrapped
    CartPole, or a second ``FlatObservation`` over the first)."""
    if not isinstance(space, spaces.Dict) or not {"features", "action_mask"} <= set(space.spaces):
        found = sorted(space.spaces) if isinstance(space, spaces.Dict) else type(space).__name__
        raise ValueError(f"FlatObservation wraps a routing environment's Dict observation (with 'features' and "
                         f"'action_mask'), got {found}")
    if obs_key == mask_key:
        raise ValueError(f"obs_key and mask_key must differ, got {obs_key!r} twice")
    return [k for k in (*FLAT_KEYS, "heads", "heads_mask") if k in space.spaces]


def _mask_space(space: spaces.Space, mask_dtype: Any) -> spaces.Space:
    """The mask's space: ours (``MultiBinary``, int8) or, for another dtype, ``Box(0, 1)`` of that dtype."""
    dtype = np.dtype(mask_dtype)
    if dtype == np.int8:
        return space
    if dtype.kind not in "biuf":
        raise ValueError(f"mask_dtype must be a bool, integer or float dtype, got {mask_dtype!r}")
    return spaces.Box(0, 1, space.shape, dtype=dtype)


def _flat_space(space: spaces.Dict, obs_key: str, mask_key: str, mask_dtype: Any) -> spaces.Dict:
    keys = _flat_keys(space, obs_key, mask_key)
    low = np.concatenate([np.broadcast_to(space[k].low, space[k].shape).ravel() if isinstance(space[k], spaces.Box)
                          else np.zeros(int(np.prod(space[k].shape))) for k in keys]).astype(np.float32)
    high = np.concatenate([np.broadcast_to(space[k].high, space[k].shape).ravel() if isinstance(space[k], spaces.Box)
                           else np.ones(int(np.prod(space[k].shape))) for k in keys]).astype(np.float32)
    return spaces.Dict({obs_key: spaces.Box(low, high, dtype=np.float32),
                        mask_key: _mask_space(space["action_mask"], mask_dtype)})


def _flatten(obs: dict[str, np.ndarray], keys: list[str], batched: bool, obs_key: str, mask_key: str,
             mask_dtype: np.dtype, sort_probs: bool) -> dict[str, np.ndarray]:
    lead = (obs["features"].shape[0],) if batched else ()
    if sort_probs:
        obs = {**obs, "probs": -np.sort(-np.asarray(obs["probs"]), axis=-1)}
    flat = np.concatenate([np.asarray(obs[k], dtype=np.float32).reshape(*lead, -1) for k in keys], axis=-1)
    return {obs_key: flat, mask_key: obs["action_mask"].astype(mask_dtype, copy=False)}


class FlatObservation(gym.ObservationWrapper):
    """``{obs_key: float32 vector, mask_key: int8 mask}`` from a routing environment's observation.

    Args:
        env: a :class:`~routing_env.env.RoutingEnv` (or a wrapper of one).
        obs_key: where the flat vector goes (``"observations"`` for RLlib, ``"obs"`` for tianshou).
        mask_key: where the action mask goes (``"action_mask"``: RLlib, torchrl; ``"mask"``: tianshou).
        mask_dtype: the mask's dtype: ``np.int8`` (ours, a ``MultiBinary``) or another, in a ``Box(0, 1)``
            of that dtype (``bool`` for tianshou, whose masked policies take ``~mask``).
        sort_probs: put ``probs`` in decreasing order, as our own agents read them
            (:mod:`routing_env.agents.features`): the exit head's confidence, margin and entropy then sit in fixed
            slots of the vector, which an MLP reads far more easily than a softmax in class order.
    """

    def __init__(self, env: gym.Env, obs_key: str = "observations", mask_key: str = "action_mask",
                 mask_dtype: Any = np.int8, sort_probs: bool = False) -> None:
        super().__init__(env)
        self.obs_key, self.mask_key, self.sort_probs = obs_key, mask_key, sort_probs
        self.keys = _flat_keys(env.observation_space, obs_key, mask_key)
        self.observation_space = _flat_space(env.observation_space, obs_key, mask_key, mask_dtype)
        self.mask_dtype = self.observation_space[mask_key].dtype

    def observation(self, observation: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return _flatten(observation, self.keys, False, self.obs_key, self.mask_key, self.mask_dtype, self.sort_probs)

    def action_masks(self) -> Any:
        return self.env.unwrapped.action_masks()


class FlatObservationVector(VectorObservationWrapper):
    """:class:`FlatObservation` for a vector environment (every row flattened alike)."""

    def __init__(self, env: VectorEnv, obs_key: str = "observations", mask_key: str = "action_mask",
                 mask_dtype: Any = np.int8, sort_probs: bool = False) -> None:
        super().__init__(env)
        self.obs_key, self.mask_key, self.sort_probs = obs_key, mask_key, sort_probs
        self.keys = _flat_keys(env.single_observation_space, obs_key, mask_key)
        self.single_observation_space = _flat_space(env.single_observation_space, obs_key, mask_key, mask_dtype)
        self.observation_space = batch_space(self.single_observation_space, env.num_envs)
        self.mask_dtype = self.single_observation_space[mask_key].dtype

    def observations(self, observations: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return _flatten(observations, self.keys, True, self.obs_key, self.mask_key, self.mask_dtype, self.sort_probs)

    def action_masks(self) -> Any:
        """(num_envs, A) bool: ``RoutingVectorEnv.action_masks``, or on Gymnasium's own vector
        environments (``gym.make_vec(..., vectorization_mode="sync" | "async")``) each sub-environment's,
        stacked."""
        base = self.env.unwrapped
        if hasattr(base, "action_masks"):
            return base.action_masks()
        return np.stack(self.env.call("action_masks"))
