"""Issue 20: where a routed batch-1 forward's time goes beyond the fixed route's.

    ROUTING_ENV_DATA=.data python benchmarks/routed_overhead.py [--threads N] [--repeats R]   # one JSON object

The shipped dynamic ResNet-20's inference copy, every block at width 0.5, exit at the end, walked
nine ways whose medians are measured in interleaved rounds (routing_env.bench.interleaved_medians),
each adding one part of what :class:`~routing_env.routed.RoutedModel` does at batch 1:

- ``fixed_route``: ``RoutedModel.route_module`` (the reference: no decision at all);
- ``blocks``: the same stem, blocks and last head called in a plain loop;
- ``+pool``: and the observation's pooled features after every block (``pooled_features``);
- ``+heads``: and the heads at every head position with their softmax (the observation's ``probs``);
- ``compiled_observe``: ``blocks`` and the same observation as ``+heads`` in one compiled call a point
  (:func:`~routing_env.kernels.observe_one`, what ``RoutedModel`` runs at batch 1);
- ``+decide``: and per decision point the mask row and the compiled decision of a
  ``PolicyNet`` (hidden 64; :class:`~routing_env.agents.fused.MLPDecision`), result discarded;
- ``routed_fused``: ``RoutedModel`` with that policy (the same decisions, see
  :class:`~routing_env.bench.HalfWidthPolicy`), batch-1 walk, compiled decision;
- ``routed_eager``: the same with ``fused=False`` (the torch observation and decision);
- ``routed_fused_head``: the compiled decisions, taken only at the start and after each exit head
  (``decide_at="head"``: 4 instead of 10; the route is the same).

Differences between consecutive rows are each part's cost; ``*_over_fixed`` divide by the fixed route.
Before session 36 ``+decide`` also decided at the last point and ``+heads`` read the last head twice,
one call each more than ``RoutedModel`` makes (the JSON results written before then include them).
"""

from __future__ import annotations

import argparse
import json

import torch

parser = argparse.ArgumentParser()
parser.add_argument("--threads", type=int, default=1)
parser.add_argument("--repeats", type=int, default=1000)
args = parser.parse_args()
torch.set_num_threads(args.threads)

import torch.nn.functional as F  # noqa: E402

from routing_env.backbones.dynamic import pooled_features  # noqa: E402
from routing_env.bench import HalfWidthPolicy, interleaved_medians, latency_policy_net  # noqa: E402
from routing_env.pretrained import load  # noqa: E402
from routing_env.provenance import provenance  # noqa: E402
from routing_env.routed import RoutedModel  # noqa: E402

backbone = load("cifar10-resnet20-dynamic")
n = backbone.spec.num_stages
_, mlp = latency_policy_net(RoutedModel(backbone, HalfWidthPolicy(n)))
routed, eager = RoutedModel(backbone, HalfWidthPolicy(n, mlp)), RoutedModel(backbone, HalfWidthPolicy(n, mlp), fused=False)
at_heads = RoutedModel(backbone, HalfWidthPolicy(n, mlp), decide_at="head")
model, fixed, decision = routed.model, routed.route_module([1] * n), mlp.fused_decision()
heads = [k for k in range(n + 1) if routed.has_head[k]]
x = torch.randint(0, 256, (1, 3, 32, 32), dtype=torch.uint8).contiguous(memory_format=torch.channels_last)


def walk(pool: bool, heads_too: bool, decide: bool = False, compiled: bool = False) -> torch.Tensor:
    h = model.stem(x)
    observation = routed._observation_one(h) if compiled else None
    if compiled:
        observation.update(0, h)
    pooled = pooled_features(h, routed.feature_dim) if pool else None
    for k in range(n + 1):
        if decide and k < n:  # the last point's EXIT is forced: RoutedModel asks no decision there
            decision(observation.features_np, observation.probs_np, k, 0.5, routed._mask_np(k, bool(k), 1.0))
        if k == n:
            break
        h = model.blocks[k](h, 1)
        if compiled:
            observation.update(k + 1, h)
        if pool:
            pooled = pooled_features(h, routed.feature_dim)
        if heads_too and k + 1 in heads and k + 1 < n:  # the last head is the walk's own (returned below)
            F.softmax(model.head_pooled(k + 1, pooled), dim=1)
    return model.head(n, h)


runs = {"fixed_route": lambda: fixed(x), "blocks": lambda: walk(False, False), "+pool": lambda: walk(True, False),
        "+heads": lambda: walk(True, True), "compiled_observe": lambda: walk(False, False, compiled=True),
        "+decide": lambda: walk(False, False, decide=True, compiled=True),
        "routed_fused": lambda: routed(x), "routed_eager": lambda: eager(x), "routed_fused_head": lambda: at_heads(x)}
with torch.inference_mode():
    seconds = interleaved_medians(runs, args.repeats)
out = {"threads": torch.get_num_threads(), "provenance": provenance(), "decisions": n + 1, "head_positions": heads}
out.update({f"{name}_ms": value * 1e3 for name, value in seconds.items()})
out.update({f"{name}_over_fixed": value / seconds["fixed_route"] for name, value in seconds.items() if name != "fixed_route"})
print(json.dumps(out, indent=1))
