"""``routing-env bench``: speed of the environments, of SB3 training on them, and of routed inference
(DESIGN §11). One JSON object; every figure is measured on the machine it runs on.

- cascade (frozen, cached): single-env steps/s; vector instance-steps/s at B = 1, 64, 1024; the
  ceiling — the same number of raw feature/logit look-ups with no environment logic — and the ratio;
- dynamic ResNet (needs CIFAR-10): vector instance-steps/s at B = 64, 256 under a random policy, and
  the routing overhead: env step time over the time of only the backbone calls it made (the same
  blocks, widths and batch sizes, replayed), minus 1;
- SB3 PPO on the cached cascade against the same PPO on a trivial env with the same spaces;
- routed inference (:class:`~routing_env.routed.RoutedModel`): latency at batch 1 and 64 against the
  full network, beside the MACs ratio of the same routes.
"""

from __future__ import annotations

import os
import platform
import time
from typing import Any, Callable

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from .core import EXIT, RUN
from .env import RoutingEnv, RoutingVectorEnv


def rate(fn: Callable[[], int], seconds: float) -> float:
    """Units per second of ``fn`` (which returns the units it did), called for about ``seconds``."""
    fn()
    done, began = 0, time.perf_counter()
    while time.perf_counter() - began < seconds:
        done += fn()
    return done / (time.perf_counter() - began)


