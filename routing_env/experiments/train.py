"""Train a policy on a routing environment and evaluate it (docs/design.md §10).

Every evaluation goes through :func:`evaluation_env`: frozen always, and a co-trained run is evaluated
on its own saved backbone (``backbone.pt``), so no evaluation changes a weight or learns from the split
it scores.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gymnasium as gym

from .. import ENV_IDS, __version__
from ..checkpoints import save_state_dict, write_json
from ..env import RoutingVectorEnv
from ..evaluation import route_split, summarize
from ..provenance import provenance

if TYPE_CHECKING:
    from agents import Agent

EVAL_BATCH = 256


def make_vector_env(env_id: str, num_envs: int, **kwargs: Any) -> gym.vector.VectorEnv:
    """A natively vectorised routing environment for a registered id (wrapped in
    :class:`~routing_env.cotraining.CoTrainBackbone` when ``train_backbone=True``)."""
    if env_id not in gym.registry or not env_id.startswith("routing_env/"):
        raise ValueError(f"unknown environment id {env_id!r}; expected one of {list(ENV_IDS)}")
    env = gym.make_vec(env_id, num_envs=num_envs, vectorization_mode="vector_entry_point", **kwargs)
    assert isinstance(env.unwrapped, RoutingVectorEnv)
    return env


def evaluation_kwargs(env_kwargs: dict[str, Any], split: str, run: Path | None = None) -> dict[str, Any]:
    """The options of an environment that evaluates on ``split``: always frozen, with no budget
    targeting (rewards then use ``lam``; routes and costs do not depend on it). For co-trained
    options, ``run`` names the run whose saved backbone (``run/backbone.pt``) is evaluated; without
    it, the backbone as it was before co-training."""
    kwargs = {**env_kwargs, "split": split, "train_backbone": False}
    kwargs.pop("target_macs", None)  # an adapted λ would drift while the policy is scored
    if env_kwargs.get("train_backbone") and run is not None:
        kwargs["backbone_weights"] = str(Path(run) / "backbone.pt")
    return kwargs


def evaluation_env(
    env_id: str, env_kwargs: dict[str, Any], split: str, run: Path | None = None, num_envs: int = EVAL_BATCH
) -> RoutingVectorEnv:
    """The one factory of evaluation environments (:func:`evaluation_kwargs`): every report, baseline
    row and ``evaluate`` call routes its split through one of these."""
    env = make_vector_env(env_id, num_envs, **evaluation_kwargs(env_kwargs, split, run))
    assert isinstance(env, RoutingVectorEnv)
    return env


def evaluation_json(agent: Any, env: RoutingVectorEnv, env_id: str, progress: bool = False) -> dict[str, Any]:
    """The evaluation object of docs/design.md §10 for ``agent`` on ``env``'s split."""
    records = route_split(agent, env, progress=progress)
    summary = summarize(records, env, agent.policy_macs())
    return {"policy": agent.name, "uses_labels": bool(getattr(agent, "uses_labels", False)), "env": env_id, **summary}


def train_run(
    env_id: str,
    env_kwargs: dict[str, Any],
    agent_name: str,
    agent_kwargs: dict[str, Any],
    seed: int,
    steps: int,
    num_envs: int,
    out: Path,
    progress: bool = False,
) -> tuple[Agent, dict[str, Any]]:
    """Train ``agent_name`` on ``env_kwargs['split']`` (``val`` unless given); write ``config.json``,
    tensorboard events under ``tb/``, the policy, a co-trained run's ``backbone.pt``, and ``eval.json``
    (on the training split, frozen, with the run's backbone, by the saved agent loaded afresh: what
    ``evaluate --run`` gives). Returns the trained agent and ``eval.json``."""
    from agents import RunLogger, load_agent, make_agent

    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0 or isinstance(num_envs, bool) or not isinstance(num_envs, int) or num_envs < 1:
        raise ValueError(f"train needs --steps >= 0 and --num-envs >= 1, got {steps!r} and {num_envs!r}")
    env_kwargs = {"split": "val", **env_kwargs}
    env = make_vector_env(env_id, num_envs, **env_kwargs)  # bad options fail here, before anything is written
    agent = make_agent(agent_name, env, seed=seed, **agent_kwargs)
    out.mkdir(parents=True, exist_ok=True)
    if (out / "tb").exists():  # a killed run's curves would be drawn beside this one's
        shutil.rmtree(out / "tb")
    config = {
        "env": env_id,
        "env_kwargs": env_kwargs,
        "agent": agent_name,
        "agent_kwargs": agent_kwargs,
        "seed": seed,
        "steps": steps,
        "num_envs": num_envs,
        "routing_env_version": __version__,
        "provenance": provenance(),
    }
    write_json(out / "config.json", config)
    logger = RunLogger(out / "tb")
    start = time.time()
    try:
        agent.learn(steps, logger=logger, progress=progress)
    finally:
        logger.close()
    agent.save(out)
    if env_kwargs.get("train_backbone"):
        save_state_dict(env.unwrapped.backbone_state_dict(), out / "backbone.pt")
    env.close()
    evaluated = evaluation_env(env_id, env_kwargs, env_kwargs["split"], run=out)
    result = evaluation_json(load_agent(out, evaluated, allow_code=":" in agent_name), evaluated, env_id)  # the caller named that code
    result["train_seconds"] = round(time.time() - start, 2)
    write_json(out / "eval.json", result)
    return agent, result
