"""Stable-Baselines3 and sb3-contrib agents over the routing environment.

:class:`SB3VecEnv` adapts the natively batched :class:`~routing_env.env.RoutingVectorEnv` (or a
wrapper of one, in either autoreset mode) to SB3's ``VecEnv`` without copying it into per-episode
environments, and exposes ``action_masks`` for ``MaskablePPO``. :class:`RoutingCallback` logs accuracy
and MACs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Sequence

import numpy as np
import torch
from gymnasium.vector import AutoresetMode, VectorEnv
from sb3_contrib import MaskablePPO
from stable_baselines3 import A2C, DQN, PPO
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback, CallbackList
from stable_baselines3.common.logger import Logger, configure
from stable_baselines3.common.vec_env import VecEnv
from torch import nn
from tqdm import tqdm

from routing_env.checkpoints import load_state_dict, save_state_dict
from routing_env.costs import count_macs
from routing_env.env import RoutingVectorEnv

from .base import AfterRound, Agent
from .features import RoutingExtractor
from .fused import MLPDecision
from .logger import RunLogger


class SB3VecEnv(VecEnv):
    """SB3 ``VecEnv`` view of a :class:`RoutingVectorEnv` (or a wrapper of one, such as
    :class:`~routing_env.cotraining.CoTrainBackbone`).

    SB3 restarts an ended episode in the step that ends it and passes its last observation in
    ``info["terminal_observation"]``: ``SameStep`` autoreset does exactly that; under ``NextStep`` the
    ended slots are restarted at once with a partial reset (``reset_mask``), which draws the same
    instances in the same order, so on a frozen backbone both modes give the same trajectories (a
    test checks it). Under co-training they differ slightly: ``SameStep`` starts the new episodes
    before :class:`~routing_env.cotraining.CoTrainBackbone` updates the backbone on the ended ones,
    the partial reset after. A co-trained step's ``backbone_loss`` is passed on in each info.
    """

    def __init__(self, venv: VectorEnv) -> None:
        mode = venv.metadata.get("autoreset_mode")
        if mode not in (AutoresetMode.SAME_STEP, AutoresetMode.NEXT_STEP) or not isinstance(venv.unwrapped, RoutingVectorEnv):
            raise ValueError(f"SB3VecEnv needs a RoutingVectorEnv (or a wrapper of one) in NextStep or SameStep autoreset mode, got {venv!r}")
        self.venv = venv
        self.same_step = mode == AutoresetMode.SAME_STEP
        super().__init__(venv.num_envs, venv.single_observation_space, venv.single_action_space)
        self._actions = np.zeros(venv.num_envs, dtype=np.int64)
        self._returns = np.zeros(venv.num_envs)
        self._lengths = np.zeros(venv.num_envs, dtype=np.int64)

    def reset(self) -> dict[str, np.ndarray]:
        obs, _ = self.venv.reset(seed=self._seeds[0])
        self._reset_seeds()
        self._returns[:] = 0.0
        self._lengths[:] = 0
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions).reshape(self.num_envs).astype(np.int64)

    def step_wait(self) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, list[dict[str, Any]]]:
        obs, reward, terminated, truncated, info = self.venv.step(self._actions)
        self._returns += reward
        self._lengths += 1
        dones = terminated | truncated
        infos: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
        ends = np.flatnonzero(dones)
        for key in ("backbone_loss", "lam"):  # co-training's loss, budget targeting's price: RoutingCallback logs them
            if key in info:
                infos[0][key] = float(info[key][0])
        if len(ends):
            if self.same_step:
                final, final_obs = info["final_info"], info["final_obs"]
            else:
                final, final_obs = info, [{k: v[i] for k, v in obs.items()} if dones[i] else None for i in range(self.num_envs)]
                obs, _ = self.venv.reset(options={"reset_mask": dones})
            columns = zip(ends.tolist(), self._returns[ends].tolist(), self._lengths[ends].tolist(), (truncated & ~terminated)[ends].tolist(),
                          final["correct"][ends].tolist(), final["macs_fraction"][ends].tolist(), final["exit_position"][ends].tolist())
            for i, ret, length, cut, correct, macs_fraction, exit_position in columns:
                infos[i] = {
                    **infos[i],
                    "terminal_observation": final_obs[i],
                    "TimeLimit.truncated": cut,
                    "episode": {"r": ret, "l": length},
                    "correct": correct,
                    "macs_fraction": macs_fraction,
                    "exit_position": exit_position,
                    "reward_terms": {name: float(totals[i]) for name, totals in final["reward_terms"].items()},
                }
            self._returns[ends] = 0.0
            self._lengths[ends] = 0
        return obs, reward.astype(np.float32), dones, infos

    def action_masks(self) -> np.ndarray:
        return self.venv.unwrapped.action_masks()

    def close(self) -> None:
        self.venv.close()

    def get_attr(self, attr_name: str, indices: Any = None) -> list[Any]:
        value = getattr(self.venv, attr_name)
        return [value for _ in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: Any = None) -> None:
        raise AttributeError(f"SB3VecEnv cannot set {attr_name!r}: the episodes share one batched environment")

    def env_method(self, method_name: str, *method_args: Any, indices: Any = None, **method_kwargs: Any) -> list[Any]:
        if method_name == "action_masks":
            masks = self.venv.unwrapped.action_masks()
            return [masks[i] for i in self._get_indices(indices)]
        raise AttributeError(f"SB3VecEnv has no per-episode method {method_name!r}")

    def env_is_wrapped(self, wrapper_class: type, indices: Any = None) -> list[bool]:
        return [False for _ in self._get_indices(indices)]


class RoutingCallback(BaseCallback):
    """Logs ``charts/accuracy``, ``charts/macs_fraction``, ``charts/episodic_return`` and each
    ``reward_terms/<name>`` (its episode totals) of ended episodes, and a co-trained backbone's
    ``losses/backbone_cross_entropy``."""

    def _on_step(self) -> bool:
        infos = self.locals.get("infos", [])
        if infos and np.isfinite(infos[0].get("backbone_loss", np.nan)):
            self.logger.record("losses/backbone_cross_entropy", infos[0]["backbone_loss"])
        if infos and "lam" in infos[0]:
            self.logger.record("charts/lam", infos[0]["lam"])
        ended = [info for info in infos if "correct" in info]
        if ended:
            self.logger.record_mean("charts/accuracy", float(np.mean([i["correct"] for i in ended])))
            self.logger.record_mean("charts/macs_fraction", float(np.mean([i["macs_fraction"] for i in ended])))
            self.logger.record_mean("charts/episodic_return", float(np.mean([i["episode"]["r"] for i in ended])))
            for name in ended[0]["reward_terms"]:
                self.logger.record_mean(f"reward_terms/{name}", float(np.mean([i["reward_terms"][name] for i in ended])))
        return True


class RoundCallback(BaseCallback):
    """``after_round(steps)`` each time another ``every`` timesteps have been learned in this ``learn``
    call (steps counted from its start; the policy scored is the one acting now), stopping learning
    when it returns ``False``; :meth:`finish` calls it once more for a last, shorter round."""

    def __init__(self, every: int, after_round: AfterRound) -> None:
        super().__init__()
        self.every, self.after_round = every, after_round
        self.start = self.called_at = 0
        self.stopped = False

    def _on_training_start(self) -> None:
        self.start = self.called_at = self.num_timesteps

    def _on_step(self) -> bool:
        if self.num_timesteps - self.called_at < self.every:
            return True
        self.called_at = self.num_timesteps
        self.stopped = not self.after_round(self.num_timesteps - self.start)
        return not self.stopped

    def finish(self) -> None:
        if not self.stopped and self.num_timesteps > self.called_at:
            self.after_round(self.num_timesteps - self.start)


class ProgressCallback(BaseCallback):
    """A tqdm progress bar over SB3's timesteps."""

    def __init__(self, total: int, desc: str) -> None:
        super().__init__()
        self.bar = tqdm(total=total, desc=desc, unit="step", disable=None)  # None: off when not a terminal

    def _on_step(self) -> bool:
        self.bar.n = min(self.num_timesteps, self.bar.total)
        self.bar.refresh()
        return True

    def _on_training_end(self) -> None:
        self.bar.close()


