"""The dynamic ResNet: the network, its costs, the environment over it, and co-training."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

from helpers import assert_same, rollout
from routing_env import RoutingEnv, RoutingVectorEnv
from routing_env.backbones.dynamic import DynamicResNetBackbone, dynamic_costs, route_macs, static_routes, tiny_dynamic_model
from routing_env.backbones.resnet import SKIP_CHOICE, WIDTHS, DynamicResNet, dynamic_from_plain, resnet20, resnet20_dynamic
from routing_env.checkpoints import file_sha256, save_state_dict
from routing_env.core import EXIT, RUN, SKIP, decision_points
from routing_env.cotraining import CoTrainBackbone, CoTrainBackboneEnv
from routing_env.data import load_split
from routing_env.env import terminal_info

TINY = "tiny-dynamic-resnet"


def randomised_plain_resnet20() -> torch.nn.Module:
    torch.manual_seed(0)
    plain = resnet20().eval()
    for m in plain.modules():
        if isinstance(m, torch.nn.BatchNorm2d):  # non-trivial statistics, so that a BN mix-up shows
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.normal_()
            m.bias.data.normal_()
    return plain


def test_full_path_equals_the_plain_resnet() -> None:
    plain = randomised_plain_resnet20()
    dynamic = resnet20_dynamic().eval()
    result = dynamic.load_state_dict(dynamic_from_plain(plain.state_dict(), 20), strict=False)
    assert not result.unexpected_keys and all(k.startswith("heads.3.") or k.startswith("heads.6.") for k in result.missing_keys)
    x = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        assert torch.allclose(dynamic(x), plain(x), atol=1e-5, rtol=0)
        routes = dynamic.forward_routes(x, torch.full((8, 9), len(WIDTHS) - 1), torch.full((8,), 9))
        assert torch.allclose(routes, plain(x), atol=1e-5, rtol=0)


def test_narrow_run_computes_only_the_first_channels() -> None:
    block = resnet20_dynamic().eval().blocks[1]
    x = torch.randn(2, 16, 32, 32)
    with torch.no_grad():
        out = block(x, 0)  # width 0.25: 4 of 16 inner channels
        block.conv1.weight[4:] = torch.randn_like(block.conv1.weight[4:])  # unused rows
        block.conv2.weight[:, 4:] = torch.randn_like(block.conv2.weight[:, 4:])  # unused columns
        assert torch.equal(block(x, 0), out)
        assert out.shape == x.shape
        assert not torch.equal(block(x, 3), block(x, 0))


def test_grouped_routes_equal_one_route_at_a_time() -> None:
    model = tiny_dynamic_model()
    data = load_split("synthetic-image", "val")
    x = data.inputs[:12]
    rng = np.random.default_rng(0)
    routes = rng.integers(0, len(WIDTHS), size=(12, model.num_blocks))
    skippable = np.array([b.skippable for b in model.blocks])
    routes[(rng.random((12, model.num_blocks)) < 0.4) & skippable] = SKIP_CHOICE
    exits = rng.choice(model.exit_positions, size=12)
    with torch.no_grad():
        grouped = model.forward_routes(x, torch.from_numpy(routes), torch.from_numpy(exits))
        for i in range(12):
            single = model.forward_exits(x[i : i + 1], routes[i].tolist())[model.exit_positions.index(exits[i])]
            assert torch.allclose(grouped[i], single[0], atol=1e-5)


def test_run_macs_scale_with_the_width() -> None:
    model = resnet20_dynamic()
    costs = dynamic_costs(model, (3, 32, 32))
    for k in range(model.num_blocks):
        for j, w in enumerate(WIDTHS):
            assert costs.stage[k, j] == pytest.approx(w * costs.stage[k, -1], rel=0.10)
    assert costs.reference == pytest.approx(40.55e6, rel=0.01)  # ResNet-20's MACs (docs/design.md §9)
    assert costs.reference == costs.prefix + costs.stage[:, -1].sum() + costs.head[-1]
    model.train()
    again = dynamic_costs(model, (3, 32, 32))
    assert model.training and np.array_equal(again.stage, costs.stage)  # counted in eval mode, the caller's mode kept


def test_skip_returns_the_input_exactly() -> None:
    env = RoutingEnv(backbone=TINY)
    spec = env.core.backbone.spec
    skippable = [k for k in range(spec.num_stages) if spec.skippable[k]]
    env.reset(seed=0, options={"index": 5})
    for k in range(skippable[0]):
        env.step(RUN + 3)
    before = env.core.executor.maps[skippable[0]][0].clone()
    obs_before = env.core.features[0].copy()
    obs, *_ = env.step(SKIP)
    assert torch.equal(env.core.executor.maps[skippable[0] + 1][0], before)
    np.testing.assert_array_equal(obs["features"], obs_before)
    assert env.core.macs[0] == env.core.backbone.costs.prefix + env.core.backbone.costs.stage[: skippable[0], 3].sum()


def expected_mask(spec, position: int, has_probs: bool) -> np.ndarray:
    mask = np.zeros(spec.num_actions, dtype=bool)
    mask[EXIT] = has_probs
    if position < spec.num_stages:
        mask[SKIP] = spec.skippable[position]
        mask[RUN:] = spec.width_supported[position]
    return mask


def test_action_mask_marks_exactly_the_valid_actions() -> None:
    env = RoutingEnv(backbone=TINY)
    spec = env.core.backbone.spec
    rng = np.random.default_rng(0)
    for episode in range(40):
        obs, info = env.reset(seed=episode)
        has_probs, position, done = False, 0, False
        while not done:
            mask = expected_mask(spec, position, has_probs)
            np.testing.assert_array_equal(obs["action_mask"].astype(bool), mask)
            np.testing.assert_array_equal(info["action_mask"].astype(bool), mask)
            action = int(rng.choice(np.flatnonzero(mask)))
            obs, _, done, _, info = env.step(action)
            assert not info["invalid_action"]
            if action != EXIT:
                position += 1
                has_probs = has_probs or position in spec.head_positions
        assert info["exit_position"] in spec.head_positions


def test_invalid_skip_falls_back_to_the_narrowest_width() -> None:
    env = RoutingEnv(backbone=TINY)
    spec = env.core.backbone.spec
    k = spec.skippable.index(False)
    env.reset(seed=0)
    for _ in range(k):
        env.step(RUN)
    _, _, _, _, info = env.step(SKIP)
    assert info["invalid_action"]
    costs = env.core.backbone.costs
    assert env.core.macs[0] == costs.prefix + costs.stage[:k, 0].sum() + costs.stage[k, 0] + costs.head[: k + 2].sum()


def test_widths_option_leaves_only_early_exit_on_the_full_network() -> None:
    """``widths=[1.0], allow_skip=False``: the mask offers RUN(1.0) and EXIT alone, every route runs
    full width, and a masked width falls back to the offered one (issue 12's exit-only setting)."""
    env = RoutingEnv(backbone=TINY, widths=[1.0], allow_skip=False)
    spec, costs = env.core.backbone.spec, env.core.backbone.costs
    full = RUN + len(spec.widths) - 1
    rng = np.random.default_rng(0)
    for episode in range(20):
        obs, _ = env.reset(seed=episode)
        position, has_probs, done, info = 0, False, False, {}
        while not done:
            mask = np.zeros(len(obs["action_mask"]), dtype=bool)
            mask[EXIT] = has_probs
            mask[full] = position < spec.num_stages
            np.testing.assert_array_equal(obs["action_mask"].astype(bool), mask)
            action = int(rng.integers(len(mask)))  # any action, masked ones included
            obs, _, done, _, info = env.step(action)
            assert info["invalid_action"] == (not mask[action])
            if not done:
                position += 1
                has_probs = has_probs or position in spec.head_positions
        route = env.core.route[0][:position]  # EXIT may come after a block with no head: the latest one predicts
        assert (route == len(spec.widths) - 1).all() and info["exit_position"] <= position
        want = costs.prefix + costs.stage[:position, -1].sum() + costs.head[: position + 1].sum()
        assert env.core.macs[0] == pytest.approx(want)
    with pytest.raises(ValueError, match=r"width 0.3 is not one of the backbone's widths \[0.25, 0.5, 0.75, 1.0\]"):
        RoutingEnv(backbone=TINY, widths=[0.3])


def test_a_stage_left_without_a_move_is_refused() -> None:
    """A custom backbone whose stage runs only at widths the ``widths`` option leaves out, and may not
    be skipped, would end every episode there with no prediction: refused, naming the stage."""
    import dataclasses

    from routing_env.backbones import make_backbone
    from routing_env.core import ActionTables

    backbone = make_backbone(TINY)
    supported = list(backbone.spec.width_supported)
    supported[0] = (False, False, False, True)  # stage 0 runs at full width only
    spec = dataclasses.replace(backbone.spec, width_supported=tuple(supported))
    assert ActionTables.build(spec, backbone.costs, allow_skip=True, widths=[0.25]).valid_now[0, 0, SKIP]
    with pytest.raises(ValueError, match=r"stage 0 would have no valid move: it runs only at widths \[1.0\], none of the offered \[0.25\]"):
        ActionTables.build(spec, backbone.costs, allow_skip=False, widths=[0.25])


def test_checkers_pass() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        env = gym.make("routing_env/DynamicResNet-v0", backbone=TINY, lam=0.05)
        check_env(env.unwrapped, skip_render_check=True)
        sb3_check_env(env.unwrapped, warn=True)


def test_seeded_dynamic_environments_are_identical() -> None:
    actions = list(np.random.default_rng(1).integers(0, 6, size=150))
    a = rollout(RoutingEnv(backbone=TINY), actions, seed=3)
    b = rollout(RoutingEnv(backbone=TINY), actions, seed=3)
    assert_same(a, b)
    with pytest.raises(AssertionError):  # and the seed is what decides
        assert_same(a, rollout(RoutingEnv(backbone=TINY), actions, seed=4))


def test_vector_env_matches_single_envs() -> None:
    b = 6
    venv = RoutingVectorEnv(backbone=TINY, num_envs=b)
    singles = [RoutingEnv(backbone=TINY) for _ in range(b)]
    indices = np.arange(10, 10 + b)
    obs, _ = venv.reset(seed=0, options={"index": indices})
    single_obs = [e.reset(options={"index": int(i)})[0] for e, i in zip(singles, indices)]
    for i in range(b):
        np.testing.assert_allclose(obs["features"][i], single_obs[i]["features"], atol=1e-5)
    rng = np.random.default_rng(0)
    done = np.zeros(b, dtype=bool)
    while not done.all():
        actions = np.array([rng.choice(np.flatnonzero(obs["action_mask"][i])) if not done[i] else 0 for i in range(b)])
        obs, rewards, terminated, _, info = venv.step(actions)
        for i in np.flatnonzero(~done):
            o, r, t, _, inf = singles[i].step(int(actions[i]))
            np.testing.assert_allclose(obs["features"][i], o["features"], atol=1e-5)
            np.testing.assert_allclose(obs["probs"][i], o["probs"], atol=1e-5)
            assert terminated[i] == t and rewards[i] == pytest.approx(r, abs=1e-6)
            if t:
                assert info["prediction"][i] == inf["prediction"]
        done |= terminated


def test_route_macs_agree_with_the_environment() -> None:
    env = RoutingEnv(backbone=TINY)
    model = env.core.backbone.model
    routes, exits = static_routes(model, 1)["random skip 0.5"]
    env.reset(seed=0, options={"index": 0})
    for k in range(model.num_blocks):
        env.step(SKIP if routes[0, k] == SKIP_CHOICE else RUN + int(routes[0, k]))
    _, _, done, _, info = env.step(EXIT)
    assert done
    intermediate = sum(env.core.backbone.costs.head[p] for p in model.exit_positions[:-1] if p <= model.num_blocks)
    assert info["macs"] == pytest.approx(route_macs(env.core.backbone.costs, routes, exits)[0] + intermediate)


def taken_exit_loss(env: RoutingEnv, routes: np.ndarray, exits: np.ndarray) -> float:
    with torch.no_grad():
        return float(env.unwrapped.core.executor.loss(np.arange(len(routes)), routes, exits))


def test_cotrained_mode_updates_the_backbone_and_lowers_the_taken_exits_loss() -> None:
    env = gym.make("routing_env/DynamicResNet-v0", backbone=TINY, train_backbone=True, backbone_lr=0.05, backbone_update_every=32)
    frozen = RoutingEnv(backbone=TINY)
    model = env.unwrapped.core.backbone.model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    first_exit = model.exit_positions[0]
    # the policy: every block before the first exit at the narrowest width, then EXIT
    routes = np.zeros((256, model.num_blocks), dtype=np.int64)
    exits = np.full(256, first_exit)
    loss_before = taken_exit_loss(env, routes, exits)
    for i in range(640):
        env.reset(options={"index": i % 256})
        for _ in range(first_exit):
            env.step(RUN)
        *_, info = env.step(EXIT)
        assert info["exit_position"] == first_exit
    assert info["backbone_updates"] == 640 // 32 and np.isfinite(info["backbone_loss"])
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert taken_exit_loss(env, routes, exits) < 0.8 * loss_before
    # blocks after the exit were never run, so they did not change; nor did a frozen environment's copy
    last = f"blocks.{model.num_blocks - 1}.conv1.weight"
    assert torch.equal(model.state_dict()[last], before[last])
    assert all(torch.equal(before[k], v) for k, v in frozen.core.backbone.model.state_dict().items())
    assert not any(p.requires_grad for p in model.parameters())


def test_cotrained_cascade_updates_the_exited_members() -> None:
    env = CoTrainBackboneEnv(RoutingEnv(backbone="tiny-cascade", train_backbone=True, backbone_lr=0.05, backbone_update_every=16))
    members = env.unwrapped.core.backbone.classifiers
    before = [{k: v.clone() for k, v in m.state_dict().items()} for m in members]
    for _ in range(200):
        env.reset()
        env.step(EXIT)  # every episode exits at the first member
    assert env.trainer.updates == 200 // 16
    assert any(not torch.equal(before[0][k], v) for k, v in members[0].state_dict().items())
    assert all(torch.equal(before[2][k], v) for k, v in members[2].state_dict().items())


def test_bad_cotraining_options_are_refused() -> None:
    with pytest.raises(ValueError, match="backbone_lr"):
        RoutingEnv(backbone=TINY, train_backbone=True, backbone_lr=0.0)
    with pytest.raises(ValueError, match="backbone_update_every"):
        RoutingEnv(backbone=TINY, backbone_update_every=0)


def test_dynamic_model_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match="6n\\+2"):
        DynamicResNet(21)
    with pytest.raises(ValueError, match="widths"):
        DynamicResNet(20, widths=(0.5, 0.25, 1.0))
    with pytest.raises(ValueError, match="exits"):
        DynamicResNet(20, exits="layer")
    with pytest.raises(ValueError, match="exit positions"):
        resnet20_dynamic().forward_routes(torch.zeros(1, 3, 32, 32), torch.zeros(1, 9, dtype=torch.long), torch.tensor([4]))


