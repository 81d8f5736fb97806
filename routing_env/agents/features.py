"""What a routing policy reads from an observation (docs/design.md §2).

The vector parts — ``features``, ``probs``, ``position``, ``cost`` — concatenated, with ``probs``
sorted in decreasing order; under ``obs_mode="heads"`` also every head's softmax so far (unsorted, so
that agreement between heads is visible) and ``heads_mask``. The sorted softmax carries the exit head's confidence (its maximum, its
margin, its entropy) in fixed slots that an MLP reads directly; unsorted, the policy would have to
learn a max over classes before it could even match the confidence-threshold baseline. The class
identity stays available in ``features``. The action mask is applied to the logits, not read.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor

OBS_KEYS = ("features", "probs", "position", "cost")


HEAD_KEYS = ("heads", "heads_mask")
"""Read too when the observation has them (``obs_mode="heads"``)."""


def input_dim(space: gym.spaces.Dict) -> int:
    """Length of the policy input for observations of ``space``."""
    keys = OBS_KEYS + tuple(k for k in HEAD_KEYS if k in space.spaces)
    return sum(int(np.prod(space[k].shape)) for k in keys)


def policy_input(obs: dict[str, torch.Tensor]) -> torch.Tensor:
    """The policy input ``(B, input_dim)`` of batched observation tensors, in the features' float
    dtype (float32 unless a model was moved to another)."""
    dtype = obs["features"].dtype if obs["features"].is_floating_point() else torch.float32
    probs = torch.sort(obs["probs"].to(dtype), dim=-1, descending=True).values
    parts = [obs["features"].to(dtype), probs, obs["position"].to(dtype), obs["cost"].to(dtype)]
    parts += [obs[k].to(dtype).flatten(1) for k in HEAD_KEYS if k in obs]
    return torch.cat(parts, dim=-1)


def policy_input_np(obs: dict[str, np.ndarray]) -> torch.Tensor:
    """:func:`policy_input` of batched numpy observations."""
    return policy_input({k: torch.as_tensor(obs[k]) for k in OBS_KEYS + HEAD_KEYS if k in obs})


class RoutingExtractor(BaseFeaturesExtractor):
    """SB3 features extractor computing :func:`policy_input` (used by every SB3 agent here)."""

    def __init__(self, observation_space: gym.spaces.Dict) -> None:
        super().__init__(observation_space, features_dim=input_dim(observation_space))

    def forward(self, observations: dict[str, torch.Tensor]) -> torch.Tensor:
        return policy_input(observations)
