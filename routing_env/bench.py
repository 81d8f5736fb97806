"""``routing-env bench``: speed of the environments, of SB3 training on them, and of routed inference
(docs/design.md §11). One JSON object; every figure is measured on the machine it runs on.

- cascade (frozen, cached): single-env steps/s; vector instance-steps/s at B = 1, 64, 1024; the
  ceiling — the same number of raw feature/logit look-ups with no environment logic — and the ratio;
- dynamic ResNet (needs CIFAR-10): vector instance-steps/s at B = 64, 256 under a random policy, and
  the routing overhead: env step time over the time of only the backbone calls it made (the same
  blocks, widths and batch sizes, replayed), minus 1;
- SB3 PPO on the cached cascade against the same PPO on a trivial env with the same spaces;
- routed inference (:class:`~routing_env.routed.RoutedModel`): latency at batch 1 and 64 against the
  full network, beside the MACs ratio of the same routes.

On an accelerator (``bench(device="cuda")``, ``routing-env bench --device cuda``) only the figures
whose work runs there: the dynamic ResNet at B = 256 / 1024 / 4096 with its routing overhead at 256
and 1024, and routed inference at batch 1 / 64 / 256 (the cascade's step and SB3 are CPU work).
Every timed call waits for the device's queued work (:func:`synchronized`).
"""

from __future__ import annotations

import copy
import functools
import os
import platform
import time
from typing import Any, Callable

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from .core import EXIT, RUN
from .env import RoutingEnv, RoutingVectorEnv, present_device
from .latency import median_seconds


def rate(fn: Callable[[], int], seconds: float, rounds: int = 5) -> float:
    """Units per second of ``fn`` (which returns the units it did): the median over ``rounds`` rounds
    of about ``seconds / rounds`` each, after one warm-up call (a shared VM's speed drifts)."""
    fn()
    rates = []
    for _ in range(rounds):
        done, began = 0, time.perf_counter()
        while time.perf_counter() - began < seconds / rounds:
            done += fn()
        rates.append(done / (time.perf_counter() - began))
    return float(np.median(rates))


