"""RoutedModel: the policy and the dynamic ResNet in one module, equal to the environment."""

from __future__ import annotations

import copy
import functools

import gymnasium as gym
import numpy as np
import pytest
import torch

from routing_env import RoutingVectorEnv
from routing_env.agents import make_agent
from routing_env.backbones.resnet import SKIP_CHOICE, inference_copy, random_route
from routing_env.core import SKIP
from routing_env.evaluation import Records, route_split
from routing_env.routed import RoutedModel


@functools.lru_cache(maxsize=None)
def trained() -> tuple[RoutingVectorEnv, object]:
    env = RoutingVectorEnv(num_envs=64, backbone="tiny-dynamic-resnet", split="test", lam=0.3)
    agent = make_agent("reinforce", env, seed=0)
    agent.learn(3000)
    return env, agent


def assert_equal_to_env(outputs: tuple[torch.Tensor, ...], records: Records, labels: np.ndarray) -> None:
    logits, macs, exits, decisions = outputs
    np.testing.assert_array_equal((logits.argmax(1).numpy() == labels), records.correct)
    np.testing.assert_array_equal(exits.numpy(), records.exit_position)
    np.testing.assert_allclose(macs.numpy(), records.macs)
    np.testing.assert_array_equal(decisions.numpy(), records.decisions)


@pytest.mark.parametrize("optimize", [False, True])
def test_routed_model_equals_the_environment_on_the_same_policy(optimize: bool) -> None:
    env, agent = trained()
    records = route_split(agent, env)
    routed = RoutedModel(env.core.backbone, agent.policy_module(), optimize=optimize)
    assert_equal_to_env(routed(env.core.executor.inputs), records, env.core.labels)
    assert len(np.unique(records.exit_position)) > 1 or len(np.unique(records.macs)) > 1  # the routes differ
    assert routed.policy_macs_per_decision == agent.policy_macs()


def test_an_empty_batch_gives_empty_outputs_of_the_same_kinds() -> None:
    env, agent = trained()
    routed = RoutedModel(env.core.backbone, agent.policy_module())
    full = routed(env.core.executor.inputs[:2])
    empty = routed(env.core.executor.inputs[:0])
    for one, none in zip(full, empty):
        assert none.shape == (0, *one.shape[1:]) and none.dtype == one.dtype


def test_routed_model_applies_the_hard_budget_like_the_environment() -> None:
    env, agent = trained()
    free = RoutedModel(env.core.backbone, agent.policy_module(), optimize=False)(env.core.executor.inputs)[1]
    reference = env.core.reference_macs
    cap = float(np.quantile(free.numpy(), 0.5) / reference)  # binding for about half the inputs
    capped = RoutingVectorEnv(num_envs=64, backbone="tiny-dynamic-resnet", split="test", lam=0.3, max_macs=cap)
    records = route_split(agent, capped)
    routed = RoutedModel(env.core.backbone, agent.policy_module(), max_macs=cap, optimize=False)
    outputs = routed(env.core.executor.inputs)
    assert_equal_to_env(outputs, records, env.core.labels)
    assert (outputs[1].numpy() <= cap * reference * (1 + 1e-9)).all()
    assert (outputs[1] < free).any()
    with pytest.raises(ValueError, match="max_macs"):
        RoutedModel(env.core.backbone, agent.policy_module(), max_macs=1e-6)


def test_from_env_deploys_a_policy_with_the_environments_move_set() -> None:
    """A policy trained where only EXIT and RUN(1.0) are offered (``widths=[1.0], allow_skip=False``)
    routes through ``RoutedModel.from_env`` as it stepped the environment: full width, no skip."""
    env = RoutingVectorEnv(num_envs=64, backbone="tiny-dynamic-resnet", split="test", lam=0.3, widths=[1.0], allow_skip=False)
    agent = make_agent("reinforce", env, seed=0)
    agent.learn(2000)
    records = route_split(agent, env)
    routed = RoutedModel.from_env(env, agent.policy_module(), optimize=False)
    assert_equal_to_env(routed(env.core.executor.inputs), records, env.core.labels)
    assert len(np.unique(records.exit_position)) > 1  # the policy exits at more than one head
    costs = env.core.backbone.costs  # each input's MACs: the full-width path through the blocks it ran, every head passed
    ran = records.decisions - 1  # one RUN per block, then EXIT (with the latest head, which may lie behind)
    full_width = [costs.prefix + costs.stage[:k, -1].sum() + costs.head[: k + 1].sum() for k in ran]
    np.testing.assert_allclose(records.macs, full_width)
    sync = gym.make_vec("routing_env/DynamicResNet-v0", num_envs=2, vectorization_mode="sync", backbone="tiny-dynamic-resnet")
    with pytest.raises(TypeError, match=r"takes a routing environment .* got SyncVectorEnv; .* pass one of its envs"):
        RoutedModel.from_env(sync, agent.policy_module())
    assert RoutedModel.from_env(sync.envs[0], agent.policy_module()).num_actions == routed.num_actions


