"""Train a policy on a routing environment and evaluate it (docs/design.md §10).

Every evaluation goes through :func:`evaluation_env`: frozen always, and a co-trained run is evaluated
on its own saved backbone (``backbone.pt``), so no evaluation changes a weight or learns from the split
it scores.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar

import gymnasium as gym

from .. import ENV_IDS, __version__
from ..checkpoints import read_json, save_state_dict, write_json
from ..env import COTRAINING_OPTIONS, RoutingVectorEnv
from ..evaluation import route_split, summarize
from ..provenance import provenance
from ..rewards import is_custom, reward_fingerprint

if TYPE_CHECKING:
    from routing_env.agents import Agent, RunLogger

EVAL_BATCH = 256


def make_vector_env(env_id: str, num_envs: int, **kwargs: Any) -> gym.vector.VectorEnv:
    """A natively vectorised routing environment for a registered id (wrapped in
    :class:`~routing_env.cotraining.CoTrainBackbone` when ``train_backbone=True``)."""
    if env_id not in gym.registry or not env_id.startswith("routing_env/"):
        raise ValueError(f"unknown environment id {env_id!r}; expected one of {list(ENV_IDS)}")
    env = gym.make_vec(env_id, num_envs=num_envs, vectorization_mode="vector_entry_point", **kwargs)
    assert isinstance(env.unwrapped, RoutingVectorEnv)
    return env


def check_learning_split(env_kwargs: dict[str, Any]) -> None:
    """Refuse a policy (or a threshold's τ) fitted on ``test``: it is only ever evaluated there, or
    its figures measure what it memorised, not how it routes unseen images."""
    if env_kwargs.get("split", "val") == "test":
        raise ValueError("split='test': policies learn on val (or val-aug, val-fit, train) and are only evaluated on test")


def evaluation_kwargs(env_kwargs: dict[str, Any], split: str, run: Path | None = None) -> dict[str, Any]:
    """The options of an environment that evaluates on ``split``: always frozen, with no budget
    targeting (rewards then use ``lam``; routes and costs do not depend on it). For co-trained
    options, ``run`` names the run whose saved backbone (``run/backbone.pt``) is evaluated; without
    it, the backbone as it was before co-training."""
    kwargs = {k: v for k, v in env_kwargs.items() if k not in COTRAINING_OPTIONS}  # frozen: co-training's options do not apply
    kwargs.update(split=split, train_backbone=False)
    for option in ("target_macs", "target_lr"):  # an adapted λ would drift while the policy is scored
        kwargs.pop(option, None)
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
    if run is not None:
        try:
            check_run_backbone(Path(run), env)
        except ValueError:
            env.close()
            raise
    return env


RUN_OVERRIDES = ("data_root", "device", "lam", "reward")
"""The options an evaluation of a run folder may replace: where the data is and what runs it, and the
price and reward ``reward_mean`` is scored under; the routes, and so accuracy and MACs, depend on none."""


def run_env_kwargs(run: Path, config: dict[str, Any], allow_code: bool, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """A run folder's environment options with ``overrides`` (:data:`RUN_OVERRIDES` only; any other is
    refused by name, as the run fixes it), refused if they name a reward to import
    (``module.path:name``) unless ``allow_code``: as for an agent (``load_agent``), scoring the run
    would run code the folder chose."""
    fixed = sorted(set(overrides or {}) - set(RUN_OVERRIDES))
    if fixed:
        raise ValueError(f"--run {run} takes its environment from its config.json; of the environment options only "
                         f"{list(RUN_OVERRIDES)} may be given beside it, not {fixed}")
    env_kwargs = {**config["env_kwargs"], **(overrides or {})}
    if is_custom(env_kwargs.get("reward")) and not allow_code:
        raise ValueError(f"--run {run}: its environment names code to import (reward {env_kwargs['reward']!r}): building it "
                         "would run that module; pass --allow-code only for run folders you trust, or score it under a "
                         "built-in reward (--env-kwargs reward=accuracy)")
    return env_kwargs


def check_run_backbone(run: Path, env: RoutingVectorEnv) -> None:
    """Refuse to score a run on weights other than those it learned on. A model re-packaged under the
    same name (a new shipped backbone) loads under the old name, so without this check a run would be
    measured, silently, on a network it never saw. ``train`` records the weights of a frozen run
    (``backbone_sha256`` in ``config.json``); a co-trained run is evaluated on its own ``backbone.pt``,
    and runs from before the record are not checked."""
    config_path = run / "config.json"
    expected = read_json(config_path).get("backbone_sha256") if config_path.is_file() else None
    actual = env.routing.weights_sha256
    if expected is not None and expected != actual:
        raise ValueError(f"{run} learned on backbone weights with sha256 {expected[:12]}…, but {env.config.backbone!r} "
                         f"now loads weights with sha256 {actual[:12]}… (re-packaged since?): re-train the run on these "
                         "weights, or point ROUTING_ENV_PRETRAINED at a folder that holds the ones it learned on")


def evaluation_json(agent: Any, env: RoutingVectorEnv, env_id: str, progress: bool = False) -> dict[str, Any]:
    """The evaluation object of docs/design.md §10 for ``agent`` on ``env``'s split. ``options`` are the
    agent's own (:meth:`~routing_env.agents.base.Agent.options`), so a tuned threshold's τ is read beside its score."""
    records = route_split(agent, env, progress=progress)
    summary = summarize(records, env, agent.policy_macs())
    return {"policy": agent.name, "options": agent.options(), "uses_labels": bool(getattr(agent, "uses_labels", False)),
            "env": env_id, **summary}


@dataclass(frozen=True)
class EarlyStopping:
    """Early stopping on ``val-holdout``: every ``every`` instance-steps the policy is scored there
    (greedy, frozen, :func:`evaluation_json`); the run keeps the policy with the best mean reward —
    the objective it learns, on images it never sees — and stops after ``patience`` scorings without
    a better one. The policy must learn on ``val-fit`` or ``val-aug-fit``, which hold none of them."""

    every: int
    patience: int

    FIT_SPLITS: ClassVar[tuple[str, ...]] = ("val-fit", "val-aug-fit")

    def __post_init__(self) -> None:
        for name, flag in (("every", "--holdout-every"), ("patience", "--patience")):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"early stopping needs {name} ({flag}) >= 1, an integer; got {value!r}")

    def check(self, env_kwargs: dict[str, Any]) -> None:
        """Refuse options under which the held-out score would not be held out, or not of this policy."""
        if env_kwargs.get("split") not in self.FIT_SPLITS:
            raise ValueError(f"early stopping scores on 'val-holdout', a fifth of val; learn on the rest of val, one of "
                             f"{self.FIT_SPLITS}, not split={env_kwargs.get('split')!r}")
        if env_kwargs.get("train_backbone"):
            raise ValueError("early stopping keeps the best policy, but a co-trained backbone has moved on since; "
                             "use it with a frozen backbone (train_backbone=False)")
        if env_kwargs.get("target_macs") is not None:
            raise ValueError("early stopping scores the reward at the environment's lam, but target_macs adapts lam while "
                             "learning, so the best-scoring policy would be the earliest, over-budget one; use a fixed lam")


HOLDOUT_KEYS = ("reward_mean", "accuracy", "macs_fraction")
"""What each ``val-holdout`` scoring keeps (``holdout.json``, ``holdout/*`` in TensorBoard); the first decides."""


def learn_with_early_stopping(agent: Agent, stopping: EarlyStopping, steps: int, score: Callable[[Agent], dict[str, Any]],
                              out: Path, logger: RunLogger | None = None, progress: bool = False) -> dict[str, Any]:
    """The agent learns in rounds of ``stopping.every`` steps (``agent.learn_rounds``, or separate
    ``learn`` calls for an agent without it), each followed by ``score(agent)`` (an evaluation object
    with ``reward_mean``, ``accuracy`` and ``macs_fraction``: :func:`evaluation_json` on
    ``val-holdout``); the best policy so far is saved in ``out/best`` and, at the end, copied into
    ``out``, so that ``out`` holds the policy that scored best. Returns the scorings, the best one's
    steps and the steps learned."""
    from routing_env.agents import learn_in_rounds

    history: list[dict[str, Any]] = []
    best = -1

    def after_round(done: int) -> bool:
        nonlocal best
        scored = score(agent)
        history.append({"steps": done, **{key: scored[key] for key in HOLDOUT_KEYS}})
        if logger is not None:
            for key in HOLDOUT_KEYS:
                logger.scalar(f"holdout/{key}", scored[key], done)
        if best < 0 or history[-1]["reward_mean"] > history[best]["reward_mean"]:
            best = len(history) - 1
            agent.save(out / "best")
        return len(history) - 1 - best < stopping.patience

    rounds = getattr(agent, "learn_rounds", None)
    if rounds is not None:
        rounds(steps, stopping.every, after_round, logger=logger, progress=progress)
    else:
        learn_in_rounds(agent, steps, stopping.every, after_round, logger=logger, progress=progress)
    if best >= 0:
        shutil.copytree(out / "best", out, dirs_exist_ok=True)
    else:  # steps = 0: nothing scored; learn(0) still tunes what needs no steps (the threshold's τ)
        agent.learn(0, logger=logger, progress=progress)
        agent.save(out)
    return {"every": stopping.every, "patience": stopping.patience, "best_steps": history[best]["steps"] if best >= 0 else 0,
            "stopped_at": history[-1]["steps"] if history else 0, "history": history}


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
    early_stopping: EarlyStopping | None = None,
) -> tuple[Agent, dict[str, Any]]:
    """Train ``agent_name`` on ``env_kwargs['split']`` (``val`` unless given); write ``config.json``,
    tensorboard events under ``tb/``, the policy, a co-trained run's ``backbone.pt``, and ``eval.json``
    (on the training split, frozen, with the run's backbone, by the saved agent loaded afresh: what
    ``evaluate --run`` gives). With ``early_stopping`` the saved policy is the one that scored best
    on ``val-holdout`` (:class:`EarlyStopping`), and ``holdout.json`` holds the scorings. Returns the
    trained agent (as learning left it) and ``eval.json``."""
    from routing_env.agents import RunLogger, load_agent, make_agent

    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0 or isinstance(num_envs, bool) or not isinstance(num_envs, int) or num_envs < 1:
        raise ValueError(f"train needs --steps >= 0 and --num-envs >= 1, got {steps!r} and {num_envs!r}")
    env_kwargs = {"split": "val", **env_kwargs}
    check_learning_split(env_kwargs)
    if early_stopping is not None:
        early_stopping.check(env_kwargs)
    env = make_vector_env(env_id, num_envs, **env_kwargs)  # bad options fail here, before anything is written
    env_kwargs = {"lam": env.unwrapped.config.lam, **env_kwargs}  # λ recorded even where the default priced the run
    agent = make_agent(agent_name, env, seed=seed, **agent_kwargs)
    out.mkdir(parents=True, exist_ok=True)
    for stale in ("tb", "best"):  # an earlier run's curves would be drawn beside this one's, its best policy kept
        if (out / stale).exists():
            shutil.rmtree(out / stale)
    for stale in ("holdout.json", "eval.json"):  # an earlier run's scorings are not this one's; no eval.json: not finished
        (out / stale).unlink(missing_ok=True)
    config = {
        "env": env_id,
        "env_kwargs": env_kwargs,
        "agent": agent_name,
        "agent_kwargs": agent_kwargs,
        "seed": seed,
        "steps": steps,
        "num_envs": num_envs,
        # what evaluate --run checks (check_run_backbone); a co-trained run is scored on its own backbone.pt
        **({} if env_kwargs.get("train_backbone") else {"backbone_sha256": env.unwrapped.routing.weights_sha256}),
        **reward_fingerprint(env_kwargs.get("reward")),
        **({"early_stopping": dataclasses.asdict(early_stopping)} if early_stopping is not None else {}),
        "routing_env_version": __version__,
        "provenance": provenance(),
    }
    write_json(out / "config.json", config)
    logger = RunLogger(out / "tb")
    start = time.time()
    stopped = None
    try:
        if early_stopping is None:
            agent.learn(steps, logger=logger, progress=progress)
        else:
            holdout = evaluation_env(env_id, env_kwargs, "val-holdout")
            try:
                stopped = learn_with_early_stopping(agent, early_stopping, steps, lambda a: evaluation_json(a, holdout, env_id),
                                                    out, logger, progress)
            finally:
                holdout.close()
    finally:
        logger.close()
    if stopped is None:
        agent.save(out)
    else:
        write_json(out / "holdout.json", stopped)
    if env_kwargs.get("train_backbone"):
        save_state_dict(env.unwrapped.backbone_state_dict(), out / "backbone.pt")
    env.close()
    evaluated = evaluation_env(env_id, env_kwargs, env_kwargs["split"], run=out)
    result = evaluation_json(load_agent(out, evaluated, allow_code=":" in agent_name), evaluated, env_id)  # the caller named that code
    result["train_seconds"] = round(time.time() - start, 2)
    if stopped is not None:
        result["early_stopping"] = {key: stopped[key] for key in ("best_steps", "stopped_at")}
    write_json(out / "eval.json", result)
    return agent, result
