"""A CleanRL-style PPO with action masking on a routing environment, in one readable file.

    python examples/cleanrl_ppo.py --env-id routing_env:routing_env/Cascade-v0 --backbone tiny-cascade --total-timesteps 20000

What it shows a CleanRL user: our vector environment drops into CleanRL's loop with no adapter.
``gym.make_vec(..., vectorization_mode="vector_entry_point")`` is the natively batched env (one core for
every episode); ``"routing_env:<id>"`` imports the package first, so the id resolves in any process. The
observation is a Dict: :class:`routing_env.wrappers.FlatObservationVector` flattens it and keeps the mask
apart, and the policy masks its logits with it (invalid actions get −1e9). Autoreset is ``NextStep``:
the step after an episode ends returns the new episode's first observation and its reward is 0 and not
learned from (``next_done`` marks it, as in CleanRL). After learning on ``val`` it scores the greedy
policy on every ``test`` image once (:func:`evaluate_on_test`): the accuracy and MACs a paper reports.
"""

from __future__ import annotations

import argparse
import time

import gymnasium as gym
import numpy as np
import torch
from torch import nn
from torch.distributions import Categorical

from routing_env.wrappers import FlatObservationVector


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--env-id", default="routing_env:routing_env/Cascade-v0")
    p.add_argument("--backbone", default="tiny-cascade")
    p.add_argument("--lam", type=float, default=0.05)
    p.add_argument("--total-timesteps", type=int, default=20_000)
    p.add_argument("--num-envs", type=int, default=16)
    p.add_argument("--num-steps", type=int, default=32)
    p.add_argument("--learning-rate", type=float, default=1e-3)
    p.add_argument("--update-epochs", type=int, default=4)
    p.add_argument("--num-minibatches", type=int, default=4)
    p.add_argument("--clip-coef", type=float, default=0.2)
    p.add_argument("--ent-coef", type=float, default=0.01)
    p.add_argument("--vf-coef", type=float, default=0.5)
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


class Agent(nn.Module):
    def __init__(self, obs_dim: int, num_actions: int) -> None:
        super().__init__()
        self.critic = nn.Sequential(nn.LayerNorm(obs_dim), nn.Linear(obs_dim, 64), nn.Tanh(), nn.Linear(64, 1))
        self.actor = nn.Sequential(nn.LayerNorm(obs_dim), nn.Linear(obs_dim, 64), nn.Tanh(), nn.Linear(64, num_actions))

    def get_value(self, x: torch.Tensor) -> torch.Tensor:
        return self.critic(x)

    def get_action_and_value(self, x: torch.Tensor, mask: torch.Tensor, action: torch.Tensor | None = None):  # noqa: ANN201
        logits = self.actor(x).masked_fill(~mask, -1e9)
        probs = Categorical(logits=logits)
        if action is None:
            action = probs.sample()
        return action, probs.log_prob(action), probs.entropy(), self.critic(x)


def evaluate_on_test(agent: Agent, args: argparse.Namespace, chunk: int = 1000) -> tuple[float, float]:
    """The greedy policy (the masked logits' argmax) on every ``test`` image once, ``chunk`` at a time:
    its accuracy and mean MACs fraction. ``reset(options={"index": …})`` picks the images; a slot that
    has ended is autoreset onto a random image, whose episode is not counted."""
    envs = FlatObservationVector(gym.make_vec(args.env_id, num_envs=chunk, vectorization_mode="vector_entry_point",
                                              backbone=args.backbone, lam=args.lam, split="test"))
    n = envs.unwrapped.num_instances
    correct, macs = np.zeros(n), np.zeros(n)
    for start in range(0, n, chunk):
        index = np.arange(start, start + chunk) % n  # the last chunk wraps around; only its first images count
        obs, _ = envs.reset(options={"index": index})
        done = np.zeros(chunk, dtype=bool)
        while not done.all():
            with torch.no_grad():
                logits = agent.actor(torch.as_tensor(obs["observations"]))
                action = logits.masked_fill(~torch.as_tensor(obs["action_mask"]).bool(), -1e9).argmax(1)
            obs, _, terminated, _, info = envs.step(action.numpy())
            ended = terminated & ~done
            correct[index[ended]], macs[index[ended]] = info["correct"][ended], info["macs_fraction"][ended]
            done |= terminated
    envs.close()
    return float(correct.mean()), float(macs.mean())


