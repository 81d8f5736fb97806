"""Routed inference for deployment: a trained policy and a dynamic ResNet in one ``nn.Module``.

No Gymnasium: the batch walks the blocks in lock-step, the policy decides for every input
still running, and inputs that take the same action run as one call (grouped by route; a batch that
agrees, and every batch of one, runs the block directly). The observation the policy reads is the
environment's (docs/design.md §2) and the valid moves come from the same :class:`~routing_env.core.ActionTables`
(``max_macs`` included), so a policy trained in ``routing_env/DynamicResNet-v0`` acts the same here
(a test checks predictions, exits, MACs and decisions against the environment).

The per-input control flow depends on the data, so the routed forward runs eagerly; what exports is
the policy itself and any fixed route (:meth:`RoutedModel.route_module`, ``torch.export``-able).
"""

from __future__ import annotations

import copy
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import kernels
from .backbones.base import CostTable
from .backbones.dynamic import DynamicResNetBackbone, pooled_features
from .backbones.resnet import SKIP_CHOICE, DynamicResNet, inference_copy
from .core import EXIT, ActionTables, decision_points, fallback_order, fits, skip_offered
from .costs import count_macs
from .latency import cost_table


class RoutedModel(nn.Module):
    """Run ``policy`` and ``backbone`` together: ``forward(x) -> (logits, macs, exit_position, decisions)``.

    Args:
        backbone: the dynamic ResNet (its network is used frozen, in ``eval()`` mode).
        policy: an ``nn.Module`` mapping a batched observation dict of tensors (``features``,
            ``probs``, ``position``, ``cost``, ``action_mask``) to action scores ``(B, A)`` (e.g.
            ``Agent.policy_module()``); the move is their argmax, and an invalid argmax takes the
            environment's fallback (:func:`~routing_env.core.fallback_order`), as it would stepping
            the environment (a policy that masks its own scores never needs it).
        allow_skip: offer SKIP where a block can be skipped, as the environment's option (``None``: the
            backbone's default, which on a dynamic ResNet is yes).
        widths: the widths RUN offers, as the environment's option (``None``: all).
        max_macs: hard budget as a fraction of the full network's MACs, as the environment's option:
            moves after which no prediction would fit are masked.
        optimize: run an inference copy of the network (:func:`~routing_env.backbones.resnet.inference_copy`:
            BatchNorm folded into the convolutions, channels-last; what the frozen environment runs),
            else the network as trained (channels-first, BatchNorm apart). Either way the outputs equal
            the environment's up to float rounding (which also differs between batch sizes).
        cost: the cost model the policy was trained with (the environment's ``cost=``, or the
            :class:`~routing_env.backbones.base.CostTable` it resolved to, which :meth:`from_env`
            passes): the observation's ``cost`` is that priced spend, as in training.
        decide_at: where the policy decides, as the environment's option (``block`` or ``head``:
            :func:`~routing_env.core.decision_points`); between decision points the move decided last
            repeats, resolved by the fallback where it is invalid, and the observation is not built.
        fused: at batch 1 on the CPU, decide through the policy's compiled decision where its
            module offers one (``policy.fused_decision()``, e.g. :class:`~routing_env.agents.fused.MLPDecision`:
            one call instead of ~15 eager ops a decision, issue 20), and in float32 compute the
            observation (pooled features, exit head, softmax) in one compiled call a point
            (:func:`~routing_env.kernels.observe_one`); ``False`` keeps the torch path (the batched
            walk always takes it).

    ``macs`` counts the backbone (stem, blocks as run, heads evaluated); the policy's own cost is
    ``policy_macs_per_decision`` times ``decisions``.
    """

    def __init__(self, backbone: DynamicResNetBackbone, policy: nn.Module, allow_skip: bool | None = None,
                 max_macs: float | None = None, optimize: bool = True, cost: str | dict | CostTable = "macs",
                 widths: Sequence[float] | None = None, decide_at: str = "block", fused: bool = True) -> None:
        super().__init__()
        spec, costs = backbone.spec, backbone.costs
        if not spec.head_after_skip:
            raise TypeError(f"RoutedModel runs dynamic ResNets (heads evaluated after SKIP too); {backbone.name!r} is not one")
        allow_skip = skip_offered(allow_skip, spec.skip_by_default)  # the environment's rule
        self.channels_last = optimize
        self.input_shape = tuple(backbone.input_shape)
        # copies: moving or casting the routed model must not move the environment's network or the agent's policy
        self.model = inference_copy(backbone.model) if optimize else copy.deepcopy(backbone.model).eval()
        self.policy = copy.deepcopy(policy).eval()
        self.num_stages, self.num_actions = spec.num_stages, spec.num_actions
        self.feature_dim, self.num_classes = spec.feature_dim, spec.num_classes
        tables = ActionTables.build(spec, costs, allow_skip, widths)
        self.budget = tables.budget(costs, max_macs)
        self.prefix, self.reference = float(costs.prefix), float(costs.reference)
        # the observation's `cost` is the priced spend under a cost model (as in the environment); the
        # budget and the returned MACs stay in MACs
        price = cost if isinstance(cost, CostTable) else cost_table(cost, backbone, backbone.name)
        priced = ActionTables.build(spec, price, allow_skip, widths) if price is not None else tables
        self.price_prefix = float((price or costs).prefix + ((price or costs).head[0] if tables.has_head[0] else 0.0))
        self.price_reference = float((price or costs).reference)
        # Every move out of point k evaluates the head at k + 1 if there is one (a dynamic ResNet
        # evaluates heads after SKIP too), so the batch, walking in lock-step, has a prediction or not
        # as a whole: per point, one mask row (before the budget), one position one-hot, one choice per action.
        # The tables are buffers, so that .to(device) moves them with the weights; the MACs tables stay
        # float64 under .to(dtype) (counts, not activations: see _apply).
        self._macs_tables = {"act_cost": tables.act_cost, "need": tables.need, "price_cost": priced.act_cost}
        self.has_head = [bool(v) for v in tables.has_head]
        points = decision_points(tables.has_head, decide_at)
        self.decides = [bool(v) for v in points]
        """Per point, whether the policy decides there (else the last decision's move repeats)."""
        self.decisions_by = [int(v) for v in np.cumsum(points)]
        """Per point k, the decisions made by an input that exits there (``decisions`` of the output)."""
        self.observed = [self.decides[k] or self.has_head[k] for k in range(len(points))]
        """Per point, whether anything reads its pooled features (a decision or a head)."""
        self.costs_head0 = float(costs.head[0])
        self.register_buffer("valid_now", torch.tensor(tables.valid_now), persistent=False)
        self.register_buffer("fallback_ranks", torch.tensor(tables.fallback_ranks), persistent=False)
        self.fallback_lists = [fallback_order(a, len(spec.widths)) for a in range(spec.num_actions)]
        """Per action, its replacements in the order the fallback tries them (:func:`~routing_env.core.fallback_order`)."""
        self.register_buffer("act_cost", torch.tensor(tables.act_cost), persistent=False)
        self.register_buffer("need", torch.tensor(tables.need), persistent=False)
        self.register_buffer("price_cost", torch.tensor(priced.act_cost), persistent=False)
        self.register_buffer("onehot", torch.eye(spec.num_stages + 1), persistent=False)
        self.choice_list = [SKIP_CHOICE, SKIP_CHOICE] + list(range(len(spec.widths)))
        """Per action code, the block choice it makes (EXIT never reaches a block)."""
        self.register_buffer("choice_of", torch.tensor(self.choice_list), persistent=False)
        # the example is in the policy's own dtype and on its device, so that a float64 policy (for a
        # model cast with .double() afterwards) is measured, not refused
        first = next(self.policy.parameters(), None)
        dtype, device = (first.dtype, first.device) if first is not None else (torch.float32, torch.device("cpu"))
        example = self._observation(torch.zeros(1, spec.feature_dim, dtype=dtype, device=device),
                                    torch.zeros(1, spec.num_classes, dtype=dtype, device=device), 0,
                                    torch.zeros(1, dtype=torch.float64, device=device), self.valid_now[0, 1][None].to(device))
        try:
            macs = count_macs(self.policy, example)
        except (KeyError, RuntimeError) as e:  # a missing key, or an input of another length (obs_mode="heads")
            raise ValueError(f"the policy does not run on RoutedModel's observation ({sorted(example)}, obs_mode='vector', "
                             f"{dtype} on {device}; e.g. a policy trained with obs_mode='heads' reads more): {type(e).__name__}: {e}") from e
        self.policy_macs_per_decision = float(macs)
        """MACs of one policy decision (report them beside the backbone's: ``decisions`` per input)."""
        self.valid_now_np = tables.valid_now
        self.fused = fused
        self._decision: Any = None
        self._decision_of: tuple[Any, ...] | None = None  # `fused` and the parameters' storage it was built on
        self._heads: list[tuple[np.ndarray, np.ndarray]] | None = None
        self._heads_of: tuple[int, ...] | None = None
        self.decision  # built now, so that a policy reading another input length is refused here

    @classmethod
    def from_env(cls, env: Any, policy: nn.Module, **overrides: Any) -> RoutedModel:
        """The routed model of a policy trained on ``env`` (a dynamic ResNet environment, wrapped or
        not, ``obs_mode="vector"``): its backbone, and the options that decide which moves are valid and what the
        observation's ``cost`` says (``allow_skip``, ``widths``, ``max_macs``, ``cost``, ``decide_at``), so that the
        policy meets the environment it learned in; ``overrides`` replace any of them (e.g. a
        ``max_macs`` of its own)."""
        base = env.unwrapped
        if not hasattr(base, "config") or not hasattr(base, "core"):
            raise TypeError(f"RoutedModel.from_env takes a routing environment (RoutingEnv or RoutingVectorEnv, wrapped or not), "
                            f"got {type(base).__name__}; of Gymnasium's SyncVectorEnv pass one of its envs (env.envs[0])")
        config, backbone = base.config, base.core.backbone
        if config.obs_mode != "vector":
            raise ValueError(f"RoutedModel serves policies trained with obs_mode='vector'; this environment has obs_mode={config.obs_mode!r}")
        options = {"allow_skip": config.skip_offered(backbone.spec), "widths": config.widths, "max_macs": config.max_macs,
                   "cost": base.core.price or "macs", "decide_at": config.decide_at}  # the table the environment resolved
        return cls(backbone, policy, **{**options, **overrides})

    def train(self, mode: bool = True) -> RoutedModel:
        """Set ``self.training`` as ``nn.Module`` does, but keep the network and the policy in ``eval()``
        mode: they are frozen, and in training mode BatchNorm would normalise by each batch's statistics
        (an input's route would depend on its batch-mates, and batch 1 would stop matching a batch) and
        overwrite its running statistics at every forward, even under ``inference_mode``."""
        super().train(mode)
        self.model.eval()
        self.policy.eval()
        return self

    def _apply(self, fn, recurse=True):  # type: ignore[no-untyped-def]
        super()._apply(fn, recurse)
        for name, table in self._macs_tables.items():
            self._buffers[name] = torch.tensor(table, device=self._buffers[name].device)
        return self

    @property
    def decision(self) -> Any:
        """The policy's decision for one input when ``fused`` and the policy offers one: a callable
        ``(features (F,), probs (C,), position, cost, mask (A,) bool) -> action`` on numpy, or ``None``
        (the torch path). It reads views of the policy's parameters, so it is built again whenever
        they are no longer the storage it was built on (a move, a cast, ``load_state_dict(assign=True)``,
        a copy, a replaced layer: :func:`parameter_storage`); where it states the length of the input
        it reads (``input_dim``), that must be this model's ``F + C + P + 1``."""
        storage = (self.fused, *parameter_storage(self.policy))  # and built again when `fused` is set otherwise
        if storage != self._decision_of:
            offer = getattr(self.policy, "fused_decision", None)
            decision = offer() if self.fused and offer is not None else None
            width = self.feature_dim + self.num_classes + self.num_stages + 2
            if getattr(decision, "input_dim", width) != width:
                raise ValueError(f"the policy reads inputs of length {decision.input_dim}; this model's observation gives {width}")
            self._decision, self._decision_of = decision, storage
        return self._decision

    def _observation(self, features: torch.Tensor, probs: torch.Tensor, position: int, macs: torch.Tensor,
                     mask: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"features": features, "probs": probs, "position": self.onehot[position].to(features).expand(len(features), -1),
                "cost": (macs / self.price_reference).to(features.dtype)[:, None], "action_mask": mask.to(torch.int8)}

    def choose(self, scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Each row's move: the argmax of ``scores``, or where that is not in ``mask``, the first valid
        move of its fallback order (the rule of ``ActionTables.fallback_ranks``, in torch)."""
        return self._resolve(scores.argmax(dim=1), mask)

    def _resolve(self, raw: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Each row's move ``raw`` where ``mask`` allows it, else the first valid move of its fallback order."""
        ok = mask.gather(1, raw[:, None])[:, 0]
        if bool(ok.all()):
            return raw
        ranks = self.fallback_ranks[raw].masked_fill(~mask, torch.iinfo(torch.int64).max)
        return torch.where(ok, raw, ranks.argmin(dim=1))

    def _mask(self, k: int, has_probs: bool, macs: torch.Tensor) -> torch.Tensor:
        """The batch's valid moves at point k: :class:`~routing_env.core.ActionTables`' rows, and its
        budget rule (:func:`~routing_env.core.fits`) where there is a budget."""
        mask = self.valid_now[k, int(has_probs)].expand(len(macs), -1)
        if self.budget != float("inf"):
            mask = mask & fits(macs, self.act_cost[k] if has_probs else self.need[k], self.budget)
        return mask

    @torch.inference_mode()
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        if x.dim() != len(self.input_shape) + 1 or tuple(x.shape[1:]) != self.input_shape:  # else torch fails deep in a block
            raise ValueError(f"RoutedModel takes a batch of inputs of shape (B, {', '.join(map(str, self.input_shape))}), got {tuple(x.shape)}")
        if len(x) == 1:
            return self._forward_one(x)
        b, device = len(x), x.device
        if b == 0:  # nothing to route: the outputs' shapes and dtypes, empty
            return (torch.zeros(0, self.num_classes, dtype=self.model.conv1.weight.dtype, device=device), torch.zeros(0, dtype=torch.float64, device=device),
                    torch.zeros(0, dtype=torch.long, device=device), torch.zeros(0, dtype=torch.long, device=device))
        rows = torch.arange(b, device=device)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        h = self.model.stem(x)
        pooled = pooled_features(h, self.feature_dim)
        out_logits = torch.zeros(b, self.num_classes, dtype=pooled.dtype, device=device)
        out_macs = torch.zeros(b, dtype=torch.float64, device=device)
        out_exit = torch.full((b,), -1, dtype=torch.long, device=device)
        out_decisions = torch.zeros(b, dtype=torch.long, device=device)
        macs = torch.full((b,), self.prefix, dtype=torch.float64, device=device)
        has_probs, exit_at = self.has_head[0], 0
        logits = self.model.head_pooled(0, pooled) if has_probs else torch.zeros_like(out_logits)
        macs += self.costs_head0 if has_probs else 0.0
        priced = torch.full((b,), self.price_prefix, dtype=torch.float64, device=device)
        probs = F.softmax(logits, dim=1) if has_probs else torch.zeros_like(logits)
        segment = torch.zeros(b, dtype=torch.long, device=device)  # the move decided last, repeated until the next decision
        for k in range(self.num_stages + 1):
            mask = self._mask(k, has_probs, macs)
            if self.decides[k]:
                action = segment = self.choose(self.policy(self._observation(pooled, probs, k, priced, mask)), mask)
            else:
                action = self._resolve(segment, mask)
            done = action == EXIT
            if bool(done.any()):
                ended = rows[done]
                out_logits[ended], out_macs[ended], out_exit[ended] = logits[done], macs[done], exit_at
                out_decisions[ended] = self.decisions_by[k]
                keep = ~done
                if not bool(keep.any()):
                    break
                rows, h, pooled, action, segment, macs, priced, logits, probs = (
                    t[keep] for t in (rows, h, pooled, action, segment, macs, priced, logits, probs))
            h = self.model.block_routes(k, h, self.choice_of[action])
            if self.observed[k + 1]:
                pooled = pooled_features(h, self.feature_dim)
            macs = macs + self.act_cost[k][action]
            priced = priced + self.price_cost[k][action]
            if self.has_head[k + 1]:
                logits = self.model.head_pooled(k + 1, pooled)
                probs = F.softmax(logits, dim=1)
                has_probs, exit_at = True, k + 1
        return out_logits, out_macs, out_exit, out_decisions

    def _forward_one(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """:meth:`forward` at batch 1, where the walk's bookkeeping, not the blocks, costs the time (issue
        20): the spend is Python floats (the same float64 sums), the mask rows and position one-hots
        are the precomputed tables' views, the action is read once, a forced move (one valid) asks no
        policy (its ``decisions`` still count it, as the environment's steps do), the block runs
        directly, and with ``fused`` the observation is one compiled call per point
        (:class:`_CompiledObservation`). The same decisions and outputs as the batched walk (up to
        float rounding; with compiled calls, up to rounding between near-tied scores: a test checks
        both walks against each other)."""
        model = self.model  # a submodule: each attribute read of it costs a module lookup
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        h = model.stem(x)
        observation = self._observation_one(h)
        observation.update(0, h)
        device = h.device
        has_probs, exit_at = self.has_head[0], 0
        macs, priced = self.prefix + (self.costs_head0 if has_probs else 0.0), self.price_prefix
        act_cost, price_cost = self._macs_tables["act_cost"], self._macs_tables["price_cost"]
        decision = self.decision if device.type == "cpu" else None
        segment = EXIT  # the move decided last (point 0 is always a decision point)
        for k in range(self.num_stages + 1):
            valid = self._mask_np(k, has_probs, macs)
            if not self.decides[k]:
                action = segment
            elif np.count_nonzero(valid) == 1:  # a forced move (the last point's EXIT): whatever the policy says, this
                action = int(valid.argmax())
            elif decision is not None:
                action = decision(observation.features_np, observation.probs_np, k, priced / self.price_reference, valid)
            else:
                features = observation.features
                action = int(self.policy({
                    "features": features, "probs": observation.probs, "position": self.onehot[k : k + 1].to(features.dtype),
                    "cost": torch.full((1, 1), priced / self.price_reference, dtype=features.dtype, device=device),
                    "action_mask": torch.tensor(valid[None], dtype=torch.int8, device=device)}).argmax(dim=1))
            if not valid[action]:
                action = next(a for a in self.fallback_lists[action] if valid[a])
            if self.decides[k]:
                segment = action  # the resolved move repeats, as the environment repeats it
            if action == EXIT:
                return (observation.logits, torch.tensor([macs], dtype=torch.float64, device=device),
                        torch.tensor([exit_at], device=device), torch.tensor([self.decisions_by[k]], device=device))
            h = model.block_routes(k, h, self.choice_list[action])
            if self.observed[k + 1]:
                observation.update(k + 1, h)
            macs, priced = macs + float(act_cost[k, action]), priced + float(price_cost[k, action])
            if self.has_head[k + 1]:
                has_probs, exit_at = True, k + 1
        raise AssertionError("the last decision point offers only EXIT")  # ActionTables guarantees it

    def _observation_one(self, h: torch.Tensor) -> _TorchObservation | _CompiledObservation:
        """The batch-1 walk's observation of the map ``h``: compiled where ``fused`` and the network
        runs in float32 on the CPU, else in torch."""
        if self.fused and h.device.type == "cpu" and h.dtype == torch.float32:
            heads = self._compiled_heads
            if heads is not None:
                return _CompiledObservation(heads, self.feature_dim, self.num_classes)
        return _TorchObservation(self.model, self.has_head, self.feature_dim, h.new_zeros(1, self.num_classes))

    @property
    def _compiled_heads(self) -> list[tuple[np.ndarray, np.ndarray]] | None:
        """Per point, its exit head's ``(weight, bias)`` as numpy views of the parameters (empty arrays
        where there is none), for :func:`~routing_env.kernels.observe_one`; ``None`` unless they are
        float32 on the CPU. Built again when the heads' parameters or modules change (:func:`parameter_storage`,
        as :attr:`decision`)."""
        storage = parameter_storage(self.model.heads)
        if storage != self._heads_of:
            fcs = {p: self.model.heads[str(p)].fc for p in range(self.num_stages + 1) if self.has_head[p]}
            usable = all(t.dtype == torch.float32 and t.device.type == "cpu" for fc in fcs.values() for t in (fc.weight, fc.bias))
            none = (np.zeros((0, 0), np.float32), np.zeros(0, np.float32))
            self._heads = [(fcs[p].weight.detach().numpy(), fcs[p].bias.detach().numpy()) if p in fcs else none
                           for p in range(self.num_stages + 1)] if usable else None
            self._heads_of = storage
        return self._heads

    def _mask_np(self, k: int, has_probs: bool, macs: float) -> np.ndarray:
        """:meth:`_mask` for one input whose spend is the float ``macs``, as a numpy row (the batch-1 walk's)."""
        row = self.valid_now_np[k, int(has_probs)]
        if self.budget == float("inf"):
            return row
        committed = self._macs_tables["act_cost" if has_probs else "need"][k]
        return row & fits(np.array([macs]), committed, self.budget)[0]

    def route_module(self, choices: Sequence[int], exit_position: int | None = None) -> RouteModule:
        """One fixed route (per block a width index or ``SKIP_CHOICE``; exit at ``exit_position``,
        default the last) as a plain module with no data-dependent control flow, for ``torch.export``."""
        return RouteModule(self.model, choices, self.num_stages if exit_position is None else exit_position, self.channels_last)


def parameter_storage(module: nn.Module) -> tuple[int, ...]:
    """Where ``module``'s parameters live now, and which submodules hold them: per submodule (depth
    first) its ``id`` and the ``data_ptr`` of each of its parameters.

    A compiled call that reads numpy views of parameters must be rebuilt when they move to new
    storage (a move, a cast, ``load_state_dict(assign=True)``, a copy of the owner) or when a
    submodule is replaced (the views keep the old storage alive, so new parameters cannot reuse its
    addresses). ``module.parameters()`` finds the same out through generators at every batch-1 forward
    (20–35 µs for a policy MLP, more than a compiled decision; issue 20); this walks the tree's dicts
    directly (9–10 µs; both timed with ``timeit`` beside a training run)."""
    key: list[int] = []
    stack = [module]
    while stack:
        m = stack.pop()
        key.append(id(m))
        for p in m._parameters.values():
            if p is not None:
                key.append(p.data_ptr())
        for child in m._modules.values():
            if child is not None:
                stack.append(child)
    return tuple(key)


class _TorchObservation:
    """The batch-1 walk's running observation in torch (any device and dtype): the latest map's pooled
    features and the latest exit head's logits and softmax, ``(1, ·)`` tensors."""

    def __init__(self, model: DynamicResNet, has_head: list[bool], feature_dim: int, zeros: torch.Tensor) -> None:
        self.model, self.has_head, self.feature_dim = model, has_head, feature_dim
        self.features, self.logits, self.probs = zeros.new_zeros(1, feature_dim), zeros, zeros

    def update(self, position: int, h: torch.Tensor) -> None:
        """Observe the map ``h`` at ``position`` (and its head, where it has one)."""
        self.features = pooled_features(h, self.feature_dim)
        if self.has_head[position]:
            self.logits = self.model.head_pooled(position, self.features)
            self.probs = F.softmax(self.logits, dim=1)

    @property
    def features_np(self) -> np.ndarray:
        return self.features.numpy()[0]

    @property
    def probs_np(self) -> np.ndarray:
        return self.probs.numpy()[0]


class _CompiledObservation:
    """The same observation as :class:`_TorchObservation`, one compiled call a point
    (:func:`~routing_env.kernels.observe_one`) into numpy buffers, float32 on the CPU (issue 20: in
    torch, pooling, head and softmax are ~25 µs at every head of a batch-1 walk). The tensors are views
    of the buffers, which a walk owns: the logits it returns are not written again."""

    def __init__(self, heads: list[tuple[np.ndarray, np.ndarray]], feature_dim: int, num_classes: int) -> None:
        self.heads = heads
        self.features_np = np.zeros(feature_dim, np.float32)
        self.logits_np, self.probs_np = np.zeros(num_classes, np.float32), np.zeros(num_classes, np.float32)

    def update(self, position: int, h: torch.Tensor) -> None:
        """Observe the map ``h`` at ``position`` (and its head, where it has one)."""
        weight, bias = self.heads[position]
        kernels.observe_one(h.numpy()[0].transpose(1, 2, 0), self.features_np, weight, bias, self.logits_np, self.probs_np)

    @property
    def features(self) -> torch.Tensor:
        return torch.from_numpy(self.features_np)[None]

    @property
    def logits(self) -> torch.Tensor:
        return torch.from_numpy(self.logits_np)[None]

    @property
    def probs(self) -> torch.Tensor:
        return torch.from_numpy(self.probs_np)[None]


class RouteModule(nn.Module):
    """A :class:`DynamicResNet` along one fixed route: ``forward(x) -> logits`` (exportable)."""

    def __init__(self, model: DynamicResNet, choices: Sequence[int], exit_position: int, channels_last: bool = False) -> None:
        super().__init__()
        if len(choices) != model.num_blocks or any(c != SKIP_CHOICE and not 0 <= c < len(model.widths) for c in choices):
            raise ValueError(f"choices must give {model.num_blocks} width indices in 0..{len(model.widths) - 1} or SKIP_CHOICE, got {list(choices)}")
        unskippable = [k for k, c in enumerate(choices) if c == SKIP_CHOICE and not model.blocks[k].skippable]
        if unskippable:
            raise ValueError(f"blocks {unskippable} change the map's shape and cannot be skipped (choices {list(choices)})")
        if exit_position not in model.exit_positions:
            raise ValueError(f"exit_position {exit_position} carries no head; expected one of {model.exit_positions}")
        self.model = model
        self.choices = [int(c) for c in choices[:exit_position]]
        self.exit_position = exit_position
        self.channels_last = channels_last

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        h = self.model.stem(x)
        for k, c in enumerate(self.choices):
            h = self.model.blocks[k].skip(h) if c == SKIP_CHOICE else self.model.blocks[k](h, c)
        return self.model.head(self.exit_position, h)
