"""RLlib's PPO (new API stack) with action masking on a routing environment: train, log, checkpoint, evaluate.

    pip install 'ray[rllib]==2.60.0'      # in its own venv: it pins gymnasium 1.2.2
    python examples/rllib_ppo.py --backbone tiny-cascade --lam 0.05 --iterations 5 --out runs/rllib-ppo \
        [--num-env-runners 2] [--address HOST:6379] [--minutes 5]
    tensorboard --logdir runs/rllib-ppo/tb
    PYTHONPATH=examples routing-env evaluate --run runs/rllib-ppo --allow-code --split test --json

What it shows an RLlib user: the environment creator is the one line
``lambda cfg: FlatObservation(gym.make("routing_env:routing_env/Cascade-v0", **cfg))``.
:class:`routing_env.wrappers.FlatObservation` turns our Dict observation into the one RLlib's
action-masking module reads (``observations``: one float vector, ``action_mask``: the valid moves), and
the ``"routing_env:<id>"`` form imports the package before resolving the id, so the id also resolves on
a remote env runner, where nothing else has imported ``routing_env``. ``env_config`` is passed to
``gym.make`` as environment options (``backbone``, ``lam``, ...). The module is RLlib's own
``ActionMaskingTorchRLModule`` (shipped in ``ray.rllib.examples``): invalid actions get a logit of
about −3.4e38, so they are never sampled. Ray starts here unless ``--address`` names a running cluster.

``--out`` becomes a run folder that routing-env's own ``evaluate`` reads:

- ``tb/``: TensorBoard scalars of every ``algo.train()`` (episode return and length, accuracy and MACs
  fraction of the episodes that ended, the learner's losses), against environment steps;
- ``checkpoint/``: ``algo.save_to_path`` (the RLModule is under ``learner_group/learner/rl_module/default_policy``);
- ``config.json`` (the environment and its options) and ``agent.json`` (``rllib_ppo:RLlibAgent``), as
  ``routing-env train`` writes them, so ``evaluate --run OUT --allow-code`` evaluates it on any split.

:class:`RLlibAgent` is the bridge: routing-env's agent protocol (``predict(obs, env)`` on a batch of
our observations) over the RLModule of a checkpoint. It flattens the batch as ``FlatObservation`` did
for training and takes the highest-logit valid action. Without the run folder's ``config.json``, give
the environment options yourself: ``routing-env evaluate --backbone tiny-cascade --lam 0.05 --agent
rllib_ppo:RLlibAgent --agent-kwargs checkpoint=runs/rllib-ppo --split test --json``.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from functools import partial
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from routing_env import __version__
from routing_env.agents import Agent
from routing_env.costs import count_macs
from routing_env.experiments import write_json
from routing_env.wrappers import FlatObservation, FlatObservationVector

ENV_ID = "routing_env/Cascade-v0"
ENV_NAME = "routing_env_cascade_flat"
AGENT = "rllib_ppo:RLlibAgent"  # what agent.json names: this file's class, with examples/ on PYTHONPATH


def env_creator(cfg: dict, sort_probs: bool = False) -> gym.Env:
    """RLlib's env creator: ``cfg`` (an ``EnvContext``, a dict) holds the environment options;
    ``sort_probs`` is :class:`FlatObservation`'s (bound with ``functools.partial`` by ``--sort-probs``)."""
    return FlatObservation(gym.make(f"routing_env:{ENV_ID}", **cfg), sort_probs=sort_probs)