def test_a_policy_trained_on_the_heads_observation_is_refused_saying_so() -> None:
    """RoutedModel builds the ``vector`` observation; a policy trained with ``obs_mode="heads"`` is
    refused saying so, not with a shape error from inside its forward."""
    env = RoutingVectorEnv(num_envs=4, backbone="tiny-dynamic-resnet", split="test", obs_mode="heads")
    agent = make_agent("reinforce", env, seed=0)
    with pytest.raises(ValueError, match="obs_mode='heads'"):
        RoutedModel.from_env(env, agent.policy_module())
    with pytest.raises(ValueError, match="does not run on RoutedModel's observation"):
        RoutedModel(env.core.backbone, agent.policy_module())


def test_train_mode_leaves_the_frozen_network_and_policy_in_eval_mode() -> None:
    """``routed.train()`` (a parent module's ``.train()`` reaches it too) must not switch BatchNorm to
    batch statistics: routes would depend on batch-mates and every forward would overwrite the running
    statistics, which ``.eval()`` could not undo."""
    env, agent = trained()
    routed = RoutedModel(env.core.backbone, agent.policy_module(), optimize=False)
    x = env.core.executor.inputs[:16]
    want = routed(x)
    stats = {k: v.clone() for k, v in routed.model.state_dict().items() if "running" in k}
    assert routed.train() is routed and routed.training
    assert not any(m.training for m in routed.model.modules()) and not any(m.training for m in routed.policy.modules())
    got = routed(x)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w)
    assert all(torch.equal(v, routed.model.state_dict()[k]) for k, v in stats.items())


def test_allow_skip_means_what_it_means_in_the_environment() -> None:
    """``None`` is the backbone's default (SKIP offered on a dynamic ResNet), as in ``EnvConfig``, so the
    environment's own ``allow_skip=None`` deploys the move set it trained with; a string is refused."""
    env, agent = trained()
    offers_skip = lambda routed: bool(routed.valid_now[..., SKIP].any())  # noqa: E731
    assert env.config.allow_skip is None and offers_skip(RoutedModel(env.core.backbone, agent.policy_module()))
    assert offers_skip(RoutedModel(env.core.backbone, agent.policy_module(), allow_skip=env.config.allow_skip))
    assert not offers_skip(RoutedModel(env.core.backbone, agent.policy_module(), allow_skip=False))
    with pytest.raises(ValueError, match=r"allow_skip must be true, false or None \(the backbone's default\), got 'False'"):
        RoutedModel(env.core.backbone, agent.policy_module(), allow_skip="False")  # type: ignore[arg-type]