def test_pretrained_dynamic_resnet_with_wrong_sha256_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from routing_env import pretrained

    folder = tmp_path / "fake-dynamic"
    folder.mkdir()
    path = folder / "resnet20-dynamic.pt"
    save_state_dict(resnet20_dynamic().state_dict(), path)
    manifest = {"name": "fake-dynamic", "kind": "dynamic-resnet", "dataset": "cifar10", "num_classes": 10,
                "model": "resnet20-dynamic", "exits": "stage", "weights": path.name, "sha256": file_sha256(path)}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    monkeypatch.setenv("ROUTING_ENV_PRETRAINED", str(tmp_path))
    backbone = pretrained.load("fake-dynamic")
    assert isinstance(backbone, DynamicResNetBackbone) and backbone.spec.num_stages == 9
    with open(path, "r+b") as f:
        f.seek(200)
        f.write(b"\x00\x01\x02")
    with pytest.raises(ValueError, match=f"checkpoint {path} is corrupted: sha256"):
        pretrained.load("fake-dynamic")


def test_cotrained_train_run_saves_and_evaluates_its_backbone(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from routing_env.cli import main

    out = tmp_path / "run"
    env_id = "routing_env/DynamicResNet-v0"
    assert main(["train", "--env", env_id, "--backbone", TINY, "--agent", "reinforce", "--lam", "0.1", "--steps", "1500",
                 "--num-envs", "16", "--out", str(out), "--env-kwargs", "train_backbone=true", "backbone_update_every=64", "--quiet"]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["env_kwargs"]["train_backbone"] is True
    trained = torch.load(out / "backbone.pt", weights_only=True)
    original = tiny_dynamic_model().state_dict()
    assert any(not torch.equal(trained[k], original[k]) for k in original)
    capsys.readouterr()
    assert main(["evaluate", "--run", str(out), "--split", "test", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["n"] == 2000
    # evaluation is frozen and reads the saved weights: the same numbers as building that env by hand
    from routing_env.agents import load_agent
    from routing_env.evaluation import route_split, summarize

    env = RoutingVectorEnv(num_envs=64, backbone=TINY, split="test", backbone_weights=str(out / "backbone.pt"))
    assert all(torch.equal(v, trained[k]) for k, v in env.core.backbone.model.state_dict().items())
    by_hand = summarize(route_split(load_agent(out, env), env), env)
    for key in ("accuracy", "macs_fraction", "reference_accuracy"):
        assert result[key] == pytest.approx(by_hand[key], abs=1e-9), key


def test_random_skip_and_uniform_width_baselines() -> None:
    from routing_env.agents import make_agent
    from routing_env.evaluation import route_split

    env = RoutingVectorEnv(num_envs=64, backbone=TINY, split="test")
    spec = env.core.backbone.spec
    full = route_split(make_agent("fixed", env), env)
    never = route_split(make_agent("random-skip", env, rate=0.0), env)
    always = route_split(make_agent("random-skip", env, rate=1.0), env)
    np.testing.assert_array_equal(never.correct, full.correct)
    np.testing.assert_array_equal(never.macs, full.macs)
    skipped = sum(env.core.backbone.costs.stage[k, -1] for k in range(spec.num_stages) if spec.skippable[k])
    np.testing.assert_allclose(always.macs, full.macs - skipped)
    assert (always.exit_position == spec.num_stages).all() and (never.exit_position == spec.num_stages).all()
    narrow = route_split(make_agent("fixed", env, width=0), env)
    assert narrow.macs.mean() < 0.5 * full.macs.mean()
    with pytest.raises(ValueError, match="rate must be a probability"):
        make_agent("random-skip", env, rate=1.5)
    with pytest.raises(ValueError, match="width must be an index"):
        make_agent("fixed", env, width=4)


def test_sweep_on_the_dynamic_backbone_compares_with_its_baselines(tmp_path: Path) -> None:
    from routing_env.experiments import SweepSpec, groups_markdown, run_sweep

    spec = SweepSpec("routing_env/DynamicResNet-v0", {"backbone": TINY}, ("reinforce",), (0.1,), (0,), steps=600)
    results = run_sweep(spec, tmp_path)
    labels = [s["label"] for s in results["singles"]]
    assert {"width 0.25 (every block)", "width 0.5 (every block)", "width 0.75 (every block)"} <= set(labels)
    # and every earlier exit at every narrower width, each cheaper than the same width run to the end
    singles = {s["label"]: s for s in results["singles"]}
    heads = [p for p in RoutingVectorEnv(num_envs=1, backbone=TINY).routing.head_positions if 0 < p < 6]
    assert heads
    for w in (0.25, 0.5, 0.75):
        for p in heads:
            assert singles[f"exit {p} at width {w:g}"]["macs_fraction"] < singles[f"width {w:g} (every block)"]["macs_fraction"]
    assert len(labels) == len(set(labels))
    skip = results["runs"][0]["random_skip_at_val_cost"]
    assert 0.0 <= skip["rate"] <= 1.0 and skip["n"] == 2000
    if 0.0 < skip["rate"] < 1.0:  # the rate was solved for the policy's val cost
        assert skip["macs_fraction"] == pytest.approx(results["runs"][0]["val"]["macs_fraction"], abs=0.05)
    assert "random skip at the same val cost" in groups_markdown(results)
    assert "static mixture at the same test cost" in groups_markdown(results)
    assert results["static_hull"][0]["macs_fraction"] == min(s["macs_fraction"] for s in results["singles"])
    assert "accuracy_minus_hull_mean" in results["groups"][0]
    assert (tmp_path / "pareto.png").stat().st_size > 0


def test_a_policy_offered_fewer_moves_meets_every_static_route_of_the_backbone(tmp_path: Path) -> None:
    """``widths=[1.0], allow_skip=False`` narrows what the policy may do, not what it is compared with:
    the static rows are the backbone's slimmed networks (not the full path relabelled), random skipping
    is there, and the sweep resumes from a Python tuple as from the CLI's JSON list."""
    from routing_env.experiments import SweepSpec, run_sweep

    kwargs = {"backbone": TINY, "widths": (1.0,), "allow_skip": False}
    spec = SweepSpec("routing_env/DynamicResNet-v0", kwargs, ("reinforce",), (0.1,), (0,), steps=600)
    results = run_sweep(spec, tmp_path)
    singles = {s["label"]: s for s in results["singles"]}
    full = singles["exit 6 (full path)"]
    for w in (0.25, 0.5, 0.75):
        assert singles[f"width {w:g} (every block)"]["macs_fraction"] < full["macs_fraction"] * (w + 0.3)
    assert results["runs"][0]["random_skip_at_val_cost"] is not None
    assert run_sweep(spec, tmp_path)["runs"][0] == json.loads(json.dumps(results["runs"][0]))  # read back, not refused
    env = RoutingVectorEnv(num_envs=4, **kwargs)
    assert env.routing.offered_widths == (False, False, False, True)
    from routing_env.agents import make_agent

    with pytest.raises(ValueError, match=r"width 0 \(0.25\) is not offered here"):
        make_agent("fixed", env, width=0)


def test_a_policy_trained_on_val_aug_is_matched_to_its_cost_on_plain_val(tmp_path: Path) -> None:
    """The threshold and random skipping are tuned to the policy's cost on ``val``, never on the
    training split (``val-aug`` repeats ``val``'s images, augmented, so its cost differs)."""
    from routing_env.experiments import SweepSpec, run_sweep

    spec = SweepSpec("routing_env/DynamicResNet-v0", {"backbone": TINY, "split": "val-aug"}, ("reinforce",), (0.1,), (0,), steps=600)
    run = run_sweep(spec, tmp_path)["runs"][0]
    assert run["val"]["split"] == "val" and run["val"]["n"] == 2000
    assert run["val"]["trained_on"]["split"] == "val-aug" and run["val"]["trained_on"]["n"] == 8 * 2000
    skip = run["random_skip_at_val_cost"]
    assert skip["target_macs_fraction"] == pytest.approx(run["val"]["macs_fraction"])


def test_fixed_routes_are_routed_once_per_frozen_configuration() -> None:
    from routing_env.evaluation import fixed_route_records

    env = RoutingVectorEnv(num_envs=64, backbone=TINY, split="test")
    first = fixed_route_records(env, 6)
    assert fixed_route_records(RoutingVectorEnv(num_envs=64, backbone=TINY, split="test"), 6) is first
    assert fixed_route_records(RoutingVectorEnv(num_envs=64, backbone=TINY, split="val"), 6) is not first
    live = RoutingVectorEnv(num_envs=64, backbone=TINY, split="val", train_backbone=True)
    with pytest.raises(ValueError, match="measured on frozen environments"):
        fixed_route_records(live, 6)


def test_the_summary_reference_is_the_full_path_whatever_the_budget() -> None:
    """``reference_accuracy`` is the widest offered path to the last point with no ``max_macs`` (the
    budget would cut it short, and ``reference_macs`` is the full network's): the same under a budget."""
    from routing_env.evaluation import FixedRoute, fixed_route_records, route_split, summarize

    free = RoutingVectorEnv(num_envs=64, backbone=TINY, split="test")
    tight = RoutingVectorEnv(num_envs=64, backbone=TINY, split="test", max_macs=0.3)
    cut = fixed_route_records(tight, 6)
    assert cut.macs_fraction.max() <= 0.3 and (cut.exit_position < 6).any()  # the budget does cut the path
    for env in (free, tight):
        summary = summarize(route_split(FixedRoute(1), env), env)
        assert summary["reference_accuracy"] == float(fixed_route_records(free, 6).correct.mean())
    assert fixed_route_records(tight, 6, budget=False) is fixed_route_records(free, 6)


def test_episodes_taking_the_same_block_and_width_run_as_one_call() -> None:
    venv = RoutingVectorEnv(num_envs=32, backbone=TINY)
    executor = venv.core.executor
    calls: list[tuple[int, int, int]] = []
    run = executor.run

    def counting_run(slots: np.ndarray, stage: int, width: int) -> np.ndarray:
        calls.append((stage, width, len(slots)))
        return run(slots, stage, width)

    executor.run = counting_run
    venv.reset(seed=0)
    actions = np.array([RUN + (i % 2) * 3 for i in range(32)])  # half at width 0.25, half at 1.0
    venv.step(actions)
    assert sorted(calls) == [(0, 0, 16), (0, 3, 16)]


def test_one_head_call_per_step_reads_each_slots_own_head() -> None:
    """Slots that reach different heads in one step are served by one executor call, each by the head
    at its own position, equal to that head on the slot's feature map."""
    venv = RoutingVectorEnv(num_envs=4, backbone=TINY)
    executor = venv.core.executor
    model = executor.model
    assert model.exit_positions == (2, 4, 6)
    calls: list[np.ndarray] = []
    head = executor.head

    def counting_head(slots: np.ndarray, positions: np.ndarray) -> np.ndarray:
        calls.append(positions.copy())
        return head(slots, positions)

    executor.head = counting_head
    venv.reset(seed=0)
    run, stop = np.full(4, RUN), np.array([EXIT, EXIT, RUN, RUN])
    for actions in (run, run, stop, run, run):  # slots 0, 1 exit at 2 and restart; slots 2, 3 go on to 5
        venv.step(actions)
    np.testing.assert_array_equal(venv.core.position, [1, 1, 5, 5])
    calls.clear()
    venv.step(run)
    assert len(calls) == 1 and sorted(calls[0].tolist()) == [2, 2, 6, 6]
    with torch.inference_mode():
        for slot in range(4):
            p = int(venv.core.position[slot])
            want = model.head(p, executor.maps[p][slot : slot + 1]).numpy()[0]
            np.testing.assert_allclose(venv.core.logits[slot], want, rtol=1e-5, atol=1e-5)


def test_exit_heads_after_every_block() -> None:
    model = DynamicResNet(14, 4, exits="block", base_width=4).eval()
    assert model.exit_positions == (1, 2, 3, 4, 5, 6)
    backbone = DynamicResNetBackbone(model, "per-block", (3, 16, 16))
    assert backbone.spec.head_positions == (1, 2, 3, 4, 5, 6) and (backbone.costs.head[1:] > 0).all()
    x = torch.rand(6, 3, 16, 16)
    with torch.no_grad():
        logits = model.forward_routes(x, torch.full((6, 6), 3), torch.arange(1, 7))
        for i in range(6):
            assert torch.allclose(logits[i], model.forward_exits(x[i : i + 1], [3] * 6)[i][0], atol=1e-5)


def test_a_stock_sb3_agent_cotrains_without_knowing_it() -> None:
    from routing_env.agents import make_agent

    env = gym.make_vec("routing_env/DynamicResNet-v0", num_envs=8, vectorization_mode="vector_entry_point", backbone=TINY,
                       train_backbone=True, backbone_update_every=16)
    assert isinstance(env, CoTrainBackbone)
    agent = make_agent("ppo", env, seed=0, n_steps=32, batch_size=64)
    agent.learn(512)
    assert env.trainer.updates > 0 and np.isfinite(env.trainer.last_loss)
    original = tiny_dynamic_model().state_dict()
    trained = env.backbone_state_dict()
    assert any(not torch.equal(trained[k], original[k]) for k in original)


def test_single_skip_routes_skip_one_block_each_and_cost_what_the_environment_charges() -> None:
    env = RoutingEnv(backbone=TINY)
    model = env.core.backbone.model
    routes = static_routes(model, 3, single_skips=True)
    skippable = [k for k, block in enumerate(model.blocks) if block.skippable]
    assert [name for name in routes if name.startswith("skip block")] == [f"skip block {k}" for k in skippable]
    assert not any(name.startswith("skip block") for name in static_routes(model, 3))  # off by default
    for k in skippable:
        choices, exits = routes[f"skip block {k}"]
        assert (choices[:, k] == SKIP_CHOICE).all() and (np.delete(choices, k, axis=1) == len(model.widths) - 1).all()
        env.reset(seed=0, options={"index": 0})
        for c in choices[0]:
            env.step(SKIP if c == SKIP_CHOICE else RUN + int(c))
        _, _, done, _, info = env.step(EXIT)
        intermediate = sum(env.core.backbone.costs.head[p] for p in model.exit_positions[:-1] if p <= model.num_blocks)
        assert done and info["macs"] == pytest.approx(route_macs(env.core.backbone.costs, choices, exits)[0] + intermediate)


@pytest.mark.parametrize(("max_macs", "invalid_action", "reward"), [(None, "fallback", "accuracy"), (0.6, "raise", "dense"),
                                                                     (0.6, "penalize", "accuracy-entropy-shaped")])
def test_decide_at_head_repeats_each_decision_up_to_the_next_decision_point(max_macs: float | None, invalid_action: str, reward: str) -> None:
    """``decide_at="head"`` is block-by-block routing in which the move decided at the start and after
    each head repeats until the next decision point (resolved by the fallback where it is invalid,
    never raised or penalised: the policy did not choose it there): the same routes, MACs, exits,
    predictions and undiscounted returns (per-step and shaped rewards summed) as ``block`` stepped that
    way with the fallback, in fewer steps."""
    outcomes, steps_taken = {}, {}
    for mode in ("block", "head"):
        env = RoutingVectorEnv(num_envs=32, backbone=TINY, split="test", lam=0.3, max_macs=max_macs, decide_at=mode, reward=reward,
                               invalid_action=invalid_action if mode == "head" else "fallback")
        points = decision_points(env.core.has_head, "head")
        assert not points.all() and points[0]
        assert env.routing.decision_points.tolist() == (points if mode == "head" else np.ones_like(points)).tolist()
        obs, _ = env.reset(options={"index": np.arange(32)})
        live, moves, steps, result = np.ones(32, dtype=bool), np.zeros(32, dtype=np.int64), np.zeros(32, dtype=np.int64), {}
        returns = np.zeros(32)
        while live.any():
            for i in np.flatnonzero(points[obs["position"].argmax(axis=1)]):  # a decision: a valid move drawn from the observation
                valid = np.flatnonzero(obs["action_mask"][i])
                moves[i] = valid[int(np.abs(obs["features"][i]).sum() * 1e3) % len(valid)]
            obs, rewards, terminated, _, info = env.step(moves.copy())
            info = terminal_info(info)
            steps += live
            returns += np.where(live, rewards, 0.0)
            for i in np.flatnonzero(live & terminated):
                result[i] = (info["macs"][i], info["correct"][i], info["exit_position"][i], info["route"][i].tolist(), round(returns[i], 9))
            live &= ~terminated
        outcomes[mode], steps_taken[mode] = result, steps
    assert outcomes["head"] == outcomes["block"]
    assert (steps_taken["head"] <= steps_taken["block"]).all() and (steps_taken["head"] < steps_taken["block"]).any()
    routes = np.array([r[3] for r in outcomes["head"].values()])
    assert len({tuple(r) for r in routes}) > 1  # the draws differ between inputs


def test_decide_at_is_checked() -> None:
    with pytest.raises(ValueError, match="unknown decide_at 'stage'; expected one of"):
        RoutingVectorEnv(num_envs=2, backbone=TINY, decide_at="stage")


def test_random_skipping_is_solved_for_the_target_cost() -> None:
    """The rate of ``random_skip_row`` comes from the cost table: between no skip and every skip, the
    routes it samples cost the target on average."""
    from routing_env.experiments.baselines import random_skip_row

    env_id = "routing_env/DynamicResNet-v0"
    none, every = (random_skip_row(env_id, {"backbone": TINY}, t) for t in (10.0, 0.0))
    assert (none["rate"], every["rate"]) == (0.0, 1.0) and every["macs_fraction"] < none["macs_fraction"]
    target = (none["macs_fraction"] + every["macs_fraction"]) / 2
    half = random_skip_row(env_id, {"backbone": TINY}, target)
    assert 0.0 < half["rate"] < 1.0
    assert half["macs_fraction"] == pytest.approx(target, abs=0.02)