def median_seconds(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    """Median wall seconds of ``fn()`` over ``repeats`` calls, after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        fn()
        times.append(time.perf_counter() - began)
    return float(np.median(times))


def random_actions(rng: np.random.Generator, shape: tuple[int, ...], num_actions: int) -> np.ndarray:
    """EXIT or a RUN, uniformly (invalid ones fall back, as the environment allows)."""
    return rng.choice([EXIT] + list(range(RUN, num_actions)), size=shape)


def cascade_figures(seconds: float) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    env = RoutingEnv()
    actions = random_actions(rng, (4096,), env.action_space.n)
    env.reset(seed=0)
    state = {"i": 0}

    def single() -> int:
        for _ in range(256):
            a = int(actions[state["i"] % 4096])
            state["i"] += 1
            _, _, terminated, _, _ = env.step(a)
            if terminated:
                env.reset()
        return 256

    out: dict[str, Any] = {"single_steps_per_s": rate(single, seconds), "vector_steps_per_s": {}}
    for b in (1, 64, 1024):
        venv = RoutingVectorEnv(num_envs=b)
        venv.reset(seed=0)
        batch = random_actions(rng, (64, b), venv.single_action_space.n)
        counter = {"i": 0}

        def vector(venv: RoutingVectorEnv = venv, batch: np.ndarray = batch, counter: dict = counter, b: int = b) -> int:
            venv.step(batch[counter["i"] % 64])
            counter["i"] += 1
            return b

        out["vector_steps_per_s"][str(b)] = rate(vector, seconds)
    cache = RoutingVectorEnv(num_envs=1).core.executor.cache
    index = rng.integers(len(cache.labels), size=1024)
    stage = rng.integers(cache.features.shape[0], size=1024)

    def lookups() -> int:
        cache.features[stage, index]
        cache.logits[stage, index]
        return 1024

    out["ceiling_lookups_per_s"] = rate(lookups, seconds)
    out["ratio_to_ceiling"] = out["vector_steps_per_s"]["1024"] / out["ceiling_lookups_per_s"]
    return out


def dynamic_figures(seconds: float) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    out: dict[str, Any] = {"vector_steps_per_s": {}}
    calls: list[tuple[str, int, int, int]] = []
    for b in (64, 256):
        venv = RoutingVectorEnv(num_envs=b, backbone="cifar10-resnet20-dynamic")
        obs, _ = venv.reset(seed=0)
        executor = venv.core.executor
        record = b == 256
        run, head = executor.run, executor.head

        def counting_run(slots: np.ndarray, stage: int, width: int, run: Callable = run, record: bool = record) -> np.ndarray:
            if record:
                calls.append(("run", stage, width, len(slots)))
            return run(slots, stage, width)

        def counting_head(slots: np.ndarray, position: int, head: Callable = head, record: bool = record) -> np.ndarray:
            if record:
                calls.append(("head", position, 0, len(slots)))
            return head(slots, position)

        executor.run, executor.head = counting_run, counting_head
        steps = {"n": 0, "seconds": 0.0}

        def vector(venv: RoutingVectorEnv = venv, b: int = b) -> int:
            mask = venv.action_masks()
            scores = rng.random(mask.shape) * mask
            began = time.perf_counter()
            venv.step(scores.argmax(axis=1))
            steps["seconds"] += time.perf_counter() - began
            steps["n"] += 1
            return b

        calls.clear()
        out["vector_steps_per_s"][str(b)] = rate(vector, seconds)
        if record:
            env_seconds = steps["seconds"]
            backbone_seconds = replay(venv, calls)
            out["routing_overhead"] = env_seconds / backbone_seconds - 1.0
            out["overhead_measured_on"] = f"B=256, {steps['n']} steps, {len(calls)} backbone calls replayed"
    return out


@torch.inference_mode()
def replay(venv: RoutingVectorEnv, calls: list[tuple[str, int, int, int]]) -> float:
    """Seconds to make only the recorded backbone calls (same blocks, widths and batch sizes)."""
    backbone = venv.core.backbone
    model = backbone.model
    inputs = {p: torch.randn(256, *shape) for p, shape in enumerate(backbone.map_shapes)}
    began = time.perf_counter()
    for kind, k, j, n in calls:
        if kind == "run":
            model.blocks[k](inputs[k][:n], j)
        else:
            model.head(k, inputs[k][:n])
    return time.perf_counter() - began


class TrivialEnv(gym.Env):
    """The same spaces as the routing environment, no work: two-step episodes of zeros."""

    def __init__(self, observation_space: gym.spaces.Dict, action_space: gym.spaces.Discrete) -> None:
        self.observation_space, self.action_space = observation_space, action_space
        self.zero = {k: np.zeros(s.shape, dtype=s.dtype) for k, s in observation_space.items()}
        self.zero["action_mask"][:] = 1
        self.t = 0

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        super().reset(seed=seed)
        self.t = 0
        return self.zero, {}

    def step(self, action: int) -> tuple[dict, float, bool, bool, dict]:
        self.t += 1
        return self.zero, 0.0, self.t >= 2, False, {}


def sb3_figures(steps: int) -> dict[str, Any]:
    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import DummyVecEnv

    from agents import make_agent

    agent = make_agent("ppo", RoutingVectorEnv(num_envs=16), seed=0)
    began = time.perf_counter()
    agent.model.learn(total_timesteps=steps)
    ours = steps / (time.perf_counter() - began)
    spaces = agent.vec_env
    trivial = DummyVecEnv([lambda: TrivialEnv(spaces.observation_space, spaces.action_space)] * 16)
    model = PPO("MultiInputPolicy", trivial, seed=0, verbose=0, device="cpu", policy_kwargs=agent.model.policy_kwargs, **agent.kwargs)
    began = time.perf_counter()
    model.learn(total_timesteps=steps)
    theirs = steps / (time.perf_counter() - began)
    return {"ours_steps_per_s": ours, "trivial_steps_per_s": theirs, "ratio": ours / theirs, "timesteps": steps, "num_envs": 16}


class HalfWidthPolicy(nn.Module):
    """A fixed policy for the latency figures: every block at width 0.5, exit at the end."""

    def forward(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        logits = torch.zeros(obs["action_mask"].shape)
        logits[:, RUN + 1] = 1.0
        logits[:, EXIT] = 2.0 * (obs["position"][:, -1] > 0)
        return logits


def routed_figures(repeats: int) -> dict[str, Any]:
    from .pretrained import load
    from .routed import RoutedModel

    backbone = load("cifar10-resnet20-dynamic")
    routed = RoutedModel(backbone, HalfWidthPolicy())
    model = backbone.model
    out: dict[str, Any] = {"policy": "every block at width 0.5 (fixed), exit at the end"}
    for b in (1, 64):
        x = torch.randint(0, 256, (b, 3, 32, 32), dtype=torch.uint8)
        with torch.inference_mode():
            full = median_seconds(lambda: model(x), repeats)
        mine = median_seconds(lambda: routed(x), repeats)
        macs = float(routed(x)[1].mean())
        out[f"batch{b}"] = {"latency_ratio": mine / full, "macs_ratio": macs / backbone.costs.reference,
                             "full_ms": full * 1e3, "routed_ms": mine * 1e3}
    return out


def bench(seconds: float = 2.0, ppo_steps: int = 16384, repeats: int = 30, dynamic: bool = True) -> dict[str, Any]:
    """All figures as one JSON-ready dict; ``dynamic=False`` skips those that need CIFAR-10."""
    result: dict[str, Any] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}",
        "torch_threads": torch.get_num_threads(),
        "cascade": cascade_figures(seconds),
        "sb3_ppo": sb3_figures(ppo_steps),
    }
    if dynamic:
        result["dynamic"] = dynamic_figures(seconds)
        result["routed_inference"] = routed_figures(repeats)
    return result