def test_a_float64_policy_is_measured_and_deploys_in_float64() -> None:
    """The policy's MACs are counted on an example in its own dtype, so a float64 policy (for a model
    cast with ``.double()``) is taken, and decides as the float32 one does."""
    env, agent = trained()
    x = env.core.executor.inputs[:16]
    want = RoutedModel(env.core.backbone, agent.policy_module())(x)
    routed = RoutedModel(env.core.backbone, copy.deepcopy(agent.policy_module()).double()).double()  # not the agent's own
    assert routed.policy_macs_per_decision == agent.policy_macs()
    got = routed(x.double())
    assert got[3].tolist() == want[3].tolist() and got[2].tolist() == want[2].tolist()


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("max_macs", [None, 0.5])
def test_each_input_is_routed_alone_as_in_a_batch(max_macs: float | None, fused: bool) -> None:
    """Batch 1 takes its own lean walk (issue 20), with the compiled decision or the torch one; it
    must make the batched walk's decisions."""
    env, agent = trained()
    routed = RoutedModel(env.core.backbone, agent.policy_module(), max_macs=max_macs, fused=fused)
    assert (routed.decision is not None) == fused
    x = env.core.executor.inputs[:32]
    batch = routed(x)
    assert len(set(batch[1].tolist())) > 1  # the inputs take different routes
    for i in range(len(x)):
        single = routed(x[i : i + 1])
        torch.testing.assert_close(single[0][0], batch[0][i], rtol=1e-4, atol=1e-5)
        for got, want in zip(single[1:], batch[1:]):
            assert got.dtype == want.dtype and got.shape == (1,)
            assert got[0] == want[i]


def test_inference_copy_equals_the_network_on_random_routes() -> None:
    env, _ = trained()
    model = env.core.backbone.model
    fast = inference_copy(model)
    x = env.core.executor.inputs[:32]
    generator = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        for _ in range(3):
            choices = random_route(model, 0.6, generator)
            for want, got in zip(model.forward_exits(x, choices), fast.forward_exits(x, choices)):
                torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    assert all(not p.requires_grad for p in fast.parameters())
    double = copy.deepcopy(model).double()  # a copy: the cached environment's network stays float32
    wide = inference_copy(double)  # built where the model is: every parameter, the stem's too
    assert {p.dtype for p in wide.parameters()} == {torch.float64}
    with torch.inference_mode():
        torch.testing.assert_close(wide.forward_exits(x.double(), choices)[-1], double.forward_exits(x.double(), choices)[-1])


@pytest.mark.parametrize("optimize", [False, True])
def test_the_compiled_observation_equals_the_torch_one(optimize: bool) -> None:
    """Batch 1's compiled observation (``kernels.observe_one``: pooling, exit head, softmax in one call)
    gives the torch path's values along random routes, channels-first and channels-last, zero-padded
    past the map's channels; it is taken only where ``fused`` and the network is float32 on the CPU."""
    from routing_env import kernels
    from routing_env.kernels import observe_one
    from routing_env.routed import _CompiledObservation, _TorchObservation

    env, agent = trained()
    routed = RoutedModel(env.core.backbone, agent.policy_module(), optimize=optimize)
    model, generator = routed.model, torch.Generator().manual_seed(0)
    checked = 0
    with torch.inference_mode():
        for i in range(4):
            h = model.stem(env.core.executor.inputs[i : i + 1].contiguous(memory_format=torch.channels_last if optimize else torch.contiguous_format))
            compiled, eager = routed._observation_one(h), _TorchObservation(model, routed.has_head, routed.feature_dim, h.new_zeros(1, routed.num_classes))
            assert isinstance(compiled, _CompiledObservation)
            for k, choice in enumerate([*random_route(model, 0.5, generator), None]):
                compiled.update(k, h)
                eager.update(k, h)
                torch.testing.assert_close(compiled.features, eager.features, rtol=1e-6, atol=1e-7)
                assert not compiled.features_np[h.shape[1] :].any()
                if routed.has_head[k]:
                    torch.testing.assert_close(compiled.logits, eager.logits, rtol=1e-5, atol=1e-6)
                    torch.testing.assert_close(compiled.probs, eager.probs, rtol=1e-5, atol=1e-7)
                    checked += 1
                if choice is not None:
                    h = model.block_routes(k, h, choice)
        assert checked >= 4 and h.shape[1] > routed.model.channels[0]  # heads compared, maps of more than one width
        calls = []
        with pytest.MonkeyPatch.context() as patch:  # the batch-1 walk takes the compiled path, and only under fused
            patch.setattr(kernels, "observe_one", lambda *a: (calls.append(1), observe_one(*a)))
            routed(env.core.executor.inputs[:1])
            assert calls
            calls.clear()
            RoutedModel(env.core.backbone, agent.policy_module(), optimize=optimize, fused=False)(env.core.executor.inputs[:1])
            assert not calls
        assert isinstance(RoutedModel(env.core.backbone, agent.policy_module(), fused=False)._observation_one(h), _TorchObservation)
        routed.double()
        assert routed._compiled_heads is None  # float64 heads: the kernel's views would be of another type
        assert isinstance(routed._observation_one(h.double()), _TorchObservation)