def on_episode_end(*, episode, metrics_logger, **kwargs) -> None:  # noqa: ANN001
    """Log the ended episode's outcome (our terminal info) beside RLlib's return and length."""
    info = episode.get_infos(-1)
    if "correct" in info:
        metrics_logger.log_value("accuracy", float(info["correct"]), reduce="mean")
        metrics_logger.log_value("macs_fraction", float(info["macs_fraction"]), reduce="mean")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backbone", default=None, help="backbone (default: the environment's, the CIFAR-10 cascade)")
    p.add_argument("--lam", type=float, default=0.05, help="λ, the price of compute in the reward")
    p.add_argument("--iterations", type=int, default=None,
                   help="algo.train() calls (default 5; with --minutes, at most this many)")
    p.add_argument("--minutes", type=float, default=None, help="train until this much time has passed")
    p.add_argument("--num-env-runners", type=int, default=1, help="remote env runners (0 samples in the driver)")
    p.add_argument("--num-envs-per-env-runner", type=int, default=4)
    p.add_argument("--train-batch-size", type=int, default=1024, help="env steps per training iteration")
    p.add_argument("--minibatch-size", type=int, default=256)
    p.add_argument("--num-epochs", type=int, default=10)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--entropy-coeff", type=float, default=0.01)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sort-probs", action="store_true", help="the softmax in decreasing order, as our own agents read it")
    p.add_argument("--out", default="runs/rllib-ppo", help="run folder: tb/, checkpoint/, config.json, agent.json")
    p.add_argument("--address", default=None, help="join a running Ray cluster (default: start Ray here)")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs of the Ray started here (default: all)")
    args = p.parse_args(argv)
    if args.iterations is None and args.minutes is None:
        args.iterations = 5
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    import ray
    from ray.rllib.algorithms.ppo import PPOConfig
    from ray.rllib.core.rl_module.rl_module import RLModuleSpec
    from ray.rllib.examples.rl_modules.classes.action_masking_rlm import ActionMaskingTorchRLModule
    from ray.tune.registry import register_env
    from torch.utils.tensorboard import SummaryWriter

    args = parse_args(argv)
    out = Path(args.out)
    env_config: dict[str, Any] = {"lam": args.lam}  # split: the environment's default, val (as `routing-env train`)
    if args.backbone is not None:
        env_config["backbone"] = args.backbone
    creator = partial(env_creator, sort_probs=args.sort_probs)
    creator(env_config).close()  # a bad option fails here, before Ray starts or anything is written

    started = not ray.is_initialized()
    if started:
        ray.init(address=args.address, num_cpus=None if args.address else args.num_cpus,
                 include_dashboard=False, log_to_driver=False)
    register_env(ENV_NAME, creator)
    config = (
        PPOConfig()
        .environment(ENV_NAME, env_config=env_config)
        .env_runners(num_env_runners=args.num_env_runners, num_envs_per_env_runner=args.num_envs_per_env_runner,
                     num_cpus_per_env_runner=1)
        .learners(num_learners=0)
        # SB3's PPO settings (as `routing-env train --agent ppo` uses them), where RLlib's defaults differ:
        # GAE λ 0.95, clip 0.2, value-loss weight 0.5, no KL penalty, gradient norm 0.5; episodes undiscounted.
        .training(train_batch_size_per_learner=args.train_batch_size, minibatch_size=args.minibatch_size,
                  num_epochs=args.num_epochs, lr=args.lr, gamma=1.0, entropy_coeff=args.entropy_coeff,
                  lambda_=0.95, clip_param=0.2, vf_loss_coeff=0.5, use_kl_loss=False, grad_clip=0.5)
        .rl_module(rl_module_spec=RLModuleSpec(module_class=ActionMaskingTorchRLModule,
                                               model_config={"fcnet_hiddens": [64, 64], "fcnet_activation": "tanh"}))
        .callbacks(on_episode_end=on_episode_end)
        .debugging(seed=args.seed)
    )
    algo = config.build_algo()
    writer = SummaryWriter(str(out / "tb"))
    history: list[dict[str, float]] = []
    start = time.time()
    try:
        while not finished(args, len(history), time.time() - start):
            result = algo.train()
            runners, learner = result["env_runners"], result["learners"]["default_policy"]
            row = {
                "env_steps": int(runners.get("num_env_steps_sampled_lifetime", 0)),
                "episode_return_mean": float(runners.get("episode_return_mean", math.nan)),
                "episode_len_mean": float(runners.get("episode_len_mean", math.nan)),
                "accuracy": float(runners.get("accuracy", math.nan)),
                "macs_fraction": float(runners.get("macs_fraction", math.nan)),
                **{k: float(learner[k]) for k in ("total_loss", "policy_loss", "vf_loss", "entropy") if k in learner},
            }
            history.append(row)
            for key, value in row.items():
                if key != "env_steps":
                    group = "losses" if key in ("total_loss", "policy_loss", "vf_loss", "entropy") else "charts"
                    writer.add_scalar(f"{group}/{key}", value, row["env_steps"])
            writer.flush()
            print(f"iteration {len(history)}: {row['env_steps']} env steps, return {row['episode_return_mean']:.4f}, "
                  f"accuracy {row['accuracy']:.4f} at {row['macs_fraction']:.4f} of the MACs, "
                  f"loss {row.get('total_loss', math.nan):.4f}; {time.time() - start:.1f} s", flush=True)
        checkpoint = Path(algo.save_to_path(str((out / "checkpoint").resolve())))
        remote = algo.env_runner_group.num_remote_env_runners()
    finally:
        writer.close()
        algo.stop()
        if started:
            ray.shutdown()
    write_run_folder(out, env_config, args, len(history), time.time() - start)
    return {"history": history, "checkpoint": str(checkpoint), "tb": str(out / "tb"), "remote_env_runners": remote}


