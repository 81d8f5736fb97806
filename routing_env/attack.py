"""Compute under attack: inputs crafted to make a routing policy spend as much as it can.

A dynamic network's savings are a denial-of-service target: an input perturbed so that the policy never
exits and runs every block at full width costs the full network (ILFO, EREBA and GradAuto attack exactly
this). :func:`compute_attack` is a PGD attack (L∞, ``eps`` in pixel levels of 255, ``steps`` steps of
``alpha``, sign of the gradient, projected) on a :class:`~routing_env.routed.RoutedModel`'s policy: it
maximises, at every decision point the policy reaches on its own route, the log-probability it gives
to the widest ``RUN`` the mask allows (the budget included) — the most expensive move — against all its valid moves, through the network's
own features, heads and the policy. The routed model then runs on the attacked images with its real
argmax decisions. The hard budget (``max_macs``) is the defence: it holds whatever the input, because
the mask, not the policy, decides what may run (``benchmarks/budget_check.py``, and a test here).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .backbones.dynamic import pooled_features
from .core import EXIT, RUN
from .routed import RoutedModel
from .validation import check_number


def expensive_log_prob(routed: RoutedModel, x: torch.Tensor) -> torch.Tensor:
    """Per input, the summed log-probability of the widest valid RUN at every decision point where the
    policy is asked on its own route, walked as :class:`RoutedModel` walks it: its argmax moves with
    the fallback, the budget's mask (``max_macs``), and between decision points (``decide_at="head"``)
    the last move repeated, not asked; an input that exits stops counting. ``x`` floats in [0, 1];
    differentiable through the blocks, heads and policy."""
    model = routed.model
    h = model.stem(x.contiguous(memory_format=torch.channels_last) if routed.channels_last else x)
    b = len(x)
    has_probs = routed.has_head[0]
    macs = torch.full((b,), routed.prefix + (routed.costs_head0 if has_probs else 0.0), dtype=torch.float64, device=x.device)
    priced = torch.full((b,), routed.price_prefix, dtype=torch.float64, device=x.device)  # what the observation's cost reads
    pooled = pooled_features(h, routed.feature_dim)
    probs = F.softmax(model.head_pooled(0, pooled), dim=1) if has_probs else torch.zeros(b, routed.num_classes, device=x.device)
    alive = torch.ones(b, dtype=torch.bool, device=x.device)
    total = torch.zeros(b, device=x.device)
    segment = torch.zeros(b, dtype=torch.long, device=x.device)  # the move decided last
    for k in range(routed.num_stages):
        mask = routed._mask(k, has_probs, macs)
        if routed.decides[k]:
            target = widest_valid_run(mask)
            scores = routed.policy(routed._observation(pooled, probs, k, priced, mask))
            log_probs = torch.log_softmax(scores.masked_fill(~mask, float("-inf")), dim=1).gather(1, target[:, None])[:, 0]
            counted = alive & mask.gather(1, target[:, None])[:, 0]  # where only EXIT fits, nothing to push
            total = total + torch.where(counted, log_probs, torch.zeros_like(total))
            action = segment = routed.choose(scores.detach(), mask)
        else:
            action = routed._resolve(segment, mask)
        alive = alive & (action != EXIT)
        if not bool(alive.any()):
            break
        action = torch.where(alive, action, RUN)  # the ended rows only keep shapes, and their spend (so their mask keeps a move)
        h = model.block_routes(k, h, routed.choice_of[action])
        pooled = pooled_features(h, routed.feature_dim)
        macs = macs + torch.where(alive, routed.act_cost[k][action], 0.0)
        priced = priced + torch.where(alive, routed.price_cost[k][action], 0.0)
        if routed.has_head[k + 1]:
            probs = F.softmax(model.head_pooled(k + 1, pooled), dim=1)
            has_probs = True
    return total


def widest_valid_run(mask: torch.Tensor) -> torch.Tensor:
    """Per row of ``mask`` (B, A), the widest RUN it allows: the dearest move, what the attack pushes
    toward (under a budget the full width may be masked while a narrower one fits). A row that allows
    no RUN gets the widest, masked: the caller does not count it."""
    runs = mask[:, RUN:]
    return RUN + runs.shape[1] - 1 - runs.flip(1).int().argmax(dim=1)


def compute_attack(routed: RoutedModel, images: torch.Tensor, eps: float = 8.0, steps: int = 10, alpha: float | None = None) -> torch.Tensor:
    """uint8 images within ``eps`` levels (L∞) of ``images`` that push ``routed``'s policy toward the
    widest valid RUN at every point where it decides (PGD, sign steps of ``alpha`` levels, default ``eps / 4``).
    The result is rounded to whole levels and kept within ``floor(eps)`` of ``images``, so that a
    fractional ``eps`` is not exceeded by the rounding."""
    eps = check_number("eps", eps, low=0)
    steps = check_number("steps", steps, low=1, integer=True)
    if alpha is not None:  # a negative step would descend: an attack that lowers the compute
        alpha = check_number("alpha", alpha, above=0, hint=" (levels of 255), or None for eps / 4")
    alpha = eps / 4 if alpha is None else alpha
    x0 = images.float() / 255.0
    delta = torch.zeros_like(x0)
    for _ in range(steps):
        delta.requires_grad_(True)
        with torch.enable_grad():
            objective = expensive_log_prob(routed, (x0 + delta).clamp(0, 1)).sum()
            (grad,) = torch.autograd.grad(objective, delta)
        delta = (delta.detach() + alpha / 255.0 * grad.sign()).clamp(-eps / 255.0, eps / 255.0)
    attacked = ((x0 + delta).clamp(0, 1) * 255.0).round()
    levels = images.float()
    return torch.minimum(torch.maximum(attacked, levels - math.floor(eps)), levels + math.floor(eps)).to(torch.uint8)


def attack_report(routed: RoutedModel, images: torch.Tensor, labels: np.ndarray, eps: float, steps: int,
                  batch_size: int = 250) -> dict[str, Any]:
    """The policy's mean MACs fraction and accuracy on clean and attacked ``images``."""
    clean_macs, adv_macs, clean_right, adv_right = [], [], [], []
    device = next(routed.model.parameters()).device  # the images go where the routed model is, which may be a GPU
    for start in range(0, len(images), batch_size):
        x = images[start : start + batch_size].to(device)
        y = torch.from_numpy(np.asarray(labels[start : start + batch_size]))
        attacked = compute_attack(routed, x, eps, steps)
        for inputs, macs_out, right_out in ((x, clean_macs, clean_right), (attacked, adv_macs, adv_right)):
            logits, macs, _, _ = routed(inputs)
            macs_out.append(macs.cpu().numpy())
            right_out.append((logits.argmax(1).cpu() == y).numpy())
    reference = routed.reference
    return {
        "eps": eps, "steps": steps, "norm": "linf (pixel levels of 255)", "n": int(len(images)),
        "clean_macs_fraction": float(np.concatenate(clean_macs).mean() / reference),
        "attacked_macs_fraction": float(np.concatenate(adv_macs).mean() / reference),
        "attacked_max_macs_fraction": float(np.concatenate(adv_macs).max() / reference),
        "clean_accuracy": float(np.concatenate(clean_right).mean()),
        "attacked_accuracy": float(np.concatenate(adv_right).mean()),
        "budget": None if routed.budget == float("inf") else routed.budget / reference,
    }