def main(argv: list[str] | None = None) -> dict[str, float]:
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    envs = gym.make_vec(args.env_id, num_envs=args.num_envs, vectorization_mode="vector_entry_point",
                        backbone=args.backbone, lam=args.lam)
    envs = gym.wrappers.vector.RecordEpisodeStatistics(FlatObservationVector(envs))
    obs_dim = envs.single_observation_space["observations"].shape[0]
    agent = Agent(obs_dim, envs.single_action_space.n)
    optimizer = torch.optim.Adam(agent.parameters(), lr=args.learning_rate, eps=1e-5)
    batch_size = args.num_envs * args.num_steps
    obs = torch.zeros((args.num_steps, args.num_envs, obs_dim))
    masks = torch.zeros((args.num_steps, args.num_envs, envs.single_action_space.n), dtype=torch.bool)
    actions = torch.zeros((args.num_steps, args.num_envs), dtype=torch.long)
    logprobs, rewards, dones, values = (torch.zeros((args.num_steps, args.num_envs)) for _ in range(4))
    next_obs, _ = envs.reset(seed=args.seed)
    next_done = torch.zeros(args.num_envs)
    returns_seen: list[float] = []
    start = time.time()
    for _ in range(args.total_timesteps // batch_size):
        for step in range(args.num_steps):
            obs[step] = torch.as_tensor(next_obs["observations"])
            masks[step] = torch.as_tensor(next_obs["action_mask"]).bool()
            dones[step] = next_done
            with torch.no_grad():
                action, logprob, _, value = agent.get_action_and_value(obs[step], masks[step])
            actions[step], logprobs[step], values[step] = action, logprob, value.flatten()
            next_obs, reward, terminated, truncated, info = envs.step(action.numpy())
            rewards[step] = torch.as_tensor(reward, dtype=torch.float32)
            next_done = torch.as_tensor(terminated | truncated, dtype=torch.float32)
            if "episode" in info:
                returns_seen += info["episode"]["r"][info["_episode"]].tolist()
        with torch.no_grad():  # undiscounted Monte-Carlo returns inside each episode (episodes are short)
            advantages = torch.zeros_like(rewards)
            future = agent.get_value(torch.as_tensor(next_obs["observations"])).flatten() * (1 - next_done)
            for t in reversed(range(args.num_steps)):
                # under NextStep a step with dones[t] (the previous one ended) is a reset step: no reward, no link
                future = torch.where(dones[t + 1] > 0, torch.zeros_like(future), future) if t + 1 < args.num_steps else future
                ret = rewards[t] + future
                advantages[t] = ret - values[t]
                future = ret
            learn = dones == 0  # the reset steps of NextStep autoreset carry no decision
            returns = advantages + values
        b_obs, b_masks, b_actions = obs[learn], masks[learn], actions[learn]
        b_logprobs, b_advantages, b_returns = logprobs[learn], advantages[learn], returns[learn]
        order = np.arange(len(b_obs))
        size = max(1, len(order) // args.num_minibatches)
        for _ in range(args.update_epochs):
            rng.shuffle(order)
            for s in range(0, len(order), size):
                mb = order[s : s + size]
                _, newlogprob, entropy, newvalue = agent.get_action_and_value(b_obs[mb], b_masks[mb], b_actions[mb])
                ratio = (newlogprob - b_logprobs[mb]).exp()
                adv = b_advantages[mb]
                adv = (adv - adv.mean()) / (adv.std() + 1e-8) if len(mb) > 1 else adv
                pg_loss = torch.max(-adv * ratio, -adv * ratio.clamp(1 - args.clip_coef, 1 + args.clip_coef)).mean()
                v_loss = 0.5 * ((newvalue.flatten() - b_returns[mb]) ** 2).mean()
                loss = pg_loss - args.ent_coef * entropy.mean() + args.vf_coef * v_loss
                optimizer.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(agent.parameters(), 0.5)
                optimizer.step()
    envs.close()
    first, last = np.mean(returns_seen[:200]), np.mean(returns_seen[-200:])
    print(f"episodic return: first 200 episodes {first:.3f}, last 200 {last:.3f}; {time.time() - start:.1f} s")
    accuracy, macs_fraction = evaluate_on_test(agent, args)
    print(f"test (greedy, every image once): accuracy {accuracy:.4f} at {macs_fraction:.4f} of the reference MACs")
    return {"first_return": float(first), "last_return": float(last), "test_accuracy": accuracy, "test_macs_fraction": macs_fraction}


if __name__ == "__main__":
    main()