def finished(args: argparse.Namespace, iterations: int, seconds: float) -> bool:
    if args.iterations is not None and iterations >= args.iterations:
        return True
    return args.minutes is not None and seconds >= 60 * args.minutes


def write_run_folder(out: Path, env_config: dict[str, Any], args: argparse.Namespace, iterations: int,
                     seconds: float) -> None:
    """``config.json`` and ``agent.json`` as ``routing-env train`` writes them, so ``evaluate --run`` works."""
    from routing_env.provenance import provenance

    config = {"env": ENV_ID, "env_kwargs": {"split": "val", **env_config}, "agent": AGENT, "agent_kwargs": {"sort_probs": args.sort_probs},
              "seed": args.seed, "library": "ray[rllib]", "args": vars(args), "iterations": iterations,
              "train_seconds": round(seconds, 2), "routing_env_version": __version__, "provenance": provenance()}
    write_json(out / "config.json", config)
    write_json(out / "agent.json", {"agent": AGENT, "seed": args.seed, "options": {"sort_probs": args.sort_probs}})


def rl_module_path(path: str | Path) -> Path:
    """The RLModule's folder (absolute: RLlib reads it as a URI) in a run folder ``OUT`` or an algorithm
    checkpoint ``OUT/checkpoint``."""
    path = Path(path).resolve()
    for root in (path / "checkpoint", path):
        module = root / "learner_group" / "learner" / "rl_module" / "default_policy"
        if module.is_dir():
            return module
    raise ValueError(f"{path} holds no RLlib checkpoint (expected {path}/checkpoint/learner_group/learner/rl_module/"
                     "default_policy, as examples/rllib_ppo.py --out writes)")


class RLlibAgent(Agent):
    """routing-env's agent protocol over the RLModule of an RLlib checkpoint: greedy among valid actions.

    ``checkpoint``: a folder written by this example's ``--out`` (or its ``checkpoint/``). Loaded from
    a run folder (``evaluate --run``), it reads the folder's ``checkpoint/``.
    """

    name = "rllib-ppo"

    def __init__(self, env: gym.vector.VectorEnv, *, seed: int = 0, checkpoint: str | None = None,
                 sort_probs: bool = False) -> None:
        super().__init__(env, seed=seed)
        self.flat = FlatObservationVector(env, sort_probs=sort_probs)  # the training env's flattening, on a batch
        self.checkpoint, self.sort_probs = checkpoint, sort_probs
        self.module = None
        if checkpoint is not None:
            self._load(rl_module_path(checkpoint))

    def _load(self, path: Path) -> None:
        from ray.rllib.core.rl_module.rl_module import RLModule

        self.module = RLModule.from_checkpoint(path, inference_only=True)  # the actor only: no value network
        self.module.eval()
        want = self.module.observation_space["observations"].shape
        have = self.flat.single_observation_space["observations"].shape
        if want != have:
            raise ValueError(f"the RLModule at {path} reads observations of shape {want}, this environment gives "
                             f"{have}: evaluate with the backbone and options it was trained on")

    def load_state(self, directory: Path) -> None:
        if self.module is None:
            self._load(rl_module_path(directory))

    def options(self) -> dict[str, Any]:
        return {"sort_probs": self.sort_probs, **({} if self.checkpoint is None else {"checkpoint": str(Path(self.checkpoint).resolve())})}

    def logits(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        import torch

        if self.module is None:
            raise ValueError("RLlibAgent has no checkpoint: pass --agent-kwargs checkpoint=DIR or evaluate --run DIR")
        batch = {"obs": {k: torch.as_tensor(v) for k, v in self.flat.observations(obs).items()}}
        with torch.no_grad():
            return self.module.forward_inference(batch)["action_dist_inputs"].numpy()

    def predict(self, obs: dict[str, np.ndarray], env: gym.vector.VectorEnv) -> np.ndarray:
        mask = obs["action_mask"].astype(bool)
        return np.where(mask, self.logits(obs), -np.inf).argmax(axis=1).astype(np.int64)

    def policy_macs(self) -> float:
        """MACs of one greedy decision (the actor's MLP), as the SB3 agents count theirs."""
        one = {k: np.ones((1, *s.shape), dtype=s.dtype) for k, s in self.env.single_observation_space.items()}
        return float(count_macs(self.logits, one))


if __name__ == "__main__":
    result = main()
    last = result["history"][-1] if result["history"] else {}
    print(json.dumps({"checkpoint": result["checkpoint"], "tb": result["tb"], "last_iteration": last}))