class SB3Agent(Agent):
    """An SB3 algorithm with ``MultiInputPolicy`` on the routing environment; its features extractor
    is :class:`~routing_env.agents.features.RoutingExtractor` (sorted softmax, no action mask)."""

    algorithm: ClassVar[type[BaseAlgorithm]]
    defaults: ClassVar[dict[str, Any]] = {}
    masked: ClassVar[bool] = False

    def __init__(self, env: VectorEnv, *, seed: int = 0, **options: Any) -> None:
        super().__init__(env, seed=seed)
        self.kwargs = {**self.defaults, **options}
        self.vec_env = SB3VecEnv(env)
        self._logged_to: Path | None = None
        """The TensorBoard folder SB3 writes to (set once per run: a second writer would split the curves)."""
        try:
            self.model = self.algorithm(
                "MultiInputPolicy",
                self.vec_env,
                seed=seed,
                verbose=0,
                device="cpu",
                policy_kwargs={"features_extractor_class": RoutingExtractor},
                **self.kwargs,
            )
        except TypeError as e:
            raise TypeError(f"invalid option for agent {self.name!r}: {e}") from None
        except AssertionError as e:  # SB3 checks option values with assert (batch_size > 1, n_steps > 0)
            raise ValueError(f"invalid option value for agent {self.name!r} (given {options}): {e}") from None
        # Without a logger of its own, each SB3 ``learn`` configures one in a fresh, empty
        # ``/tmp/SB3-<date>`` folder (``utils.configure_logger`` with no ``tensorboard_log``): a sweep
        # would leave one per run. A logger with no outputs records nothing and creates nothing;
        # ``learn`` replaces it with TensorBoard's when given a ``RunLogger``.
        self.model.set_logger(Logger(folder=None, output_formats=[]))

    def options(self) -> dict[str, Any]:
        return dict(self.kwargs)

    def learn(self, total_steps: int, logger: RunLogger | None = None, progress: bool = False,
              callbacks: Sequence[BaseCallback] = ()) -> None:
        if logger is not None and self._logged_to != logger.directory:  # one events file per run
            self.model.set_logger(configure(str(logger.directory), ["tensorboard"]))
            self._logged_to = logger.directory
        every = [RoutingCallback()] + ([ProgressCallback(total_steps, self.name)] if progress else []) + list(callbacks)
        # a later call goes on (its steps, its episodes, its TensorBoard step) where this one stopped
        self.model.learn(total_timesteps=total_steps, callback=CallbackList(every), reset_num_timesteps=self.model.num_timesteps == 0)

    def learn_rounds(self, total_steps: int, every: int, after_round: AfterRound, logger: RunLogger | None = None,
                     progress: bool = False) -> None:
        """Rounds inside one SB3 ``learn`` (:class:`RoundCallback`): SB3's schedules (DQN's
        exploration rate, any learning-rate schedule) run over ``total_steps`` as in one :meth:`learn`,
        where separate calls would restart them."""
        rounds = RoundCallback(every, after_round)
        self.learn(total_steps, logger, progress, callbacks=[rounds])
        rounds.finish()

    def predict(self, obs: dict[str, np.ndarray], env: VectorEnv) -> np.ndarray:
        kwargs = {"action_masks": obs["action_mask"].astype(bool)} if self.masked else {}
        actions, _ = self.model.predict(obs, deterministic=True, **kwargs)
        return np.asarray(actions, dtype=np.int64)

    def policy_module(self) -> nn.Module:
        """The deterministic policy as a module over observation tensors (for ``RoutedModel``): the
        scores whose argmax ``predict`` takes (action logits; Q-values for DQN). Unmasked ones may
        favour an invalid move; ``RoutedModel`` then applies the environment's fallback, as stepping
        the environment would. A masked algorithm's scores are masked here, as its ``predict`` masks."""
        return _SB3Scores(self.model.policy, q_values=isinstance(self.model, DQN), masked=self.masked)

    def policy_macs(self) -> float:
        space = self.vec_env.observation_space
        zeros = {k: np.zeros((1, *s.shape), dtype=s.dtype) for k, s in space.items()}
        obs, _ = self.model.policy.obs_to_tensor(zeros)
        return float(count_macs(self._decision, obs))

    def _decision(self, obs: dict[str, torch.Tensor]) -> object:
        return self.model.policy.get_distribution(obs)

    def save(self, directory: str | Path) -> None:
        super().save(directory)
        save_state_dict(self.model.policy.state_dict(), Path(directory) / "policy.pt")

    def load_state(self, directory: Path) -> None:
        self.model.policy.load_state_dict(load_state_dict(Path(directory) / "policy.pt"))