def interleaved_medians(fns: dict[str, Callable[[], object]], repeats: int, rounds: int = 5) -> dict[str, float]:
    """Median wall seconds of each function, measured in ``rounds`` interleaved rounds of
    ``repeats / rounds`` calls (so a drifting machine speed hits all of them alike)."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            times[name].append(median_seconds(fn, max(1, repeats // rounds), warmup=2))
    return {name: float(np.median(values)) for name, values in times.items()}


def wait_for(device: str | torch.device) -> None:
    """Wait for ``device``'s queued work: CUDA runs kernels asynchronously, so a timer that does not
    wait measures only their launch. Nothing to wait for on the CPU."""
    where = torch.device(device)
    if where.type == "cuda":
        torch.cuda.synchronize(where)


def synchronized(fn: Callable[[], object], device: str | torch.device) -> Callable[[], object]:
    """``fn`` followed by :func:`wait_for` ``device`` (``fn`` itself on the CPU)."""
    if torch.device(device).type != "cuda":
        return fn

    def run() -> object:
        out = fn()
        wait_for(device)
        return out
    return run


def random_actions(rng: np.random.Generator, shape: tuple[int, ...], num_actions: int) -> np.ndarray:
    """EXIT or a RUN, uniformly (invalid ones fall back, as the environment allows)."""
    return rng.choice([EXIT] + list(range(RUN, num_actions)), size=shape)


def cartpole_figures(seconds: float, cascade_steps_per_s: float) -> dict[str, Any]:
    """Gymnasium's ``CartPole-v1``, unwrapped, stepped as the cascade's single env is (random actions,
    a reset at each episode end, counted in steps): the reference a routing step is compared with."""
    env = gym.make("CartPole-v1").unwrapped
    rng = np.random.default_rng(0)
    actions = rng.integers(0, 2, 4096).tolist()
    env.reset(seed=0)
    state = {"i": 0}

    def steps() -> int:
        for _ in range(256):
            _, _, terminated, truncated, _ = env.step(actions[state["i"] % 4096])
            state["i"] += 1
            if terminated or truncated:
                env.reset()
        return 256

    per_s = rate(steps, seconds)
    return {"cartpole_step_us": 1e6 / per_s, "cascade_step_us": 1e6 / cascade_steps_per_s,
            "cascade_step_over_cartpole": per_s / cascade_steps_per_s}


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
    out.update(cartpole_figures(seconds, out["single_steps_per_s"]))
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


def dynamic_figures(seconds: float, rounds: int = 5, device: str = "cpu", batch_sizes: tuple[int, ...] = (64, 256),
                    overhead_batches: tuple[int, ...] = (256,)) -> dict[str, Any]:
    """The dynamic ResNet's vector instance-steps/s at ``batch_sizes`` under a random policy, and its
    routing overhead at each of ``overhead_batches`` (``routing_overhead``: the first one's; every
    one's under ``routing_overhead_at``), on ``device``."""
    if not overhead_batches:
        raise ValueError("overhead_batches must name at least one batch size (routing_overhead is the first one's)")
    rng = np.random.default_rng(0)
    out: dict[str, Any] = {"vector_steps_per_s": {}, "routing_overhead_at": {}}
    envs = {b: RoutingVectorEnv(num_envs=b, backbone="cifar10-resnet20-dynamic", device=device)
            for b in dict.fromkeys(batch_sizes + overhead_batches)}
    for b in batch_sizes:
        venv = envs[b]
        venv.reset(seed=0)

        def vector(venv: RoutingVectorEnv = venv, b: int = b) -> int:
            venv.step(random_valid(rng, venv.action_masks()))  # reads the features back: waits for the device
            return b

        out["vector_steps_per_s"][str(b)] = rate(vector, seconds)
    for b in overhead_batches:
        envs[b].reset(seed=0)
        overheads = [routing_overhead(envs[b], rng, steps=20) for _ in range(rounds)]
        out["routing_overhead_at"][str(b)] = {"median": float(np.median(overheads)), "rounds": overheads}
    first = str(overhead_batches[0])
    out["routing_overhead"] = out["routing_overhead_at"][first]["median"]
    out["routing_overhead_rounds"] = out["routing_overhead_at"][first]["rounds"]
    out["overhead_measured_on"] = f"B={first}, median of {rounds} rounds of 20 steps, each against a replay of its backbone calls"
    return out


def random_valid(rng: np.random.Generator, mask: np.ndarray) -> np.ndarray:
    """A uniformly random valid action per row of ``mask``."""
    return (rng.random(mask.shape) * mask).argmax(axis=1)


def routing_overhead(venv: RoutingVectorEnv, rng: np.random.Generator, steps: int) -> float:
    """Env step time over the time of only the backbone calls those steps made (stem, blocks at their
    widths, heads; the same batch sizes, replayed on the executor's own buffers), minus 1."""
    executor = venv.core.executor
    calls: list[tuple[str, int, int, int]] = []
    begin, run, head = executor.begin, executor.run, executor.head

    def counting_begin(slots: np.ndarray, indices: np.ndarray) -> None:
        calls.append(("stem", 0, 0, len(slots)))
        begin(slots, indices)

    def counting_run(slots: np.ndarray, stage: int, width: int) -> None:
        calls.append(("run", stage, width, len(slots)))
        run(slots, stage, width)

    def counting_head(slots: np.ndarray, positions: np.ndarray) -> np.ndarray:
        for p, count in zip(*np.unique(positions, return_counts=True)):
            calls.append(("head", int(p), 0, int(count)))
        return head(slots, positions)

    executor.begin, executor.run, executor.head = counting_begin, counting_run, counting_head
    try:
        env_seconds = 0.0
        for _ in range(steps):
            actions = random_valid(rng, venv.action_masks())
            began = time.perf_counter()
            venv.step(actions)
            env_seconds += time.perf_counter() - began
    finally:
        del executor.begin, executor.run, executor.head
    return env_seconds / replay(venv, calls) - 1.0


@torch.inference_mode()
def replay(venv: RoutingVectorEnv, calls: list[tuple[str, int, int, int]]) -> float:
    """Seconds to make only the recorded backbone calls, on contiguous leading rows of the buffers."""
    executor = venv.core.executor
    model = executor.model
    began = time.perf_counter()
    for kind, k, j, n in calls:
        if kind == "stem":
            model.stem(executor.inputs[:n])
        elif kind == "run":
            model.blocks[k](executor.maps[k][:n], j)
        else:
            model.head(k, executor.maps[k][:n])
    wait_for(executor.inputs.device)
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


def sb3_figures(steps: int, rounds: int = 3) -> dict[str, Any]:
    """PPO's training steps/s on the cached cascade and on :class:`TrivialEnv` (same spaces, network and
    hyper-parameters); both warmed up, then timed alternately ``rounds`` times (medians)."""
    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import DummyVecEnv

    from routing_env.agents import make_agent

    agent = make_agent("ppo", RoutingVectorEnv(num_envs=16), seed=0)
    spaces = agent.vec_env
    trivial = DummyVecEnv([lambda: TrivialEnv(spaces.observation_space, spaces.action_space)] * 16)
    models = {"ours": agent.model,
              "trivial": PPO("MultiInputPolicy", trivial, seed=0, verbose=0, device="cpu", policy_kwargs=agent.model.policy_kwargs, **agent.kwargs)}
    rates: dict[str, list[float]] = {name: [] for name in models}
    for name, model in models.items():
        model.learn(total_timesteps=model.n_steps * 16)  # warm-up: one rollout and one update
    for _ in range(rounds):
        for name, model in models.items():
            began = time.perf_counter()
            model.learn(total_timesteps=steps, reset_num_timesteps=False)
            rates[name].append(steps / (time.perf_counter() - began))
    ours, theirs = float(np.median(rates["ours"])), float(np.median(rates["trivial"]))
    return {"ours_steps_per_s": ours, "trivial_steps_per_s": theirs, "ratio": ours / theirs, "timesteps": steps,
            "num_envs": 16, "rounds": rounds}


class HalfWidthPolicy(nn.Module):
    """A fixed policy for the latency figures: every block at width 0.5, exit at the end. With
    ``mlp`` it first runs a policy network of the agents' default size (``PolicyNet``, hidden 64, on
    :func:`~routing_env.agents.features.policy_input`) and adds its logits times zero, so the route stays the
    same while each decision pays what a learned policy pays."""

    def __init__(self, last: int, mlp: nn.Module | None = None) -> None:
        super().__init__()
        self.last, self.mlp = last, mlp

    def forward(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        logits = torch.zeros(obs["action_mask"].shape, device=obs["action_mask"].device)
        logits[:, RUN + 1] = 1.0
        logits[:, EXIT] = 2.0 * (obs["position"][:, self.last] > 0)
        return logits if self.mlp is None else logits + 0.0 * self.mlp(obs)

    def fused_decision(self) -> Callable[..., int]:
        """The same rule for one input (:class:`~routing_env.routed.RoutedModel` at batch 1), after the
        network's compiled decision (:class:`~routing_env.agents.fused.MLPDecision`) when there is one."""
        mlp = self.mlp.fused_decision() if self.mlp is not None else None

        def decide(features: np.ndarray, probs: np.ndarray, position: int, cost: float, mask: np.ndarray) -> int:
            if mlp is not None:
                mlp(features, probs, position, cost, mask)
            return EXIT if position == self.last else RUN + 1
        return decide


def latency_policy_net(routed: Any) -> tuple[dict[str, torch.Tensor], nn.Module]:
    """An example observation of ``routed`` (a :class:`~routing_env.routed.RoutedModel`) and a policy
    network of the agents' default size on it (``PolicyNet``, hidden 64, seed 0, untrained): what a
    learned policy's decision costs, for the latency figures."""
    from routing_env.agents.features import policy_input
    from routing_env.agents.reinforce import PolicyNet, _TorchPolicy

    example = routed._observation(torch.zeros(1, routed.feature_dim), torch.zeros(1, routed.num_classes), 0,
                                  torch.zeros(1, dtype=torch.float64), routed.valid_now[0, 1][None])
    torch.manual_seed(0)
    return example, _TorchPolicy(PolicyNet(policy_input(example).shape[1], routed.num_actions, 64)).eval()


def routed_figures(repeats: int, device: str = "cpu", batch_sizes: tuple[int, ...] = (1, 64)) -> dict[str, Any]:
    """Routed inference against the full network, both in RoutedModel's inference form (BatchNorm
    folded, channels-last); also the plain network as trained and the same route with no policy.
    ``policy_overhead`` is the routed latency over the fixed route's, minus 1: what the decisions
    cost (``_mlp``: with a learned policy's network, see :class:`HalfWidthPolicy`). At batch 1 the
    decisions are compiled (``policy.fused_decision()``); ``_eager`` is the same walk with the torch
    decisions (``RoutedModel(fused=False)``), ``_head`` the same route decided only at the start and
    after each exit head (``decide_at="head"``: 4 decisions instead of 10), measured in the same rounds.
    Off the CPU the decisions are the torch ones (``_eager`` then repeats ``routed``)."""
    from .pretrained import load
    from .routed import RoutedModel

    backbone = load("cifar10-resnet20-dynamic")
    n, last = backbone.spec.num_stages, len(backbone.spec.widths) - 1
    routed = RoutedModel(backbone, HalfWidthPolicy(n))
    _, mlp = latency_policy_net(routed)
    routed_mlp = RoutedModel(backbone, HalfWidthPolicy(n, mlp))
    batch1 = {"routed_eager": RoutedModel(backbone, HalfWidthPolicy(n), fused=False),
              "routed_mlp_eager": RoutedModel(backbone, HalfWidthPolicy(n, mlp), fused=False),
              "routed_head": RoutedModel(backbone, HalfWidthPolicy(n), decide_at="head"),
              "routed_mlp_head": RoutedModel(backbone, HalfWidthPolicy(n, mlp), decide_at="head")}
    for model in (routed, routed_mlp, *batch1.values()):
        model.to(device)
    full, fixed = routed.route_module([last] * n), routed.route_module([1] * n)
    plain = copy.deepcopy(backbone.model).to(device)
    out: dict[str, Any] = {"policy": "every block at width 0.5 (fixed), exit at the end",
                           "policy_mlp": "the same decisions, each after a PolicyNet (hidden 64) forward",
                           "full": "the same inference copy along the full path (RoutedModel.route_module)",
                           "device": str(device)}
    for b in batch_sizes:
        repeats_b = repeats * 5 if b == 1 else repeats
        x = torch.randint(0, 256, (b, 3, 32, 32), dtype=torch.uint8, device=device)
        runs = {"full": lambda: full(x), "routed": lambda: routed(x), "routed_mlp": lambda: routed_mlp(x),
                "fixed_route": lambda: fixed(x), "plain_full": lambda: plain(x)}
        if b == 1:
            runs.update({name: functools.partial(model, x) for name, model in batch1.items()})
        with torch.inference_mode():
            seconds = interleaved_medians({name: synchronized(fn, device) for name, fn in runs.items()}, repeats_b)
        macs = float(routed(x)[1].mean())
        out[f"batch{b}"] = {"latency_ratio": seconds["routed"] / seconds["full"], "latency_ratio_mlp": seconds["routed_mlp"] / seconds["full"],
                            "macs_ratio": macs / backbone.costs.reference, "fixed_route_ratio": seconds["fixed_route"] / seconds["full"],
                            "policy_overhead": seconds["routed"] / seconds["fixed_route"] - 1.0,
                            "policy_overhead_mlp": seconds["routed_mlp"] / seconds["fixed_route"] - 1.0,
                            **{f"{name}_ms": value * 1e3 for name, value in seconds.items()}}
        if b == 1:
            out["batch1"].update({f"policy_overhead{tag}_{mode}": seconds[f"routed{tag}_{mode}"] / seconds["fixed_route"] - 1.0
                                  for tag in ("", "_mlp") for mode in ("eager", "head")})
    return out


def bench(seconds: float = 5.0, ppo_steps: int = 16384, repeats: int = 30, dynamic: bool = True, device: str = "cpu") -> dict[str, Any]:
    """All figures as one JSON-ready dict; ``dynamic=False`` skips those that need CIFAR-10. Off the
    CPU, the accelerator's figures only (:func:`device_figures`)."""
    where = present_device(device)
    if where.type not in ("cpu", "cuda"):
        raise ValueError(f"--device {device!r}: bench measures the CPU or a CUDA device (its timers wait for CUDA's queue only)")
    if where.type != "cpu":
        if not dynamic:
            raise ValueError(f"device {device!r}: only the dynamic ResNet and routed inference are measured there; dynamic=False leaves nothing")
        return device_figures(device, seconds, repeats)
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


def device_figures(device: str, seconds: float = 5.0, repeats: int = 30, env_batches: tuple[int, ...] = (256, 1024, 4096),
                   overhead_batches: tuple[int, ...] = (256, 1024), routed_batches: tuple[int, ...] = (1, 64, 256)) -> dict[str, Any]:
    """The figures whose work runs on ``device`` (issue 20's GPU rows): the dynamic ResNet's vector env
    at ``env_batches`` with its routing overhead at ``overhead_batches``, and routed inference at
    ``routed_batches``. The cascade's step and SB3's PPO are CPU work: ``bench()`` without a device."""
    where = torch.device(device)
    name = torch.cuda.get_device_name(where) if where.type == "cuda" else str(where)
    return {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}",
        "device": name,
        "torch_threads": torch.get_num_threads(),
        "dynamic": dynamic_figures(seconds, device=device, batch_sizes=env_batches, overhead_batches=overhead_batches),
        "routed_inference": routed_figures(repeats, device=device, batch_sizes=routed_batches),
    }