def test_a_fixed_route_exports_and_bad_routes_are_refused() -> None:
    env, agent = trained()
    routed = RoutedModel(env.core.backbone, agent.policy_module())
    model = env.core.backbone.model
    skippable = [block.skippable for block in model.blocks]
    choices = [SKIP_CHOICE if s and k % 2 else k % len(model.widths) for k, s in enumerate(skippable)]
    module = routed.route_module(choices)
    x = env.core.executor.inputs[:4]
    exported = torch.export.export(module, (x,))
    with torch.inference_mode():
        want = model.forward_exits(x, choices)[-1]
    torch.testing.assert_close(exported.module()(x), want, rtol=1e-4, atol=1e-4)
    bad = list(choices)
    bad[skippable.index(False)] = SKIP_CHOICE
    with pytest.raises(ValueError, match="cannot be skipped"):
        routed.route_module(bad)
    with pytest.raises(ValueError, match="carries no head"):
        routed.route_module(choices, exit_position=1 if 1 not in model.exit_positions else 0)


@pytest.mark.parametrize("name", ["ppo", "maskable-ppo", "dqn"])
def test_an_sb3_policy_deploys_through_routed_model_as_it_steps_the_environment(name: str) -> None:
    """SB3 agents expose their scores (``policy_module``); an unmasked argmax that is invalid takes
    the environment's fallback in ``RoutedModel`` as it does in ``step``, so both walks agree."""
    env = RoutingVectorEnv(num_envs=64, backbone="tiny-dynamic-resnet", split="test", lam=0.3)
    agent = make_agent(name, env, seed=0)
    agent.learn(3000)
    records = route_split(agent, env)
    routed = RoutedModel(env.core.backbone, agent.policy_module())
    x = env.core.executor.inputs
    assert_equal_to_env(routed(x), records, env.core.labels)
    single = [routed(x[i : i + 1]) for i in range(16)]  # the batch-1 walk applies the same fallback
    assert [int(s[3][0]) for s in single] == records.decisions[:16].tolist()
    assert [float(s[1][0]) for s in single] == pytest.approx(records.macs[:16].tolist())


def test_an_invalid_argmax_takes_the_environments_fallback() -> None:
    env, agent = trained()
    routed = RoutedModel(env.core.backbone, agent.policy_module())
    mask = torch.tensor([[True, False, True, True, False, False]] * 2)
    scores = torch.tensor([[0.0, 5.0, 1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0, 0.0, 9.0]])
    # SKIP invalid -> the narrowest RUN; RUN(1.0) invalid -> the narrower RUNs first
    assert routed.choose(scores, mask).tolist() == [2, 3]


@pytest.mark.parametrize("name", ["reinforce", "ppo", "maskable-ppo", "dqn"])
def test_the_compiled_decision_is_the_policy_modules_argmax(name: str) -> None:
    """``fused_decision()`` (issue 20) reads the observation as ``policy_input`` does and takes the
    argmax of the module's scores (among the valid moves where the module masks them), on observations
    the environment produced and on random ones with random masks."""
    env = RoutingVectorEnv(num_envs=64, backbone="tiny-dynamic-resnet", split="test", lam=0.3)
    agent = make_agent(name, env, seed=0)
    agent.learn(500)
    module = agent.policy_module().eval()
    decision = module.fused_decision()
    assert decision is not None
    obs, _ = env.reset(seed=0)
    generator = np.random.default_rng(0)
    random_obs = {"features": generator.normal(size=obs["features"].shape).astype(np.float32),
                  "probs": generator.dirichlet(np.ones(obs["probs"].shape[1]), size=len(obs["probs"])).astype(np.float32),
                  "position": np.eye(obs["position"].shape[1], dtype=np.float32)[generator.integers(0, obs["position"].shape[1], len(obs["probs"]))],
                  "cost": generator.uniform(0, 1, obs["cost"].shape).astype(np.float32),
                  "action_mask": (generator.random(obs["action_mask"].shape) < 0.6).astype(np.int8)}
    random_obs["action_mask"][:, 0] = 1  # at least one valid move
    for batch in (obs, random_obs):
        with torch.no_grad():
            scores = module({k: torch.as_tensor(v) for k, v in batch.items()})
        want = scores.argmax(dim=1).numpy()
        got = [decision(batch["features"][i], batch["probs"][i], int(batch["position"][i].argmax()), float(batch["cost"][i, 0]),
                        batch["action_mask"][i].astype(bool)) for i in range(len(want))]
        np.testing.assert_array_equal(got, want)
    assert decision.masked == (name in ("reinforce", "maskable-ppo"))


