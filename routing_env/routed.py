"""Routed inference for deployment: a trained policy and a dynamic ResNet in one ``nn.Module``.

No Gymnasium, no numpy: the batch walks the blocks in lock-step, the policy decides for every input
still running, and inputs that take the same action run as one call (grouped by route). The
observation the policy reads is the environment's (DESIGN §2), built from tensors, so a policy
trained in ``routing_env/DynamicResNet-v0`` acts the same here (a test checks predictions, exits and
MACs against the environment). The hard budget ``max_macs`` is not applied here.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .backbones.dynamic import DynamicResNetBackbone, pooled_features
from .backbones.resnet import SKIP_CHOICE
from .core import EXIT, RUN, SKIP
from .costs import count_macs


class RoutedModel(nn.Module):
    """Run ``policy`` and ``backbone`` together: ``forward(x) -> (logits, macs, exit_position, decisions)``.

    Args:
        backbone: the dynamic ResNet (its network is used frozen, in ``eval()`` mode).
        policy: an ``nn.Module`` mapping a batched observation dict of tensors (``features``,
            ``probs``, ``position``, ``cost``, ``action_mask``) to action logits ``(B, A)``; the
            action taken is the argmax over the valid ones (e.g. ``ReinforceAgent.policy_module()``).
        allow_skip: offer SKIP where a block can be skipped (the environment's default: yes).
    """

    def __init__(self, backbone: DynamicResNetBackbone, policy: nn.Module, allow_skip: bool = True) -> None:
        super().__init__()
        spec, costs = backbone.spec, backbone.costs
        self.model = backbone.model.eval()
        self.policy = policy.eval()
        self.num_stages, self.num_actions = spec.num_stages, spec.num_actions
        self.feature_dim, self.num_classes = spec.feature_dim, spec.num_classes
        self.head_positions = tuple(spec.head_positions)
        self.skippable = tuple(bool(allow_skip and s) for s in spec.skippable)
        self.prefix, self.reference = float(costs.prefix), float(costs.reference)
        # MACs of each action at each point: EXIT 0, SKIP (a projection, if any), RUN at each width
        self.action_macs = torch.from_numpy(np.concatenate([np.zeros((spec.num_stages, 1)), costs.skip[:, None], costs.stage], axis=1))
        self.head_macs = [float(c) for c in costs.head]
        example = self._observation(torch.zeros(1, spec.feature_dim), torch.zeros(1, spec.num_classes), 0,
                                    torch.zeros(1), torch.zeros(1, dtype=torch.bool))
        self.policy_macs_per_decision = float(count_macs(self.policy, example))
        """MACs of one policy decision (report them beside the backbone's: ``decisions`` per input)."""

    def _observation(self, features: torch.Tensor, probs: torch.Tensor, position: int, macs: torch.Tensor,
                     has_probs: torch.Tensor) -> dict[str, torch.Tensor]:
        b = len(features)
        onehot = torch.zeros(b, self.num_stages + 1)
        onehot[:, position] = 1.0
        mask = torch.zeros(b, self.num_actions, dtype=torch.bool)
        mask[:, EXIT] = has_probs
        if position < self.num_stages:
            mask[:, SKIP] = self.skippable[position]
            mask[:, RUN:] = True
        return {"features": features, "probs": probs, "position": onehot, "cost": (macs / self.reference)[:, None],
                "action_mask": mask.to(torch.int8)}

    @torch.inference_mode()
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        b = len(x)
        out_logits = torch.zeros(b, self.num_classes)
        out_macs = torch.zeros(b, dtype=torch.float64)
        out_exit = torch.full((b,), -1, dtype=torch.long)
        out_decisions = torch.zeros(b, dtype=torch.long)
        rows = torch.arange(b)
        h = self.model.stem(x)
        macs = torch.full((b,), self.prefix, dtype=torch.float64)
        logits = torch.zeros(b, self.num_classes)
        has_probs = torch.zeros(b, dtype=torch.bool)
        exit_at = torch.full((b,), -1, dtype=torch.long)
        for k in range(self.num_stages + 1):
            probs = torch.where(has_probs[:, None], F.softmax(logits, dim=1), torch.zeros_like(logits))
            obs = self._observation(pooled_features(h, self.feature_dim), probs, k, macs.float(), has_probs)
            scores = self.policy(obs).masked_fill(~obs["action_mask"].bool(), float("-inf"))
            action = scores.argmax(dim=1)
            out_decisions[rows] += 1
            done = action == EXIT
            out_logits[rows[done]], out_macs[rows[done]], out_exit[rows[done]] = logits[done], macs[done], exit_at[done]
            keep = ~done
            rows, h, action, macs = rows[keep], h[keep], action[keep], macs[keep]
            logits, has_probs, exit_at = logits[keep], has_probs[keep], exit_at[keep]
            if len(rows) == 0:
                break
            h = self.model.block_routes(k, h, torch.where(action == SKIP, SKIP_CHOICE, action - RUN))
            macs += self.action_macs[k, action]
            if k + 1 in self.head_positions:  # heads are evaluated on arrival after RUN and after SKIP
                logits = self.model.head(k + 1, h).float()
                macs += self.head_macs[k + 1]
                has_probs = torch.ones_like(has_probs)
                exit_at = torch.full_like(exit_at, k + 1)
        return out_logits, out_macs, out_exit, out_decisions
