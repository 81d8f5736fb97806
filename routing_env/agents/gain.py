"""A learned selection module fitted by regression: exit where the predicted gain of going on is small.

The confidence threshold exits at the first head whose largest probability reaches τ. What it cannot
see is whether going on would *help*: an image every head gets wrong, or one the next member settles
no better, is worth stopping early, however unsure its head is. :class:`GainAgent` learns that from
every head evaluated so far (``obs_mode="heads"``): at head h it predicts, by ridge regression on the
heads' softmax outputs, the gain of going on, ``max(correct at a later head) − correct at h`` — the
oracle's reason to continue — and exits where that prediction is at most τ. The regression is the
value of continuing fitted in one supervised step, not by reward: on the cascade, policies trained by
reinforcement on 5,000 ``val`` images overfit them and stay level with the threshold between 0.16 and
0.42 of ResNet-56's MACs (issue 13), where this rule, tuned the same way as the threshold (τ on
``val`` to a target cost or for ``accuracy − λ·cost``), has ``(h+1)·(C+2) + 2h`` weights at head h to
fit (12 to 54 on the five-member cascade, up to 110 on a dynamic ResNet-20 with nine heads).

It walks the full-width path like the threshold (never skips or narrows), so it applies to a cascade
and to a dynamic ResNet's exits alike; the ridge penalty is chosen on ``val`` by cross-fitting.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from gymnasium.vector import VectorEnv

from routing_env.checkpoints import load_state_dict, save_state_dict
from routing_env.core import EXIT
from routing_env.evaluation import ExitTable, exit_table, fixed_route_actions

from .base import Agent
from .baselines import check_options, environment_budget, tune_on_table
from .logger import RunLogger

ALPHAS = (0.1, 1.0, 10.0, 100.0, 1000.0)
"""The ridge penalties cross-fitting chooses from (on standardised features)."""


def head_features(probs: np.ndarray) -> np.ndarray:
    """What the rule reads at head h, from the softmax of heads 0..h (``probs`` ``(B, h+1, C)``):
    every softmax, each head's largest probability and entropy, whether each earlier head's class is
    the latest head's, and the latest head's probability of each earlier head's class —
    ``(B, (h+1)·(C+2) + 2h)``. Agreement between a cheap head and a dearer one is the signal the
    threshold lacks."""
    b, k, _ = probs.shape
    p = probs.astype(np.float64)
    top = p.max(axis=2)
    entropy = -(p * np.log(np.clip(p, 1e-12, None))).sum(axis=2)
    chosen = p.argmax(axis=2)
    agree = (chosen[:, :-1] == chosen[:, -1:]).astype(np.float64)
    latest_of_earlier = np.take_along_axis(p[:, -1], chosen[:, :-1], axis=1)
    return np.concatenate([p.reshape(b, -1), top, entropy, agree, latest_of_earlier], axis=1)


def continuation_gain(correct: np.ndarray) -> np.ndarray:
    """``(H-1, N)``: per head h but the last, ``max(correct[h+1:]) − correct[h]``: 1 where only going on
    gets the image right, −1 where going on cannot help and h is right, 0 where it makes no difference
    (right here and later, or wrong everywhere after h)."""
    later = np.maximum.accumulate(correct[::-1], axis=0)[::-1]  # later[h] = any head from h on is right
    return later[1:].astype(np.float64) - correct[:-1].astype(np.float64)


def fit_ridge(x: np.ndarray, y: np.ndarray, alpha: float) -> dict[str, np.ndarray]:
    """Ridge regression of ``y`` on standardised ``x`` (the intercept unpenalised): ``mean``, ``scale``,
    ``weight``, ``bias``."""
    mean, scale = x.mean(axis=0), x.std(axis=0) + 1e-6
    z = (x - mean) / scale
    centred = y - y.mean()
    weight = np.linalg.solve(z.T @ z + alpha * np.eye(z.shape[1]), z.T @ centred)
    return {"mean": mean, "scale": scale, "weight": weight, "bias": np.array(y.mean())}


def predict_ridge(model: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    return ((x - model["mean"]) / model["scale"]) @ model["weight"] + model["bias"]


def tune_tau(gain: np.ndarray, table: ExitTable, target: float | None, lam: float) -> tuple[float, float]:
    """τ for predicted gains ``gain`` (``(H-1, N)``; exit at the first head whose gain is at most τ, the
    last head always) and its score, tuned as the threshold's (:func:`~routing_env.agents.baselines.tune_on_table`):
    the candidates run from the largest τ, the cheapest, so that among equal scores it wins, and where
    none is cheap enough τ = +inf (exit at the first head)."""
    candidates = np.unique(np.concatenate([np.quantile(gain, np.linspace(0, 1, 801)), [-np.inf, np.inf]]))[::-1]
    return tune_on_table(table, candidates, lambda tau: gain <= tau, target, lam)


class GainAgent(Agent):
    """Exit at the first head where the predicted gain of going on is at most ``tau`` (module docstring).

    ``learn`` fits, on the agent's environment (use ``val``; it needs ``obs_mode="heads"``), one ridge
    regression per head but the last, with the penalty from ``alphas`` whose cross-fitted
    (``folds``, split by ``seed``) rule scores best on it, then refits on all of it and tunes τ on the
    refitted rule's predictions for it, as :class:`~routing_env.agents.baselines.ThresholdAgent` tunes its own:
    the best accuracy within ``target_macs_fraction``, or the best ``accuracy − lam·macs_fraction``.
    τ is tuned in-sample so that the rule deployed keeps the target on ``val``, as the threshold
    does; the penalty, chosen out of sample, is what guards against the fit's optimism.
    """

    name = "gain"

    def __init__(
        self,
        env: VectorEnv,
        *,
        seed: int = 0,
        lam: float | None = None,
        target_macs_fraction: float | None = None,
        alphas: tuple[float, ...] | list[float] = ALPHAS,
        folds: int = 5,
    ) -> None:
        super().__init__(env, seed=seed)
        if "heads" not in env.single_observation_space.spaces:
            raise ValueError("gain agent: it reads every head evaluated so far; make the environment with obs_mode='heads' "
                             f"(its observation has {sorted(env.single_observation_space.spaces)})")
        check_options("gain", lam=lam, target_macs_fraction=target_macs_fraction)
        self.lam = env.unwrapped.config.lam if lam is None else float(lam)
        self.target = environment_budget(env, "gain") if target_macs_fraction is None else target_macs_fraction
        if not alphas or any(not a > 0 for a in alphas):
            raise ValueError(f"gain agent: alphas must be positive ridge penalties, got {list(alphas)!r}")
        if isinstance(folds, bool) or not isinstance(folds, int) or folds < 2:
            raise ValueError(f"gain agent: folds must be an integer >= 2, got {folds!r}")
        self.alphas, self.folds = tuple(float(a) for a in alphas), folds
        routing = env.unwrapped.routing
        if len(routing.head_positions) < 2:
            raise ValueError(f"gain agent: it decides between heads, and this backbone has {len(routing.head_positions)}")
        self.head_positions = routing.head_positions
        self.num_stages = routing.num_stages
        self.num_classes = int(env.single_observation_space["probs"].shape[0])
        self.alpha: float | None = None
        self.tau = np.inf
        """Unfitted (no models), the rule never exits before the last head."""
        self.models: list[dict[str, np.ndarray]] = []

    def learn(self, total_steps: int = 0, logger: RunLogger | None = None, progress: bool = False) -> None:
        table = exit_table(self.env)
        targets = continuation_gain(table.correct)
        features = [head_features(table.probs[: h + 1].transpose(1, 0, 2)) for h in range(len(targets))]
        parts = np.array_split(np.random.default_rng(self.seed).permutation(table.correct.shape[1]), self.folds)
        best_alpha, best_score = self.alphas[0], -np.inf
        for alpha in self.alphas:
            held_out = np.zeros_like(targets)
            for part in parts:
                kept = np.setdiff1d(np.arange(table.correct.shape[1]), part)
                for h, (x, y) in enumerate(zip(features, targets)):
                    held_out[h, part] = predict_ridge(fit_ridge(x[kept], y[kept], alpha), x[part])
            _, score = tune_tau(held_out, table, self.target, self.lam)
            if score > best_score:
                best_alpha, best_score = alpha, score
        self.alpha = best_alpha
        self.models = [fit_ridge(x, y, best_alpha) for x, y in zip(features, targets)]
        self.tau, _ = tune_tau(np.stack([predict_ridge(m, x) for m, x in zip(self.models, features)]), table, self.target, self.lam)
        if logger is not None:
            logger.scalar("charts/gain_tau", self.tau, 0)
            logger.scalar("charts/gain_alpha", self.alpha, 0)

    def predict(self, obs: dict[str, np.ndarray], env: VectorEnv) -> np.ndarray:
        actions = fixed_route_actions(obs, self.num_stages)
        mask = obs["action_mask"].astype(bool)
        here = obs["position"].argmax(axis=1)
        for h, (position, model) in enumerate(zip(self.head_positions, self.models)):
            rows = np.flatnonzero((here == position) & mask[:, EXIT])
            if len(rows):
                gain = predict_ridge(model, head_features(obs["heads"][rows, : h + 1]))
                actions[rows[gain <= self.tau]] = EXIT
        return actions

    def policy_macs(self) -> float:
        """Multiply-adds of the dearest decision: a multiply per probability for the entropies (their
        logs not counted), then standardising the features and the regression, one each per feature."""
        return float(max(((h + 1) * self.num_classes + 2 * len(m["weight"]) for h, m in enumerate(self.models)), default=0))

    def options(self) -> dict[str, Any]:
        return {"lam": self.lam, "target_macs_fraction": self.target, "alphas": list(self.alphas), "folds": self.folds}

    def save(self, directory: str | Path) -> None:
        super().save(directory)
        alpha = np.nan if self.alpha is None else self.alpha
        state: dict[str, Any] = {"tau": torch.tensor(self.tau, dtype=torch.float64), "alpha": torch.tensor(alpha, dtype=torch.float64)}
        for h, model in enumerate(self.models):
            state.update({f"head{h}.{k}": torch.from_numpy(np.asarray(v, dtype=np.float64)) for k, v in model.items()})
        save_state_dict(state, Path(directory) / "gain.pt")

    def load_state(self, directory: Path) -> None:
        path = Path(directory) / "gain.pt"
        state = load_state_dict(path)
        alpha = float(state["alpha"])
        self.tau, self.alpha = float(state["tau"]), None if np.isnan(alpha) else alpha
        saved = sum(1 for key in state if key.endswith(".mean") and key.startswith("head"))  # none if saved unfitted
        if saved not in (0, len(self.head_positions) - 1):
            raise ValueError(f"{path} holds {saved} regressions; this environment's {len(self.head_positions)} heads "
                             f"need {len(self.head_positions) - 1} (or none, unfitted)")
        self.models = [{k: state[f"head{h}.{k}"].numpy() for k in ("mean", "scale", "weight", "bias")} for h in range(saved)]