def test_the_compiled_decision_is_used_at_batch_one_on_the_cpu_float32_only() -> None:
    env, agent = trained()
    routed = RoutedModel(env.core.backbone, agent.policy_module())
    assert routed.decision is not None
    assert RoutedModel(env.core.backbone, agent.policy_module(), fused=False).decision is None
    routed.fused = False  # set afterwards, it takes effect too (not only on the observation)
    assert routed.decision is None
    routed.fused = True
    x = env.core.executor.inputs[:8]
    want = [routed(x[i : i + 1]) for i in range(len(x))]
    routed.double()  # a cast replaces the parameters the decision viewed: it falls back to the torch path
    assert routed.decision is None
    got = [routed(x[i : i + 1].double()) for i in range(len(x))]
    assert [int(g[3][0]) for g in got] == [int(w[3][0]) for w in want]
    routed.float()
    assert routed.decision is not None
    zeros = {k: torch.zeros_like(v) for k, v in routed.policy.net.state_dict().items()}
    features, probs, mask = np.ones(routed.feature_dim, np.float32), np.ones(routed.num_classes, np.float32), np.array([False, True, True, True, True, True])
    routed.policy.net.load_state_dict(zeros)
    # the decision reads the module's parameters, not a copy: all-zero scores now pick the first valid move
    assert routed.decision(features, probs, 1, 0.1, mask) == 1
    copy, agent_net = __import__("copy").deepcopy(routed), agent.policy_module().net
    for model in (routed, copy):  # new storage (assigned, or copied): the decision follows it
        model.policy.net.load_state_dict(agent_net.state_dict(), assign=True)
        batch = model(x)
        assert [int(model(x[i : i + 1])[3][0]) for i in range(len(x))] == batch[3].tolist()
    with pytest.raises(ValueError, match="does not fit a policy reading"):
        routed.decision(features, probs, routed.num_stages + 1, 0.1, mask)


@pytest.mark.parametrize("max_macs", [None, 0.6])
def test_a_policy_deciding_at_heads_deploys_as_it_stepped_the_environment(max_macs: float | None) -> None:
    """``decide_at="head"`` (issue 20: fewer decisions at batch 1): ``RoutedModel.from_env`` repeats
    the move between decision points as the environment does, batched and at batch 1, and counts the
    decisions the policy made (the environment's steps)."""
    env = RoutingVectorEnv(num_envs=64, backbone="tiny-dynamic-resnet", split="test", lam=0.3, decide_at="head", max_macs=max_macs)
    agent = make_agent("reinforce", env, seed=0)
    agent.learn(3000)
    records = route_split(agent, env)
    routed = RoutedModel.from_env(env, agent.policy_module())
    assert routed.decides == env.core.decides.tolist() and not all(routed.decides)
    x = env.core.executor.inputs
    assert_equal_to_env(routed(x), records, env.core.labels)
    single = [routed(x[i : i + 1]) for i in range(32)]
    assert [int(s[3][0]) for s in single] == records.decisions[:32].tolist()
    assert [float(s[1][0]) for s in single] == pytest.approx(records.macs[:32].tolist())
    assert records.decisions.max() <= int(np.sum(routed.decides))
    assert len(np.unique(records.macs)) > 1  # the inputs take different routes


