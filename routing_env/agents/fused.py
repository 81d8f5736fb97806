"""A routing policy's decision for one input as one compiled call (issue 20).

Why: at batch 1 a decision in eager PyTorch is about fifteen small ops (the observation's tensors,
the sort and concatenation of :func:`~routing_env.agents.features.policy_input`, LayerNorm, three linear layers
and their activations, the mask, the argmax), and each pays its dispatch: 35–50 µs a decision on a
2-core VM, about what a narrow block costs. A deployed policy decides before every block, so its
decisions cost nearly as much as the network they thin out. :class:`MLPDecision` makes the same
decision in one numba call over numpy views of the observation and of the module's own parameters.
:class:`~routing_env.routed.RoutedModel` uses it at batch 1 on the CPU when the policy module offers
one (``fused_decision()``, as the agents' ``policy_module()`` do for their default MLPs), and the
torch path otherwise.

The input is :func:`~routing_env.agents.features.policy_input`'s layout (``features``, ``probs`` sorted in
decreasing order, the ``position`` one-hot, ``cost``); a test holds the two equal. The sums run in
float64 (reassociated, so that they vectorise), so the scores equal the module's up to float32
rounding: an argmax between two scores that agree to ~1e-6 can differ (the batched walk and the
batch-1 walk are tested to decide alike).
"""

from __future__ import annotations

from typing import Sequence

import numba
import numpy as np
import torch
from torch import nn

ACTIVATIONS = {nn.Tanh: 0, nn.ReLU: 1}
"""The hidden activations the kernel computes (code passed to it)."""


@numba.njit(cache=True, fastmath={"reassoc", "contract"})  # vectorised dot products (10.3 -> 4.4 µs a decision: benchmarks/compiled_routes.py)
def _decide(features: np.ndarray, probs: np.ndarray, position: int, cost: float, mask: np.ndarray, masked: bool,
            norm_weight: np.ndarray, norm_bias: np.ndarray, eps: float, weights: tuple, biases: tuple,
            activation: int) -> int:
    """The argmax of the MLP's scores on one policy input (masked moves excluded when ``masked``);
    an empty ``norm_weight`` means no LayerNorm."""
    f, c = features.shape[0], probs.shape[0]
    d = weights[0].shape[1]
    x = np.zeros(d, np.float64)
    x[:f] = features
    order = np.argsort(-probs, kind="mergesort")
    for i in range(c):
        x[f + i] = probs[order[i]]
    x[f + c + position] = 1.0
    x[d - 1] = np.float32(cost)  # the observation's float32 value
    if norm_weight.shape[0]:
        mean = x.mean()
        scale = 1.0 / np.sqrt(((x - mean) ** 2).mean() + eps)
        for i in range(d):
            x[i] = (x[i] - mean) * scale * norm_weight[i] + norm_bias[i]
    last = len(weights) - 1
    for n in range(len(weights)):
        w, b = weights[n], biases[n]
        h = np.empty(w.shape[0], np.float64)
        for r in range(w.shape[0]):
            acc = 0.0
            for j in range(w.shape[1]):
                acc += w[r, j] * x[j]
            v = acc + b[r]
            if n < last:
                v = np.tanh(v) if activation == 0 else max(v, 0.0)
            h[r] = v
        x = h
    best, best_score = -1, -np.inf
    for a in range(x.shape[0]):
        if (mask[a] or not masked) and (best < 0 or x[a] > best_score):
            best, best_score = a, x[a]
    return best


class MLPDecision:
    """The decision of an MLP policy (optional LayerNorm, linear layers with one hidden activation)
    for one observation: ``decision(features, probs, position, cost, mask) -> action``, the argmax
    the module's scores give (among ``mask``'s moves when the module masks its scores).

    The weights are views of the modules' parameters (a ``load_state_dict`` shows through); build it
    again after moving or casting the modules (:meth:`of` returns ``None`` off the CPU or float32).
    """

    def __init__(self, linears: Sequence[nn.Linear], activation: int, norm: nn.LayerNorm | None, masked: bool) -> None:
        self.weights = tuple(_view(layer.weight) for layer in linears)
        self.biases = tuple(_view(layer.bias) for layer in linears)
        self.activation, self.masked = activation, masked
        empty = np.zeros(0, np.float32)
        self.norm_weight = _view(norm.weight) if norm is not None else empty
        self.norm_bias = _view(norm.bias) if norm is not None else empty
        self.eps = float(norm.eps) if norm is not None else 0.0
        self.input_dim = int(self.weights[0].shape[1])
        """Length of the policy input it reads: ``F + C + P + 1`` for ``features``, ``probs``, ``position``, ``cost``."""

    @classmethod
    def of(cls, layers: Sequence[nn.Module], norm: nn.LayerNorm | None = None, masked: bool = False) -> MLPDecision | None:
        """The decision of ``layers`` (Linear, activation, Linear, …, Linear) after ``norm``, or ``None``
        where the kernel does not compute them (another layer or activation, a LayerNorm without
        affine weights, or parameters not float32 on the CPU): the caller keeps the torch path."""
        linears = [m for m in layers if isinstance(m, nn.Linear)]
        hidden = [type(m) for m in layers if not isinstance(m, nn.Linear)]
        shape_ok = (len(linears) == len(hidden) + 1 and all(isinstance(m, nn.Linear) == (i % 2 == 0) for i, m in enumerate(layers))
                    and len(set(hidden)) <= 1 and all(h in ACTIVATIONS for h in hidden) and all(m.bias is not None for m in linears))
        norm_ok = norm is None or (norm.elementwise_affine and norm.bias is not None and len(norm.normalized_shape) == 1)
        params = [p for m in [*linears, *([norm] if norm is not None else [])] for p in m.parameters()]
        if not (shape_ok and norm_ok and all(p.dtype == torch.float32 and p.device.type == "cpu" for p in params)):
            return None
        return cls(linears, ACTIVATIONS[hidden[0]] if hidden else 0, norm, masked)

    def __call__(self, features: np.ndarray, probs: np.ndarray, position: int, cost: float, mask: np.ndarray) -> int:
        """``features`` ``(F,)``, ``probs`` ``(C,)`` (unsorted, as observed), ``position`` the decision
        point, ``cost`` the observation's spend, ``mask`` ``(A,)`` bool. The kernel does not check
        bounds, so the shapes are checked here (``ValueError``)."""
        head = len(features) + len(probs) + 1
        if not (0 <= position < self.input_dim - head and len(mask) == len(self.biases[-1])):
            raise ValueError(f"an input of {len(features)} features, {len(probs)} probabilities, position {position} and "
                             f"{len(mask)} mask entries does not fit a policy reading {self.input_dim} inputs and scoring "
                             f"{len(self.biases[-1])} actions")
        return _decide(features, probs, position, cost, mask, self.masked, self.norm_weight, self.norm_bias, self.eps,
                       self.weights, self.biases, self.activation)


def _view(parameter: torch.Tensor) -> np.ndarray:
    return parameter.detach().numpy()
