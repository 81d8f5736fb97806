"""RLlib's PPO (new API stack) with action masking on a routing environment, on remote env runners.

    pip install 'ray[rllib]==2.60.0'      # in its own venv: it pins gymnasium 1.2.2
    python examples/rllib_ppo.py --backbone tiny-cascade --iterations 5 --num-env-runners 1 [--address HOST:6379]

What it shows an RLlib user: the environment creator is the one line
``lambda cfg: FlatObservation(gym.make("routing_env:routing_env/Cascade-v0", **cfg))``.
:class:`routing_env.wrappers.FlatObservation` turns our Dict observation into the one RLlib's
action-masking module reads (``observations``: one float vector, ``action_mask``: the valid moves), and
the ``"routing_env:<id>"`` form imports the package before resolving the id, so the id also resolves on
a remote env runner, where nothing else has imported ``routing_env``. ``env_config`` is passed to
``gym.make`` as environment options (``backbone``, ``lam``, ...). The module is RLlib's own
``ActionMaskingTorchRLModule`` (shipped in ``ray.rllib.examples``): invalid actions get a logit of
about −3.4e38, so they are never sampled.
"""

from __future__ import annotations

import argparse
import math
import time

import gymnasium as gym
import numpy as np

from routing_env.wrappers import FlatObservation

ENV_NAME = "routing_env_cascade_flat"


def env_creator(cfg: dict) -> gym.Env:
    """RLlib's env creator: ``cfg`` (an ``EnvContext``, a dict) holds the environment options."""
    return FlatObservation(gym.make("routing_env:routing_env/Cascade-v0", **cfg))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backbone", default="tiny-cascade")
    p.add_argument("--lam", type=float, default=0.05)
    p.add_argument("--iterations", type=int, default=5)
    p.add_argument("--num-env-runners", type=int, default=1, help="remote env runners (0 samples in the driver)")
    p.add_argument("--num-envs-per-env-runner", type=int, default=4)
    p.add_argument("--train-batch-size", type=int, default=1000, help="env steps per training iteration")
    p.add_argument("--minibatch-size", type=int, default=250)
    p.add_argument("--num-epochs", type=int, default=4)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--address", default=None, help="join a running Ray cluster (default: start Ray here)")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs of the Ray started here (default: all)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    import ray
    from ray.rllib.algorithms.ppo import PPOConfig
    from ray.rllib.core.rl_module.rl_module import RLModuleSpec
    from ray.rllib.examples.rl_modules.classes.action_masking_rlm import ActionMaskingTorchRLModule
    from ray.tune.registry import register_env

    args = parse_args(argv)
    started = not ray.is_initialized()
    if started:
        ray.init(address=args.address, num_cpus=None if args.address else args.num_cpus,
                 include_dashboard=False, log_to_driver=False)
    register_env(ENV_NAME, env_creator)
    config = (
        PPOConfig()
        .environment(ENV_NAME, env_config={"backbone": args.backbone, "lam": args.lam})
        .env_runners(num_env_runners=args.num_env_runners, num_envs_per_env_runner=args.num_envs_per_env_runner,
                     num_cpus_per_env_runner=1)
        .learners(num_learners=0)
        .training(train_batch_size_per_learner=args.train_batch_size, minibatch_size=args.minibatch_size,
                  num_epochs=args.num_epochs, lr=args.lr, gamma=1.0)
        .rl_module(rl_module_spec=RLModuleSpec(module_class=ActionMaskingTorchRLModule,
                                               model_config={"head_fcnet_hiddens": [64, 64]}))
        .debugging(seed=args.seed)
    )
    algo = config.build_algo()
    returns: list[float] = []
    start = time.time()
    try:
        for i in range(args.iterations):
            result = algo.train()
            ret = float(result["env_runners"].get("episode_return_mean", math.nan))
            returns.append(ret)
            print(f"iteration {i + 1}: episode_return_mean {ret:.4f}, "
                  f"episodes {result['env_runners'].get('num_episodes', 0)}; {time.time() - start:.1f} s", flush=True)
        invalid = greedy_invalid_actions(algo.get_module(), args)
        remote = algo.env_runner_group.num_remote_env_runners()
    finally:
        algo.stop()
        if started:
            ray.shutdown()
    return {"episode_return_mean": returns, "greedy_invalid_actions": invalid, "remote_env_runners": remote}


def greedy_invalid_actions(module, args: argparse.Namespace, episodes: int = 50) -> int:  # noqa: ANN001
    """Run the trained module greedily here for ``episodes`` episodes; count the invalid actions it picks."""
    import torch

    env = env_creator({"backbone": args.backbone, "lam": args.lam})
    obs, _ = env.reset(seed=args.seed)
    invalid = done = 0
    while done < episodes:
        batch = {"obs": {k: torch.as_tensor(v)[None] for k, v in obs.items()}}
        with torch.no_grad():
            logits = module.forward_inference(batch)["action_dist_inputs"][0]
        action = int(logits.argmax())
        invalid += int(not obs["action_mask"][action])
        obs, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            done += 1
            obs, _ = env.reset()
    return invalid


if __name__ == "__main__":
    out = main()
    print({k: np.round(v, 4).tolist() if isinstance(v, list) else v for k, v in out.items()})