ON_POLICY = {"n_steps": 64, "gamma": 1.0, "ent_coef": 0.01}


class PPOAgent(SB3Agent):
    name = "ppo"
    algorithm = PPO
    defaults = {**ON_POLICY, "batch_size": 256, "learning_rate": 1e-3}


class MaskablePPOAgent(SB3Agent):
    name = "maskable-ppo"
    algorithm = MaskablePPO
    defaults = {**ON_POLICY, "batch_size": 256, "learning_rate": 1e-3}
    masked = True


class A2CAgent(SB3Agent):
    name = "a2c"
    algorithm = A2C
    defaults = {"n_steps": 8, "gamma": 1.0, "ent_coef": 0.01, "learning_rate": 1e-3}


class DQNAgent(SB3Agent):
    name = "dqn"
    algorithm = DQN
    defaults = {
        "gamma": 1.0,
        "buffer_size": 50_000,
        "learning_starts": 500,
        "train_freq": 1,
        "target_update_interval": 500,
        "exploration_fraction": 0.3,
        "learning_rate": 1e-3,
    }

    def _decision(self, obs: dict[str, torch.Tensor]) -> object:
        return self.model.policy.q_net(obs)


class _SB3Scores(nn.Module):
    """An SB3 policy's action scores on a dict of observation tensors (SB3 preprocesses them itself);
    ``masked``: invalid moves get ``-inf``, as a masked algorithm's ``predict`` excludes them."""

    def __init__(self, policy: nn.Module, q_values: bool, masked: bool) -> None:
        super().__init__()
        self.policy = policy
        self.q_values = q_values
        self.masked = masked

    def forward(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        scores = self.policy.q_net(obs) if self.q_values else self.policy.get_distribution(obs).distribution.logits
        return scores.masked_fill(~obs["action_mask"].bool(), float("-inf")) if self.masked else scores

    def fused_decision(self) -> MLPDecision | None:
        """The same decision for one input in one compiled call (:class:`~routing_env.agents.fused.MLPDecision`)
        where the policy is SB3's default MLP on :class:`~routing_env.agents.features.RoutingExtractor`'s input;
        ``None`` for other architectures."""
        if self.q_values:
            extractor, layers = self.policy.q_net.features_extractor, list(self.policy.q_net.q_net)
        else:
            extractor = self.policy.pi_features_extractor
            layers = [*self.policy.mlp_extractor.policy_net, self.policy.action_net]
        return MLPDecision.of(layers, masked=self.masked) if type(extractor) is RoutingExtractor else None