def test_the_compiled_decision_declines_what_its_kernel_does_not_compute() -> None:
    """``MLPDecision.of`` returns ``None`` (the torch path) for layers it does not compute, and a
    decision for Linear/Tanh or Linear/ReLU stacks of any depth, equal to the stack's argmax."""
    from torch import nn

    from routing_env.agents.fused import MLPDecision

    torch.manual_seed(0)
    assert MLPDecision.of([nn.Linear(8, 4), nn.GELU(), nn.Linear(4, 3)]) is None
    assert MLPDecision.of([nn.Linear(8, 4), nn.Tanh(), nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 3)]) is None  # mixed
    assert MLPDecision.of([nn.Linear(8, 4), nn.Linear(4, 3)]) is None  # no activation between
    assert MLPDecision.of([nn.Linear(8, 3)], norm=nn.LayerNorm(8, elementwise_affine=False)) is None
    assert MLPDecision.of([nn.Linear(8, 3).double()]) is None
    for layers in ([nn.Linear(8, 3)], [nn.Linear(8, 5), nn.ReLU(), nn.Linear(5, 5), nn.ReLU(), nn.Linear(5, 5), nn.ReLU(), nn.Linear(5, 3)]):
        decision = MLPDecision.of(layers)
        assert decision is not None and decision.input_dim == 8
        generator = np.random.default_rng(1)
        for _ in range(50):  # input: 3 features, 2 probabilities, a position one-hot of 2, the cost
            features, probs = generator.normal(size=3).astype(np.float32), generator.dirichlet([1, 1]).astype(np.float32)
            position, cost = int(generator.integers(0, 2)), float(generator.uniform())
            x = torch.tensor(np.concatenate([features, np.sort(probs)[::-1], np.eye(2)[position], [cost]]), dtype=torch.float32)
            with torch.no_grad():
                want = int(nn.Sequential(*layers)(x).argmax())
            assert decision(features, probs, position, cost, np.ones(3, dtype=bool)) == want


def test_parameter_storage_follows_what_moves_a_modules_parameters() -> None:
    """``parameter_storage`` (how batch 1 knows its compiled calls' views are stale) changes with
    ``load_state_dict(assign=True)``, a cast, a copy and a replaced layer, and not with an in-place load."""
    import copy

    from torch import nn

    from routing_env.routed import parameter_storage

    net = nn.Sequential(nn.LayerNorm(4), nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 2))
    before = parameter_storage(net)
    assert parameter_storage(net) == before
    net.load_state_dict({k: torch.zeros_like(v) for k, v in net.state_dict().items()})  # copies into the same storage
    assert parameter_storage(net) == before
    net.load_state_dict({k: torch.ones_like(v) for k, v in net.state_dict().items()}, assign=True)
    assigned = parameter_storage(net)
    assert assigned != before
    net.double()
    cast = parameter_storage(net)
    assert cast != assigned and parameter_storage(copy.deepcopy(net)) != cast
    net[2] = nn.ReLU()  # no parameters, another module
    assert parameter_storage(net) != cast


def test_batch_one_follows_a_replaced_head_or_policy_layer() -> None:
    """The compiled observation and decision read views of the parameters: a head layer or a policy
    layer replaced after the first forward must be what batch 1 uses next, as the batched walk does."""
    from torch import nn

    env, agent = trained()
    routed = RoutedModel(env.core.backbone, agent.policy_module())
    x = env.core.executor.inputs[:8]
    with torch.inference_mode():
        [routed(x[i : i + 1]) for i in range(len(x))]  # the compiled calls are built
        last = str(routed.num_stages)
        old = routed.model.heads[last].fc
        routed.model.heads[last].fc = nn.Linear(old.in_features, old.out_features)
        batch = routed(x)
        for i in range(len(x)):
            torch.testing.assert_close(routed(x[i : i + 1])[0][0], batch[0][i], rtol=1e-4, atol=1e-5)
        actor = routed.policy.net.actor  # reinforce's PolicyNet: its last layer scores the moves
        before = batch[3].tolist()
        exit_first = nn.Linear(actor[-1].in_features, actor[-1].out_features)
        nn.init.zeros_(exit_first.weight)
        with torch.no_grad():
            exit_first.bias.copy_(torch.tensor([10.0] + [0.0] * (actor[-1].out_features - 1)))  # EXIT wherever valid
        actor[len(actor) - 1] = exit_first
        batch = routed(x)
        assert batch[3].tolist() != before  # the batched walk follows the new layer
        assert [int(routed(x[i : i + 1])[3][0]) for i in range(len(x))] == batch[3].tolist()
