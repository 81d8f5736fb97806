"""Compute accounting: multiply-accumulates (MACs) measured with ``FlopCounterMode``.

``FlopCounterMode`` counts FLOPs of matrix products and convolutions as 2 × MAC, so every figure here
is ``flops / 2``. Element-wise work (BatchNorm, ReLU, additions) is not counted, as in He et al. 2016
and the CIFAR tables that quote "FLOPs".
"""

from __future__ import annotations

from typing import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode


def count_macs(fn: Callable[..., object], *args: object) -> int:
    """MACs of one call ``fn(*args)`` (no gradients), measured with ``FlopCounterMode``."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        fn(*args)
    return counter.get_total_flops() // 2


def module_macs(module: torch.nn.Module, input_shape: tuple[int, ...]) -> int:
    """MACs of ``module`` on one input of shape ``input_shape`` (without the batch dimension), on its device."""
    was_training = module.training
    module.eval()
    device = next(module.parameters(), torch.zeros(())).device
    try:
        return count_macs(module, torch.zeros(1, *input_shape, device=device))
    finally:
        module.train(was_training)
