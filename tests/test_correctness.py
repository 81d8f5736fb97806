"""Regression tests for the correctness review of 0.3.0 (issue 18), one per finding, plus the rules
that keep them fixed: evaluation never trains, environments are cloned from their config, caches are
keyed on content, co-training keeps its cadence."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Callable

import gymnasium as gym
import numpy as np
import pytest
import torch

from helpers import assert_same
from routing_env import RoutingEnv, RoutingVectorEnv, kernels
from routing_env.agents import make_agent
from routing_env.backbones import make_backbone
from routing_env.backbones.base import SKIP_CHOICE
from routing_env.checkpoints import file_sha256, save_state_dict
from routing_env.cli import main
from routing_env.core import EXIT, RUN, SKIP
from routing_env.cotraining import CoTrainBackbone
from routing_env.evaluation import fixed_route_records, route_split
from routing_env.rewards import BlockDropReward
from routing_env.routed import RoutedModel

TINY_DYNAMIC = "tiny-dynamic-resnet"


# 1. co-trained runs are evaluated on their own saved backbone, frozen, and never on what they train
def test_a_cotrained_sweep_reports_what_evaluate_run_gives_and_evaluation_changes_no_weight(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    original = make_backbone("tiny-cascade").weights_sha256
    out = tmp_path / "sweep"
    assert main(["sweep", "--backbone", "tiny-cascade", "--agent", "reinforce", "--lams", "0.05", "--seeds", "0",
                 "--steps", "3000", "--out", str(out), "--env-kwargs", "train_backbone=true", "--quiet"]) == 0
    results = json.loads((out / "results.json").read_text())
    run = Path(results["runs"][0]["run"])
    weights = run / "backbone.pt"
    saved = file_sha256(weights)
    capsys.readouterr()
    assert main(["evaluate", "--run", str(run), "--split", "test", "--json"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    reported = results["runs"][0]["test"]
    for key in ("accuracy", "macs_fraction", "macs_mean", "reward_mean", "exit_histogram"):
        assert evaluated[key] == reported[key], key
    assert file_sha256(weights) == saved  # evaluating wrote nothing
    assert make_backbone("tiny-cascade").weights_sha256 == original  # nor did co-training touch the original
    trained = torch.load(weights, weights_only=True)
    assert any(not torch.equal(v, make_backbone("tiny-cascade").module.state_dict()[k]) for k, v in trained.items())
    # the run's baseline rows are on its own backbone too: the threshold row is the one tuned on it
    from routing_env.experiments import evaluation_env, threshold_row

    kwargs = {"backbone": "tiny-cascade", "train_backbone": True, "lam": 0.05}
    row = threshold_row("routing_env/Cascade-v0", kwargs, results["runs"][0]["val"]["macs_fraction"], run=run)
    assert row == results["runs"][0]["threshold_at_val_cost"]
    # and routing a split through an evaluation environment changes no weight
    env = evaluation_env("routing_env/Cascade-v0", kwargs, "test", run=run)
    live_sha = env.core.backbone.weights_sha256
    route_split(make_agent("random", env), env)
    assert env.core.backbone.weights_sha256 == live_sha == env.routing.weights_sha256


def test_a_stochastic_policy_in_a_sweep_scores_what_evaluate_run_gives(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "sweep"
    assert main(["sweep", "--backbone", "tiny-cascade", "--agent", "random", "--lams", "0.05", "--seeds", "0",
                 "--steps", "0", "--out", str(out), "--quiet"]) == 0
    results = json.loads((out / "results.json").read_text())
    capsys.readouterr()
    assert main(["evaluate", "--run", results["runs"][0]["run"], "--split", "test", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] == results["runs"][0]["test"]["accuracy"]


def test_evaluate_run_refuses_weights_other_than_those_the_run_learned_on(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "run"
    assert main(["train", "--backbone", "tiny-cascade", "--agent", "random", "--lam", "0.05", "--steps", "0",
                 "--out", str(run), "--quiet"]) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["backbone_sha256"] == make_backbone("tiny-cascade").weights_sha256
    capsys.readouterr()
    assert main(["evaluate", "--run", str(run), "--split", "test", "--json"]) == 0  # the same weights: scored
    # as if the model had been re-packaged under the same name since the run learned on it
    (run / "config.json").write_text(json.dumps({**config, "backbone_sha256": "0" * 64}))
    assert main(["evaluate", "--run", str(run), "--split", "test", "--json"]) == 2
    assert "sha256 000000000000…, but 'tiny-cascade' now loads weights with sha256" in capsys.readouterr().err
    # runs from before the record are not checked
    (run / "config.json").write_text(json.dumps({k: v for k, v in config.items() if k != "backbone_sha256"}))
    assert main(["evaluate", "--run", str(run), "--split", "test", "--json"]) == 0


def test_no_agent_or_experiment_reads_the_core_or_rebuilds_an_env_from_asdict() -> None:
    root = Path(__file__).resolve().parents[1]
    paths = [*(root / "routing_env" / "agents").glob("*.py"), *(root / "routing_env" / "experiments").glob("*.py")]
    assert len(paths) > 10, paths
    for path in paths:
        text = path.read_text()
        assert ".core." not in text and ".core)" not in text, path
        assert "asdict(env" not in text and "asdict(self.env" not in text, path


def test_the_distribution_ships_one_top_level_package() -> None:
    """Everything installs under ``routing_env``: a top-level ``agents`` (as before 0.4.0) clashed with
    other distributions' (the OpenAI Agents SDK installs one)."""
    from fnmatch import fnmatch

    root = Path(__file__).resolve().parents[1]
    section = (root / "pyproject.toml").read_text().split("[tool.setuptools.packages.find]")[1]
    include = re.findall(r'"([^"]+)"', re.search(r"include\s*=\s*\[(.*?)\]", section).group(1))
    top = {p.name for p in root.iterdir() if p.is_dir() and p.name.isidentifier() and any(fnmatch(p.name, i) for i in include)}
    assert top == {"routing_env"}, (include, top)
    assert (root / "routing_env" / "agents" / "__init__.py").exists() and not (root / "agents").exists()


def test_the_routing_view_cannot_change_the_tables() -> None:
    env = RoutingVectorEnv(num_envs=2, backbone="tiny-cascade")
    with pytest.raises(ValueError, match="read-only"):
        env.routing.act_cost[0, 0] = 1.0
    view = env.routing.act_cost.view()
    with pytest.raises(ValueError):
        view.flags.writeable = True


def test_evaluation_environments_are_frozen_and_test_refuses_cotraining() -> None:
    from routing_env.experiments import evaluation_env

    env = evaluation_env("routing_env/Cascade-v0", {"backbone": "tiny-cascade", "train_backbone": True}, "val")
    assert isinstance(env, RoutingVectorEnv) and not env.config.train_backbone
    with pytest.raises(ValueError, match="train_backbone=True on split='test'"):
        RoutingVectorEnv(backbone="tiny-cascade", split="test", train_backbone=True)


def test_an_environment_without_the_cotraining_wrapper_never_trains() -> None:
    env = RoutingVectorEnv(num_envs=16, backbone="tiny-cascade", train_backbone=True)
    before = env.routing.weights_sha256
    env.reset(seed=0)
    for _ in range(20):
        env.step(np.full(16, EXIT))
    assert env.routing.weights_sha256 == before


# 2. rewards are objects: an environment is cloned from its config, never through asdict
def test_a_dataclass_reward_works_with_sb3_agents_and_the_oracle() -> None:
    env = RoutingVectorEnv(num_envs=8, backbone="tiny-cascade", reward=BlockDropReward(gamma=0.5))
    agent = make_agent("ppo", env, seed=0, n_steps=16, batch_size=64)
    agent.learn(256)
    assert env.config.reward == BlockDropReward(gamma=0.5)
    oracle = make_agent("oracle", env)
    records = route_split(oracle, RoutingVectorEnv(num_envs=64, backbone="tiny-cascade", split="test", reward=BlockDropReward(gamma=0.5)))
    assert records.correct.mean() > 0.5
    clone = RoutingVectorEnv.from_config(env.config, num_envs=3)
    assert clone.config is env.config and clone.num_envs == 3


# 3. an invalid RUN under the budget becomes the widest RUN that fits, not EXIT
def test_an_over_budget_run_takes_the_widest_run_that_fits() -> None:
    env = RoutingEnv(backbone=TINY_DYNAMIC, max_macs=0.45)
    obs, info = env.reset(seed=0)
    while True:  # the widest route that fits, until the full width no longer fits but EXIT and a narrower RUN do
        mask = obs["action_mask"].astype(bool)
        if mask[EXIT] and not mask[RUN + 3] and mask[RUN:].any():
            break
        obs, _, terminated, _, info = env.step(RUN + int(np.flatnonzero(mask[RUN:])[-1]))
        assert not terminated
    widest = RUN + int(np.flatnonzero(mask[RUN:])[-1])
    position, macs = info["decision_point"], info["macs"]
    obs, _, terminated, _, info = env.step(RUN + 3)
    assert not terminated and info["invalid_action"] and info["decision_point"] == position + 1
    assert info["macs"] == pytest.approx(macs + env.routing.act_cost[position, widest])


def test_the_fixed_route_skips_on_to_the_next_head_where_the_budget_leaves_no_run() -> None:
    """Where no RUN fits, the greedy fixed route (the threshold's, the oracle's and the exit table's)
    SKIPs on to a head rather than ending with an earlier head's prediction; it EXITs only where nothing
    else is valid or where it was told to stop."""
    from routing_env.evaluation import FixedRoute, fixed_route_actions

    one_hot = np.eye(5, dtype=np.int8)
    obs = {"action_mask": np.array([[1, 1, 0, 0], [1, 0, 0, 0], [1, 1, 1, 0], [1, 1, 1, 1]], dtype=np.int8),
           "position": one_hot[[3, 3, 1, 4]]}
    assert fixed_route_actions(obs, 4).tolist() == [SKIP, EXIT, RUN, EXIT]
    assert fixed_route_actions(obs, 3).tolist() == [EXIT, EXIT, RUN, EXIT]
    env = RoutingVectorEnv(num_envs=8, backbone=TINY_DYNAMIC, max_macs=0.45)
    n = env.routing.num_stages
    records = route_split(FixedRoute(n), env)
    assert np.isin(records.exit_position, env.routing.head_positions).all() and (records.macs_fraction <= 0.45 + 1e-9).all()
    skipped = records.route == SKIP_CHOICE  # the budget ran out before the end, and the route skipped on ...
    assert skipped.any(axis=1).all()
    last_skip = n - 1 - np.argmax(skipped[:, ::-1], axis=1)
    assert (records.exit_position > last_skip).all()  # ... to a head after the skip, not back to the one before


def test_no_episode_is_stranded_without_a_prediction_where_heads_are_not_read_after_skip(monkeypatch: pytest.MonkeyPatch) -> None:
    """A custom backbone whose heads are not read after SKIP and with no head at point 0: without a
    budget, SKIPs past the last head used to leave an episode at the end with no valid move and an
    EXIT on the previous episode's prediction. Such moves are masked while no head has been read."""
    import dataclasses

    from routing_env.backbones import BACKBONES
    from routing_env.backbones.dynamic import tiny_dynamic_resnet

    backbone = tiny_dynamic_resnet()
    backbone.spec = dataclasses.replace(backbone.spec, head_after_skip=False)
    monkeypatch.setitem(BACKBONES, "tiny-no-head-after-skip", lambda: backbone)
    with pytest.raises(ValueError, match=r"names no data set.*BACKBONE_DATASETS\['tiny-no-head-after-skip'\]"):
        RoutingVectorEnv(num_envs=2, backbone="tiny-no-head-after-skip")
    env = RoutingVectorEnv(num_envs=16, backbone="tiny-no-head-after-skip", dataset="synthetic-image")
    assert 0 not in env.routing.head_positions
    obs, _ = env.reset(seed=0)
    rng = np.random.default_rng(0)
    ended = 0
    for _ in range(1000):
        mask = obs["action_mask"].astype(bool)
        assert mask.any(axis=1).all()  # never a point with nothing to do
        obs, _, terminated, _, info = env.step(np.array([rng.choice(np.flatnonzero(m)) for m in mask]))
        if terminated.any():
            assert (info["exit_position"][terminated] >= 0).all()  # every episode ends on a head it read
        ended += int(terminated.sum())
    assert ended > 1000


def test_the_threshold_curve_of_a_single_head_backbone_is_its_one_route(monkeypatch: pytest.MonkeyPatch) -> None:
    import dataclasses

    from routing_env.backbones import BACKBONE_DATASETS, BACKBONES
    from routing_env.backbones.dynamic import tiny_dynamic_resnet
    from routing_env.experiments.baselines import threshold_curve

    backbone = tiny_dynamic_resnet()
    backbone.spec = dataclasses.replace(backbone.spec, head_positions=(backbone.spec.num_stages,))
    monkeypatch.setitem(BACKBONES, "tiny-one-head", lambda: backbone)
    monkeypatch.setitem(BACKBONE_DATASETS, "tiny-one-head", "synthetic-image")
    curve = threshold_curve("routing_env/DynamicResNet-v0", {"backbone": "tiny-one-head"}, points=5)
    full = fixed_route_records(RoutingVectorEnv(num_envs=8, backbone="tiny-one-head", split="test"), backbone.spec.num_stages)
    assert len(curve) == 1 and curve[0]["accuracy"] == pytest.approx(full.correct.mean()) and curve[0]["macs_fraction"] == pytest.approx(1.0)


# 4. evaluation helpers work under every autoreset mode
def test_route_split_gives_the_same_records_under_every_autoreset_mode() -> None:
    """Episodes of different lengths (the threshold exits some at the first head): under ``Disabled``
    the ended slots are restarted before the next step, and the records are the same."""
    agent = make_agent("threshold", RoutingVectorEnv(num_envs=64, backbone="tiny-cascade"), tau=0.8)
    next_step = route_split(agent, RoutingVectorEnv(num_envs=64, backbone="tiny-cascade", split="test"))
    assert len(np.unique(next_step.decisions)) > 1
    for mode in ("SameStep", "Disabled"):
        other = route_split(agent, RoutingVectorEnv(num_envs=64, backbone="tiny-cascade", split="test", autoreset_mode=mode))
        for field in ("correct", "macs", "exit_position", "decisions", "reward", "route"):
            np.testing.assert_array_equal(getattr(next_step, field), getattr(other, field))
        assert set(other.reward_terms) == set(next_step.reward_terms) == {"correct", "compute"}
        for name, value in next_step.reward_terms.items():
            np.testing.assert_array_equal(value, other.reward_terms[name])


# 5. RoutedModel's tables move with it
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU (CI has none; run on a lent device)")
def test_routed_model_runs_on_a_gpu_with_every_output_there() -> None:
    env = RoutingVectorEnv(num_envs=16, backbone=TINY_DYNAMIC, split="test", lam=0.3)
    agent = make_agent("reinforce", env, seed=0)
    routed = RoutedModel(env.unwrapped.core.backbone, agent.policy_module(), optimize=False)
    x = env.unwrapped.core.executor.inputs[:32]
    on_cpu = routed(x)
    on_gpu = routed.to("cuda")(x.cuda())
    assert all(t.device.type == "cuda" for t in on_gpu)
    assert [t.shape for t in on_gpu] == [t.shape for t in on_cpu] and bool((on_gpu[1].cpu() > 0).all())


def test_routed_model_moves_with_its_tables() -> None:
    env = RoutingVectorEnv(num_envs=16, backbone=TINY_DYNAMIC, split="test", lam=0.3)
    agent = make_agent("reinforce", env, seed=0)
    routed = RoutedModel(env.unwrapped.core.backbone, agent.policy_module(), optimize=False)
    keys = set(routed.state_dict())
    assert routed.to("meta").valid_now.device.type == "meta" and routed.act_cost.device.type == "meta"
    assert set(routed.state_dict()) == keys  # the tables are buffers, not state
    routed = RoutedModel(env.unwrapped.core.backbone, agent.policy_module(), optimize=False)
    x = env.unwrapped.core.executor.inputs[:32]
    logits32, macs32, exits32, decisions32 = routed(x)
    routed64 = routed.to(torch.float64)
    assert routed64.onehot.dtype == torch.float64 and routed64.act_cost.dtype == torch.float64 and routed64.valid_now.dtype == torch.bool
    logits64, macs64, exits64, decisions64 = routed64(x)
    assert logits64.dtype == torch.float64 and logits64.device == x.device
    torch.testing.assert_close(logits64.float(), logits32, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(macs64, macs32)
    assert torch.equal(exits64, exits32) and torch.equal(decisions64, decisions32)
    # moving the routed model moved neither the environment's network nor the agent's policy
    assert next(env.unwrapped.core.backbone.model.parameters()).dtype == torch.float32
    assert next(agent.net.parameters()).dtype == torch.float32


# 6. caches are keyed on content, and no module is shared between backbones
def test_fixed_routes_follow_the_weights_not_their_path(tmp_path: Path) -> None:
    path = tmp_path / "backbone.pt"
    first = make_backbone("tiny-cascade").module.state_dict()
    save_state_dict(first, path)
    before = fixed_route_records(RoutingVectorEnv(num_envs=64, backbone="tiny-cascade", split="test", backbone_weights=str(path)), 1)
    changed = {k: v.clone() for k, v in first.items()}
    changed["1.fc.bias"] += torch.linspace(-3, 3, len(changed["1.fc.bias"]))
    save_state_dict(changed, path)  # the same path, other weights
    after = fixed_route_records(RoutingVectorEnv(num_envs=64, backbone="tiny-cascade", split="test", backbone_weights=str(path)), 1)
    assert after is not before and not np.array_equal(after.correct, before.correct)


def test_the_fixed_route_cache_keeps_within_its_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    from collections import OrderedDict

    from routing_env import evaluation

    monkeypatch.setattr(evaluation, "_FIXED_ROUTES", OrderedDict())  # earlier tests' records would be hits here
    env = RoutingVectorEnv(num_envs=64, backbone="tiny-cascade", split="test")
    one = evaluation.fixed_route_records(env, 0)
    size = one.nbytes
    assert size == sum(getattr(one, f).nbytes for f in evaluation.Records.__dataclass_fields__ if f != "reward_terms") > 0
    assert one.reward_terms == {} and np.isnan(one.reward).all()  # they depend on λ and the reward, which the key leaves out
    monkeypatch.setattr(evaluation, "FIXED_ROUTES_BYTES", int(2.5 * size))  # room for two records of this size
    second, third = evaluation.fixed_route_records(env, 1), evaluation.fixed_route_records(env, 2)
    assert evaluation.cached_bytes() <= 2.5 * size
    assert evaluation.fixed_route_records(env, 2) is third and evaluation.fixed_route_records(env, 1) is second
    assert evaluation.fixed_route_records(env, 0) is not one  # the oldest went first, and is routed again
    monkeypatch.setattr(evaluation, "FIXED_ROUTES_BYTES", 0)
    newest = evaluation.fixed_route_records(RoutingVectorEnv(num_envs=64, backbone="tiny-cascade", split="val"), 0)
    assert len(evaluation._FIXED_ROUTES) == 1  # over any budget the newest record is kept, and only it
    assert evaluation.fixed_route_records(RoutingVectorEnv(num_envs=64, backbone="tiny-cascade", split="val"), 0) is newest


def test_two_tiny_cascades_share_no_module() -> None:
    a, b = make_backbone("tiny-cascade"), make_backbone("tiny-cascade")
    assert a.weights_sha256 == b.weights_sha256
    with torch.no_grad():
        next(a.module.parameters()).add_(1.0)
    assert a.weights_sha256 != b.weights_sha256 == make_backbone("tiny-cascade").weights_sha256


# 7. co-training takes one step per update_every ended episodes, whatever num_envs
@pytest.mark.parametrize("num_envs", [4, 64])
def test_cotraining_cadence_does_not_depend_on_num_envs(num_envs: int) -> None:
    env = gym.make_vec("routing_env/Cascade-v0", num_envs=num_envs, vectorization_mode="vector_entry_point",
                       backbone="tiny-cascade", train_backbone=True, backbone_update_every=16)
    assert isinstance(env, CoTrainBackbone)
    env.reset(seed=0)
    ended = 0
    for _ in range(2 * (256 // num_envs)):  # NextStep: every other step ends every episode
        _, _, terminated, _, info = env.step(np.full(num_envs, EXIT))
        ended += int(terminated.sum())
    assert ended == 256 and env.trainer.updates == 256 // 16
    assert info["backbone_updates"][0] == 16 and np.isfinite(info["backbone_loss"]).all()


# the reference a learned router must beat: the best mixture of static routes
def test_static_rows_are_the_whole_routes_under_a_budget() -> None:
    """Under ``max_macs`` the static rows stay the backbone's whole routes: a "member alone" row is that
    member's accuracy at its MACs, not a budget-cut route's accuracy beside the member's MACs."""
    from routing_env.experiments.baselines import static_rows

    free = static_rows("routing_env/Cascade-v0", {"backbone": "tiny-cascade"})
    budgeted = static_rows("routing_env/Cascade-v0", {"backbone": "tiny-cascade", "max_macs": 0.6})
    assert [(r["label"], r["accuracy"], r["macs_fraction"]) for r in budgeted] == [
        (r["label"], r["accuracy"], r["macs_fraction"]) for r in free]
    alone = [r for r in free if r["label"].endswith(" alone")]
    assert len(alone) >= 2  # the route's reward is kept under the route's name, beside the route's cost
    assert all("reward_mean" not in r and "reward_terms_mean" not in r and "cascade_route_reward_mean" in r for r in alone)


def test_static_hull_is_the_upper_concave_envelope() -> None:
    from routing_env.experiments import hull_accuracy, static_hull

    rows = [{"macs_fraction": f, "accuracy": a} for f, a in
            [(0.25, 0.80), (0.5, 0.79), (0.75, 0.90), (1.0, 0.91), (0.36, 0.60), (0.68, 0.86), (1.2, 0.90)]]
    hull = static_hull(rows)
    assert [(p["macs_fraction"], p["accuracy"]) for p in hull] == [(0.25, 0.80), (0.75, 0.90), (1.0, 0.91)]
    assert hull_accuracy(hull, 0.5) == pytest.approx(0.85)  # half of each: 0.5·0.80 + 0.5·0.90
    assert hull_accuracy(hull, 2.0) == pytest.approx(0.91) and hull_accuracy(hull, 0.1) is None
    for r in rows:  # no static route lies above it
        assert r["accuracy"] <= hull_accuracy(hull, r["macs_fraction"]) + 1e-12


def test_the_pareto_plot_names_every_route_while_few_and_only_the_hull_corners_beyond(tmp_path: Path) -> None:
    from routing_env.experiments.baselines import static_hull
    from routing_env.experiments.report import LABELLED_ROUTES, labelled_route

    rng = np.random.default_rng(0)
    many = [{"label": f"route {i}", "macs_fraction": float(f), "accuracy": float(a)}
            for i, (f, a) in enumerate(zip(rng.uniform(0.1, 1.0, LABELLED_ROUTES + 5), rng.uniform(0.5, 0.9, LABELLED_ROUTES + 5)))]
    hull = json.loads(json.dumps(static_hull(many)))  # as results.json stores it
    named = [r for r in many if labelled_route(r, many, hull)]
    assert 1 <= len(named) < len(many)
    assert sorted((r["macs_fraction"], r["accuracy"]) for r in named) == [(p["macs_fraction"], p["accuracy"]) for p in hull]
    few = many[:LABELLED_ROUTES]
    assert all(labelled_route(r, few, []) for r in few)


def test_a_cotrained_sweeps_plot_still_names_the_corners_of_its_routes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A co-trained sweep stores no hull (``static_hull: None``): the plot names the corners of its routes' own hull."""
    from routing_env.experiments import report
    from routing_env.experiments.baselines import static_hull

    rng = np.random.default_rng(1)
    singles = [{"label": f"route {i}", "macs_fraction": float(f), "accuracy": float(a)}
               for i, (f, a) in enumerate(zip(rng.uniform(0.1, 1.0, 20), rng.uniform(0.5, 0.9, 20)))]
    results = {"threshold_curve": [], "singles": singles, "static_hull": None, "runs": [], "groups": [], "split": "test",
               "oracle": {"macs_fraction": 0.2, "accuracy": 0.95}}
    named: list[str] = []
    real = report.labelled_route
    monkeypatch.setattr(report, "labelled_route", lambda r, s, h: real(r, s, h) and not named.append(r["label"]))
    report.plot_pareto(tmp_path / "pareto.png", results, "co-trained")
    corners = {(p["macs_fraction"], p["accuracy"]) for p in static_hull(singles)}
    assert (tmp_path / "pareto.png").stat().st_size > 0
    assert sorted(named) == sorted(r["label"] for r in singles if (r["macs_fraction"], r["accuracy"]) in corners) and named


def test_the_comparison_plot_draws_each_backbones_sweeps_and_refuses_a_label_mixing_backbones(tmp_path: Path) -> None:
    from routing_env.experiments.report import plot_cascades

    def sweep(backbone: str, env_kwargs: dict, member_accuracy: float) -> dict:
        group = {"agent": "ppo", "accuracy_mean": 0.9, "accuracy_std": 0.001, "macs_fraction_mean": 0.3, "macs_fraction_std": 0.01}
        return {"spec": {"env_kwargs": {"backbone": backbone, **env_kwargs}}, "groups": [group],
                "singles": [{"label": "a alone", "macs_fraction": 0.1, "accuracy": member_accuracy},
                            {"label": "b alone", "macs_fraction": 1.0, "accuracy": 0.92}],
                "threshold_curve": [{"tau": 0.5, "macs_fraction": 0.2, "accuracy": 0.9}], "oracle": {"macs_fraction": 0.15, "accuracy": 0.97}}

    frozen = [sweep("c", {"reward": "dense"}, 0.85), sweep("c", {}, 0.85), sweep("c", {"reward": "dense", "lam": 2}, 0.85)]
    entries = plot_cascades(tmp_path / "cmp.png", {"frozen": frozen, "joint": [sweep("c-joint", {"reward": "dense"}, 0.84)]}, "t",
                            zoom=(0.1, 0.6, 0.88, 0.93))
    assert (tmp_path / "cmp.png").stat().st_size > 0
    assert len(entries) == len(set(entries))  # two sweeps of one family are named once
    assert {"frozen: ppo (reward=dense) (mean ± std over seeds)", "frozen: ppo (mean ± std over seeds)",
            "frozen: ppo (lam=2, reward=dense) (mean ± std over seeds)", "joint: ppo (reward=dense) (mean ± std over seeds)"} <= set(entries)
    assert "joint: ppo (mean ± std over seeds)" not in entries
    for label in ("frozen", "joint"):
        assert {f"{label}: confidence threshold", f"{label}: members alone", f"{label}: oracle (uses labels)"} <= set(entries)
    with pytest.raises(ValueError, match=r"'frozen'.*\['c', 'c-joint'\]"):  # another backbone's members alone differ
        plot_cascades(tmp_path / "bad.png", {"frozen": [sweep("c", {}, 0.85), sweep("c-joint", {}, 0.84)]}, "t")
    with pytest.raises(ValueError, match="zoom"):
        plot_cascades(tmp_path / "bad.png", {"frozen": frozen}, "t", zoom=(0.6, 0.1, 0.88, 0.93))
    assert not (tmp_path / "bad.png").exists()


def test_cascades_with_different_references_are_drawn_on_the_first_ones_macs() -> None:
    """A cascade ending at a ResNet-110 records fractions of ResNet-110's MACs: on a plot with one that
    ends at a ResNet-56, its costs are scaled by their ratio, and the axis says whose MACs it counts."""
    from routing_env.experiments.report import common_scale

    def sweep(reference: float | None) -> dict:
        single = {"label": "a alone", "macs_fraction": 0.1, "accuracy": 0.8}
        return {"singles": [single if reference is None else {**single, "reference_macs": reference}]}

    scales, xlabel = common_scale({"five": [sweep(125e6)], "six": [sweep(250e6)]})
    assert scales == {"five": 1.0, "six": 2.0} and xlabel == "mean MACs / five's reference MACs (125.0 M)"
    assert common_scale({"frozen": [sweep(125e6)], "joint": [sweep(125e6)]}) == ({"frozen": 1.0, "joint": 1.0}, "mean MACs / reference MACs")
    assert common_scale({"old": [sweep(None)], "older": [sweep(None)]})[0] == {"old": 1.0, "older": 1.0}  # nothing to scale by
    for mixed in ({"five": [sweep(125e6)], "old": [sweep(None)]}, {"old": [sweep(None)], "six": [sweep(250e6)]}):
        with pytest.raises(ValueError, match=r"\['old'\]: no reference_macs"):  # one scale or none, never two
            common_scale(mixed)


def test_the_fallback_takes_the_first_valid_move_of_the_documented_order() -> None:
    from routing_env.core import ActionTables, fallback_order

    backbone = make_backbone(TINY_DYNAMIC)
    tables = ActionTables.build(backbone.spec, backbone.costs, allow_skip=True)
    rng = np.random.default_rng(0)
    a = backbone.spec.num_actions
    for _ in range(300):
        mask = rng.random((1, a)) < 0.4
        if not mask.any():
            continue
        action = int(rng.integers(a))
        if mask[0, action]:
            continue
        want = next(m for m in fallback_order(action, len(backbone.spec.widths)) if mask[0, m])
        resolved, invalid, *_ = kernels.resolve_and_advance(
            np.zeros(1, dtype=np.int64), np.array([action]), mask, tables.fallback_ranks, True,
            np.zeros(1, dtype=np.int64), np.zeros((1, backbone.spec.num_stages), dtype=np.int64), np.zeros(1),
            tables.act_cost, np.zeros(1), tables.act_cost, False, tables.evaluates,
        )
        assert resolved[0] == want and invalid[0]
    assert fallback_order(EXIT, 4) == [5, 4, 3, 2, 1]  # no prediction yet: the widest RUN first


def test_the_compiled_mask_applies_the_budget_rule_of_fits() -> None:
    from routing_env.core import BUDGET_TOLERANCE, SKIP, ActionTables, fits

    assert kernels.BUDGET_TOLERANCE == BUDGET_TOLERANCE and (kernels.EXIT, kernels.SKIP, kernels.RUN) == (EXIT, SKIP, RUN)
    backbone = make_backbone(TINY_DYNAMIC)
    tables = ActionTables.build(backbone.spec, backbone.costs, allow_skip=True)
    rng = np.random.default_rng(0)
    b, n = 512, backbone.spec.num_stages
    position = rng.integers(0, n + 1, b)
    has_probs = rng.random(b) < 0.5
    macs = rng.uniform(0.0, 1.0, b) * backbone.costs.reference
    for budget in (np.inf, 0.6 * backbone.costs.reference, 0.9 * backbone.costs.reference):
        mask = np.zeros((b, backbone.spec.num_actions), dtype=bool)
        kernels.update_masks(np.arange(b), position, has_probs, macs, tables.valid_now, budget, tables.act_cost, tables.need, mask)
        committed = np.where(has_probs[:, None], tables.act_cost[position], tables.need[position])
        want = tables.valid_now[position, has_probs.astype(int)] & fits(macs, committed, budget)
        np.testing.assert_array_equal(mask, want)
        assert 0 < mask.sum() < mask.size


def test_partial_reset_restarts_only_the_masked_slots() -> None:
    from gymnasium.error import ResetNeeded

    env = RoutingVectorEnv(num_envs=4, backbone="tiny-cascade")
    with pytest.raises(ResetNeeded):
        env.reset(options={"reset_mask": np.ones(4, dtype=bool)})
    obs, _ = env.reset(seed=0)
    state = env.np_random.bit_generator.state
    same, _ = env.reset(options={"reset_mask": np.zeros(4, dtype=bool)})
    for k in obs:
        np.testing.assert_array_equal(same[k], obs[k])
    assert env.np_random.bit_generator.state == state
    for bad in ({"reset_mask": np.ones(3, dtype=bool)}, {"reset_mask": np.ones(4, dtype=bool), "index": np.zeros(4, dtype=int)},
                {"indices": np.zeros(4, dtype=int)}):
        with pytest.raises(ValueError):
            env.reset(options=bad)
        assert env.np_random.bit_generator.state == state  # a refused call draws nothing
    with pytest.raises(ValueError, match="cannot be combined"):
        env.reset(seed=1, options={"reset_mask": np.ones(4, dtype=bool)})
    obs, _, terminated, _, _ = env.step(np.array([EXIT, RUN, EXIT, RUN]))
    assert terminated.tolist() == [True, False, True, False]
    again, _ = env.reset(options={"reset_mask": terminated})  # the pending NextStep autoreset is done here
    np.testing.assert_array_equal(again["position"][[1, 3]], obs["position"][[1, 3]])
    assert again["position"][[0, 2]].argmax(axis=1).tolist() == [0, 0]
    _, _, terminated, _, _ = env.step(np.array([RUN, EXIT, RUN, EXIT]))  # slots 0 and 2 are stepped, not reset
    assert terminated.tolist() == [False, True, False, True]


def test_sb3_sees_the_same_trajectories_under_both_autoreset_modes() -> None:
    from routing_env.agents.sb3 import SB3VecEnv

    runs = []
    for mode in ("NextStep", "SameStep"):
        venv = SB3VecEnv(RoutingVectorEnv(num_envs=8, backbone="tiny-cascade", autoreset_mode=mode))
        venv.seed(0)
        trace = [venv.reset()]
        rng = np.random.default_rng(1)
        for _ in range(40):
            venv.step_async(rng.integers(0, 3, size=8))
            obs, reward, done, infos = venv.step_wait()
            trace.append((obs, reward, done, [(i.get("correct"), i.get("terminal_observation")) for i in infos]))
        runs.append(trace)
    assert_same(runs[0], runs[1])


def test_a_run_folder_that_names_code_is_refused_unless_allowed(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from routing_env.agents import load_agent

    (tmp_path / "evil.py").write_text("raise SystemExit('imported!')\n")
    run = tmp_path / "run"
    run.mkdir()
    (run / "agent.json").write_text(json.dumps({"agent": "evil:Agent", "seed": 0, "options": {}}))
    (run / "config.json").write_text(json.dumps({"env": "routing_env/Cascade-v0", "env_kwargs": {"backbone": "tiny-cascade"}}))
    env = RoutingVectorEnv(num_envs=4, backbone="tiny-cascade")
    with pytest.raises(ValueError, match="names code to import"):
        load_agent(run, env)
    assert main(["evaluate", "--run", str(run), "--json"]) == 2
    assert "--allow-code" in capsys.readouterr().err


def test_a_custom_agent_trains_and_reloads_by_its_module_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "my_agents.py").write_text(
        "from routing_env.agents.baselines import FixedAgent\n\nclass Last(FixedAgent):\n    name = 'last'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert main(["train", "--backbone", "tiny-cascade", "--agent", "my_agents:Last", "--steps", "0", "--out", str(tmp_path / "r"), "--quiet"]) == 0
    assert json.loads((tmp_path / "r" / "agent.json").read_text())["agent"] == "my_agents:Last"
    assert main(["evaluate", "--run", str(tmp_path / "r"), "--allow-code", "--json"]) == 0


def test_outputs_record_the_machine_versions_and_commit(tmp_path: Path) -> None:
    from routing_env.provenance import provenance

    record = provenance()
    assert record["cpu"] and record["torch_threads"] >= 1 and record["versions"]["torch"] and record["versions"]["gymnasium"]
    assert "stable-baselines3" in record["versions"] and "sb3-contrib" in record["versions"]
    assert main(["train", "--backbone", "tiny-cascade", "--agent", "threshold", "--steps", "0", "--out", str(tmp_path / "r"), "--quiet"]) == 0
    config = json.loads((tmp_path / "r" / "config.json").read_text())
    assert config["provenance"]["cpu"] == record["cpu"] and config["provenance"]["versions"] == record["versions"]
    from routing_env.provenance import git_commit

    assert record["git_commit"] == config["provenance"]["git_commit"] == git_commit()
    if (Path(__file__).resolve().parents[1] / ".git").exists():  # a checkout records its commit (None only outside git)
        assert record["git_commit"] is not None


def test_the_commit_recorded_is_the_checkouts_and_says_when_it_has_changes() -> None:
    import subprocess

    from routing_env.provenance import git_commit

    root = Path(__file__).resolve().parents[1]
    if not (root / ".git").exists():
        pytest.skip("not a git checkout: git_commit() is None there (an installed package)")
    git_commit.cache_clear()
    head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    changed = subprocess.run(["git", "-C", str(root), "diff", "HEAD", "--quiet"]).returncode != 0
    assert len(head) == 40 and git_commit() == head + ("+dirty" if changed else "")


@pytest.mark.parametrize("argv,message", [
    (["train", "--backbone", "tiny-cascade", "--agent", "random", "--steps", "-5"], "--steps >= 0"),
    (["train", "--backbone", "tiny-cascade", "--agent", "random", "--steps", "10", "--lam", "inf"], "finite number"),
    (["train", "--backbone", "tiny-cascade", "--agent", "random", "--steps", "10", "--env-kwargs", "invalid_penalty=-5"], "would reward invalid actions"),
    (["train", "--backbone", "tiny-cascade", "--agent", "random", "--steps", "10", "--env-kwargs", "allow_skip=no"], "allow_skip must be true, false"),
    (["train", "--backbone", "tiny-cascade", "--agent", "nope", "--steps", "10"], "unknown agent 'nope'"),
    (["pretrain", "--backbone", "resnet8", "--lr", "nan"], "finite numbers"),
    # the oracle reads the labels: as a sweep's or a study's policy it would win reaching_reference on test labels
    (["sweep", "--backbone", "tiny-cascade", "--agent", "reinforce,oracle", "--lams", "0.01", "--seeds", "0", "--steps", "10"],
     "agent 'oracle' reads the labels"),
    (["study", "--backbone", "tiny-cascade", "--rewards", "accuracy", "--agent", "oracle", "--lams", "0.01", "--seeds", "0",
      "--steps", "10"], "agent 'oracle' reads the labels"),
    # a λ given twice, or where the command takes it from elsewhere, is refused rather than settled silently
    (["train", "--backbone", "tiny-cascade", "--agent", "random", "--steps", "10", "--lam", "0.2", "--env-kwargs", "lam=0.5"],
     "--lam 0.2 and --env-kwargs lam=0.5 disagree"),
    (["sweep", "--backbone", "tiny-cascade", "--agent", "random", "--lams", "0.01", "--seeds", "0", "--steps", "10", "--lam", "0.7"],
     "sweep takes λ from --lams"),
    (["study", "--backbone", "tiny-cascade", "--rewards", "accuracy", "--agent", "random", "--lams", "0.01", "--seeds", "0",
      "--steps", "10", "--env-kwargs", "lam=0.1"], "study takes λ from --lams"),
])
def test_nonsense_is_refused_before_anything_is_written(argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "out"
    assert main([*argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_the_demo_takes_its_lam_from_env_kwargs_too(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "demo"
    assert main(["demo", "--backbone", "tiny-cascade", "--agent", "random", "--steps", "0", "--env-kwargs", "lam=0.5",
                 "--out", str(out), "--quiet"]) == 0
    assert "lam=0.5" in capsys.readouterr().out
    assert [run["lam"] for run in json.loads((out / "results.json").read_text())["runs"]] == [0.5]


def test_a_given_threshold_is_kept(capsys: pytest.CaptureFixture) -> None:
    from routing_env.experiments.train import evaluation_env, evaluation_json

    env = evaluation_env("routing_env/Cascade-v0", {"backbone": "tiny-cascade"}, "test")
    scored = {}
    for tau in (0.5, 0.99):
        assert main(["evaluate", "--backbone", "tiny-cascade", "--agent", "threshold", "--agent-kwargs", f"tau={tau}", "--json"]) == 0
        scored[tau] = json.loads(capsys.readouterr().out)
        agent = make_agent("threshold", RoutingVectorEnv(num_envs=4, backbone="tiny-cascade"), tau=tau)
        agent.learn(0)  # tuning keeps a given tau
        assert agent.tau == tau
        direct = evaluation_json(agent, env, "routing_env/Cascade-v0")
        assert (scored[tau]["accuracy"], scored[tau]["macs_fraction"]) == pytest.approx((direct["accuracy"], direct["macs_fraction"]))
    assert scored[0.5]["macs_fraction"] < scored[0.99]["macs_fraction"]  # the two taus route differently


def test_a_threshold_row_keeps_the_val_accuracy_and_cost_of_its_tau() -> None:
    from routing_env.experiments import threshold_row
    from routing_env.experiments.train import evaluation_env, evaluation_json

    kwargs = {"backbone": "tiny-cascade"}
    val = evaluation_env("routing_env/Cascade-v0", kwargs, "val")
    full = evaluation_json(make_agent("fixed", val), val, "routing_env/Cascade-v0")["macs_fraction"]
    rows = [threshold_row("routing_env/Cascade-v0", kwargs, target) for target in (0.4 * full, 0.7 * full, 2.0)]
    for row, target in zip(rows, (0.4 * full, 0.7 * full, 2.0)):
        on_val = evaluation_json(make_agent("threshold", val, tau=row["tau"]), val, "routing_env/Cascade-v0")
        assert (row["val_accuracy"], row["val_macs_fraction"]) == pytest.approx((on_val["accuracy"], on_val["macs_fraction"]))
        assert row["val_macs_fraction"] <= target + 1e-9 or row["tau"] == 0.0
    accuracies = [row["val_accuracy"] for row in rows]
    assert accuracies == sorted(accuracies)  # a larger budget is never less accurate on val, where it was tuned


def test_same_step_keeps_the_invalid_flag_of_slots_that_go_on() -> None:
    env = RoutingVectorEnv(num_envs=2, backbone="tiny-cascade", autoreset_mode="SameStep")
    env.reset(seed=0)
    _, _, terminated, _, info = env.step(np.array([EXIT, 1]))  # slot 0 ends; slot 1's SKIP is invalid on a cascade
    assert terminated.tolist() == [True, False]
    assert info["invalid_action"].tolist() == [False, True]


def test_shipped_caches_are_checked_and_manifests_stay_in_their_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    from routing_env import pretrained

    source = pretrained.root() / "cifar10-resnet-cascade"
    folder = tmp_path / "cifar10-resnet-cascade"
    shutil.copytree(source, folder, ignore=shutil.ignore_patterns("tb", "*.md"))
    monkeypatch.setenv("ROUTING_ENV_PRETRAINED", str(tmp_path))
    monkeypatch.setenv("ROUTING_ENV_CACHE", str(tmp_path / "cache"))
    manifest = json.loads((folder / "manifest.json").read_text())
    assert len(manifest["caches"]) == 2
    RoutingVectorEnv(num_envs=2, split="test")  # the intact copy loads
    cache = next(folder.glob("*-test-*.npz"))
    data = bytearray(cache.read_bytes())
    data[len(data) // 2] ^= 0xFF
    cache.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=f"feature cache {cache} is corrupted"):
        RoutingVectorEnv(num_envs=2, split="test")
    manifest["members"][0]["weights"] = "../../outside.pt"
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="lies outside its folder"):
        pretrained.load("cifar10-resnet-cascade")


def test_a_sweep_checks_its_whole_grid_before_training(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "sweep"
    assert main(["sweep", "--backbone", "tiny-cascade", "--agent", "reinforce,ppo,typo", "--lams", "0.1", "--seeds", "0",
                 "--steps", "100", "--out", str(out), "--quiet"]) == 2
    assert "unknown agent 'typo'" in capsys.readouterr().err and not out.exists()
    assert main(["sweep", "--backbone", "tiny-cascade", "--agent", "reinforce", "--lams", "0.1,-1", "--seeds", "0",
                 "--steps", "100", "--out", str(out), "--quiet"]) == 2
    assert "lam must be" in capsys.readouterr().err and not out.exists()


def test_the_environment_and_routed_model_walk_blocks_through_one_function() -> None:
    """Both walks run every block through DynamicResNet.block_routes and take their masks, budget and
    costs from ActionTables: the same calls for the same routes."""
    from routing_env.backbones.resnet import DynamicResNet

    calls: list[tuple[int, tuple[int, ...]]] = []
    original = DynamicResNet.block_routes

    def counting(self, k, h, choice):  # noqa: ANN001, ANN202
        calls.append((k, tuple(sorted(set(torch.as_tensor(choice).reshape(-1).tolist())))))  # RoutedModel passes an int at batch 1
        return original(self, k, h, choice)

    env = RoutingVectorEnv(num_envs=1, backbone=TINY_DYNAMIC, split="test")
    route = [RUN + 3, RUN, RUN + 1, RUN + 3, RUN + 2, RUN + 3]
    try:
        DynamicResNet.block_routes = counting
        env.reset(options={"index": np.array([0])})
        for a in route:
            env.step(np.array([a]))
        from_env, calls[:] = list(calls), []
        policy = _FixedPolicy(route)
        routed = RoutedModel(env.unwrapped.core.backbone, policy)
        routed(env.unwrapped.core.executor.inputs[:1])
    finally:
        DynamicResNet.block_routes = original
    assert from_env == calls == [(k, (a - RUN,)) for k, a in enumerate(route)]


class _FixedPolicy(torch.nn.Module):
    """Logits that pick ``route[k]`` at point k, then EXIT."""

    def __init__(self, route: list[int]) -> None:
        super().__init__()
        self.route = route

    def forward(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        k = int(obs["position"][0].argmax())
        logits = torch.zeros(len(obs["position"]), 6)
        logits[:, self.route[k] if k < len(self.route) else EXIT] = 1.0
        return logits


def test_a_sweep_killed_with_sigkill_resumes_and_leaves_no_partial_file(tmp_path: Path) -> None:
    """kill -9 in the middle of a sweep, then the same command: the finished runs are reused, the
    unfinished one is trained again, and no JSON the next run reads is half-written."""
    import os
    import subprocess
    import sys

    out = tmp_path / "sweep"
    command = [sys.executable, "-m", "routing_env", "sweep", "--backbone", "tiny-cascade", "--agent", "reinforce",
               "--lams", "0.05", "--seeds", "0,1,2,3,4", "--steps", "4000", "--out", str(out), "--quiet"]
    # the first run has finished; the other four take seconds more, time enough to be killed on a loaded CPU
    _kill_when(command, lambda: bool(list(out.glob("runs/*/test.json"))))
    finished = {p.parent.name: p.stat().st_mtime_ns for p in out.glob("runs/*/test.json")}
    assert finished and not (out / "results.json").exists()
    _assert_no_partial_file(out)
    assert subprocess.run(command, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True).returncode == 0
    results = json.loads((out / "results.json").read_text())
    assert len(results["runs"]) == 5
    for name, mtime in finished.items():  # reused, not retrained
        assert (out / "runs" / name / "test.json").stat().st_mtime_ns == mtime


def _kill_when(command: list[str], ready: Callable[[], bool], timeout: float = 600.0) -> None:
    """Start ``command`` (one torch thread), wait until ``ready()``, then ``kill -9`` it."""
    import os
    import signal
    import subprocess
    import time

    process = subprocess.Popen(command, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + timeout
    while not ready() and process.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    assert process.poll() is None, "the command ended before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()


def _assert_no_partial_file(out: Path) -> None:
    """Every file under its own name is whole. A SIGKILL that lands inside ``atomic_write`` (more likely
    on a loaded machine: it fsyncs) can leave the writer's dotted temporary file, which nothing can
    remove after SIGKILL; it is never read under the real name, so only its name is checked."""
    for path in out.rglob("*.json"):  # every JSON on disk is whole
        json.loads(path.read_text())
    for path in out.rglob("*.tmp"):
        assert path.name.startswith("."), f"{path}: a temporary file not hidden as atomic_write's are"


@pytest.mark.expensive  # the default suite keeps test_study's interrupted study and the sweep's SIGKILL above
def test_a_study_killed_with_sigkill_resumes_and_loses_at_most_one_trial(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    out = tmp_path / "study"
    command = [sys.executable, "-m", "routing_env", "study", "--backbone", "tiny-cascade", "--rewards", "accuracy",
               "--agent", "reinforce", "--lams", "0.05", "--seeds", "0,1,2", "--steps", "4000", "--out", str(out), "--quiet"]
    _kill_when(command, lambda: bool(list(out.glob("runs/*/*/runs/*/test.json"))))
    finished = {p: p.stat().st_mtime_ns for p in out.glob("runs/*/*/runs/*/test.json")}
    assert finished and not (out / "study.json").exists()
    _assert_no_partial_file(out)
    assert subprocess.run(command, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True).returncode == 0
    study = json.loads((out / "study.json").read_text())
    assert len(study["rewards"]["accuracy"]["runs"]) == 3
    assert {p: p.stat().st_mtime_ns for p in finished} == finished  # the finished trials were reused


def test_a_cotrained_train_killed_with_sigkill_runs_again_from_the_start_and_leaves_no_partial_file(tmp_path: Path) -> None:
    """A co-trained ``train`` is one trial: killed, it leaves nothing a later run would load as
    finished, and the same command trains it again (with one set of curves, not two)."""
    import os
    import subprocess
    import sys

    out = tmp_path / "run"
    command = [sys.executable, "-m", "routing_env", "train", "--backbone", "tiny-cascade", "--agent", "reinforce", "--lam", "0.05",
               "--steps", "6000", "--env-kwargs", "train_backbone=true", "--out", str(out), "--quiet"]
    _kill_when(command, lambda: bool(list(out.glob("tb/events.*"))))
    assert not (out / "eval.json").exists()
    _assert_no_partial_file(out)
    assert subprocess.run(command, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True).returncode == 0
    assert json.loads((out / "eval.json").read_text())["n"] > 0
    assert len(list(out.glob("tb/events.*"))) == 1
    assert main(["evaluate", "--run", str(out), "--split", "test", "--json"]) == 0


@pytest.mark.expensive  # four joint runs in subprocesses; test_joint's killed run (in-process) stays in the default suite
def test_a_joint_run_killed_with_sigkill_resumes_to_the_uninterrupted_runs_weights(tmp_path: Path) -> None:
    """kill -9 at any moment after the first epoch's checkpoint, then ``--resume``: the run ends with
    the weights of a run never killed, bit for bit (one torch thread for both)."""
    import os
    import subprocess
    import sys

    def command(out: Path) -> list[str]:
        return [sys.executable, "-m", "routing_env", "joint", "--backbone", "tiny-cascade", "--lam", "0.05", "--epochs", "4",
                "--backbone-lr", "0.005", "--out", str(out), "--quiet"]

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    assert subprocess.run(command(tmp_path / "whole"), env=env, capture_output=True).returncode == 0
    killed = tmp_path / "killed"
    _kill_when(command(killed), lambda: (killed / "checkpoint.pt").is_file())
    assert not (killed / "joint.json").exists() or json.loads((killed / "joint.json").read_text())["stopped"]
    _assert_no_partial_file(killed)
    assert subprocess.run(command(killed), env=env, capture_output=True).returncode != 0  # refuses to start over silently
    assert subprocess.run([*command(killed), "--resume"], env=env, capture_output=True).returncode == 0
    for name in ("backbone.pt", "policy.pt"):
        whole, resumed = (torch.load(d / name, weights_only=True) for d in (tmp_path / "whole", killed))
        assert whole.keys() == resumed.keys() and all(torch.equal(whole[k], resumed[k]) for k in whole), name


@pytest.mark.expensive  # test_pretrain's time-limited stop and resume, and its killed-run TensorBoard test, stay in the default suite
def test_a_pretraining_killed_with_sigkill_resumes_from_its_last_epoch(tmp_path: Path, cifar_root: str) -> None:
    import os
    import subprocess
    import sys

    out = tmp_path / "pretrain"
    script = ("import sys; from routing_env.pretrain import PretrainArgs, pretrain; "
              "pretrain(PretrainArgs(backbone='resnet8', subset=1024, batch_size=64, epochs=4), sys.argv[1], "
              "resume=sys.argv[2] == 'resume', data_root=sys.argv[3], progress=False)")
    command = [sys.executable, "-c", script, str(out), "new", cifar_root]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    _kill_when(command, lambda: (out / "checkpoint.pt").is_file())
    assert not (out / "model_card.json").exists() and not list(out.rglob(".*.tmp"))
    done = torch.load(out / "checkpoint.pt", weights_only=True)["epoch"]
    assert 1 <= done <= 4
    assert subprocess.run([sys.executable, "-c", script, str(out), "resume", cifar_root], env=env, capture_output=True).returncode == 0
    card = json.loads((out / "model_card.json").read_text())
    segments = [(h["first_epoch"], h["last_epoch"]) for h in card["history"]]
    assert segments[0] == (1, done) and segments[-1][1] == 4, segments


class ExitWhenSure(torch.nn.Module):
    """A policy that exits once the latest head's confidence reaches ``tau`` and else runs the widest
    width: the rule compute attacks target (a confident input that exits early is the saving), written
    out so that the test does not hang on what one learned policy happens to do on one machine."""

    def __init__(self, tau: float, num_actions: int) -> None:
        super().__init__()
        self.tau, self.num_actions = tau, num_actions

    def forward(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        sure = obs["probs"].max(dim=1).values - self.tau
        scores = torch.full((len(sure), self.num_actions), -1.0, dtype=sure.dtype, device=sure.device)
        scores[:, -1] = 0.0  # the widest RUN
        scores[:, EXIT] = 20.0 * sure
        return scores


def test_an_attack_raises_a_policys_compute_and_the_hard_budget_still_holds() -> None:
    from routing_env.attack import attack_report, compute_attack, expensive_log_prob

    env = RoutingVectorEnv(num_envs=4, backbone=TINY_DYNAMIC, split="test")
    backbone = env.unwrapped.core.backbone
    images = env.unwrapped.core.executor.inputs[:500]
    labels = env.unwrapped.core.labels[:500]
    model = backbone.model
    with torch.no_grad():  # tau: the median confidence at the first exit, so about half the inputs exit there
        first = model.forward_exits(images, [len(model.widths) - 1] * model.num_blocks)[0]
        tau = float(first.softmax(1).max(1).values.median())
    policy = ExitWhenSure(tau, env.single_action_space.n)
    routed = RoutedModel(backbone, policy)
    clean = images[:100]
    attacked = compute_attack(routed, clean, eps=16, steps=5)
    assert int((attacked.int() - clean.int()).abs().max()) <= 16
    for bad, message in (({"alpha": -1}, r"alpha must be a finite number > 0 \(levels of 255\), or None for eps / 4, got -1"),
                         ({"alpha": float("inf")}, "alpha must be a finite number > 0 .* got inf"),
                         ({"eps": float("inf")}, "eps must be a finite number >= 0, got inf"),
                         ({"steps": 2.5}, "steps must be an integer >= 1, got 2.5")):
        with pytest.raises(ValueError, match=message):
            compute_attack(routed, clean, **{"eps": 16, "steps": 5, **bad})
    # a fractional eps is not exceeded by the rounding to whole levels, even by large steps
    assert int((compute_attack(routed, clean, eps=0.6, steps=2, alpha=100).int() - clean.int()).abs().max()) == 0
    assert int((compute_attack(routed, clean, eps=2.5, steps=2, alpha=100).int() - clean.int()).abs().max()) == 2
    with torch.no_grad():  # PGD ascends what it optimises: the widest RUN's log-probability along the route
        gain = expensive_log_prob(routed, attacked.float() / 255) - expensive_log_prob(routed, clean.float() / 255)
    assert float(gain.sum()) > 0
    free = attack_report(routed, images, labels, eps=16, steps=5)
    # the inputs that exited early, being sure, are made unsure and go on (measured: 0.555 clean, 0.669 attacked)
    assert free["clean_macs_fraction"] < 0.8 and free["attacked_macs_fraction"] > free["clean_macs_fraction"] + 0.05, free
    capped = attack_report(RoutedModel(backbone, policy, max_macs=0.2), images, labels, eps=16, steps=5)
    assert capped["attacked_max_macs_fraction"] <= 0.2 * (1 + 1e-9), capped


class WidthByPosition(torch.nn.Module):
    """Exit once sure, else the widest RUN at even decision points and width index 1 at odd ones: a
    policy whose move depends on where it is asked, so that asking it between heads differs from
    repeating its move there (``decide_at="head"``)."""

    def __init__(self, tau: float, num_actions: int) -> None:
        super().__init__()
        self.tau, self.num_actions = tau, num_actions

    def forward(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        sure = obs["probs"].max(dim=1).values - self.tau
        even = obs["position"].argmax(dim=1) % 2 == 0
        scores = torch.full((len(sure), self.num_actions), -1.0, dtype=sure.dtype, device=sure.device)
        scores[:, RUN:] -= 0.1 * torch.arange(self.num_actions - RUN, dtype=sure.dtype)  # no two widths tie
        scores[even, -1] = 0.0
        scores[~even, RUN + 1] = 0.0
        scores[:, EXIT] = 20.0 * sure
        return scores


def test_the_attack_walks_the_route_the_routed_model_takes_under_a_budget_and_at_the_heads() -> None:
    """What PGD ascends is read along the route RoutedModel walks, the budget's mask and ``decide_at``'s
    repeated moves included, and sums the log-probability of the widest RUN the mask allows where the
    policy is asked (it once asked at every block, ignored the budget, and pushed toward the narrowest
    width wherever the full one was masked)."""
    from routing_env.attack import expensive_log_prob, widest_valid_run

    env = RoutingVectorEnv(num_envs=1, backbone=TINY_DYNAMIC, split="test")
    backbone = env.unwrapped.core.backbone
    images = env.unwrapped.core.executor.inputs[:30]
    widest = env.single_action_space.n - 1
    policy = WidthByPosition(0.9, env.single_action_space.n)
    for options in ({"decide_at": "head"}, {"max_macs": 0.6}, {"decide_at": "head", "max_macs": 0.5}):
        routed = RoutedModel(backbone, policy, **options)
        blocks, asked = routed.model.block_routes, routed.policy.forward
        walked: list[tuple[int, int]] = []
        scored: list[tuple[torch.Tensor, torch.Tensor]] = []

        def recording(k: int, h: torch.Tensor, choice: torch.Tensor | int) -> torch.Tensor:
            walked.append((k, int(choice) if isinstance(choice, int) else int(choice[0])))
            return blocks(k, h, choice)

        def asking(obs: dict[str, torch.Tensor]) -> torch.Tensor:
            scores = asked(obs)
            scored.append((obs["action_mask"].bool(), scores.detach()))
            return scores

        routed.model.block_routes, routed.policy.forward = recording, asking
        alone, cut = [], 0
        for image in images:  # batch 1: the attack's walk against RoutedModel's, move for move
            walked.clear()
            routed(image[None])
            route = list(walked)
            walked.clear()
            scored.clear()
            x = (image[None].float() / 255).requires_grad_(True)
            with torch.enable_grad():
                total = expensive_log_prob(routed, x)
                (grad,) = torch.autograd.grad(total.sum(), x)
            total = total.detach()
            assert walked == route, (options, walked, route)
            assert torch.isfinite(total).all() and torch.isfinite(grad).all(), options
            expected = 0.0  # by hand: at each point the policy was asked, the widest RUN its mask allows
            for mask, scores in scored:
                runs = torch.nonzero(mask[0, RUN:]).flatten()
                if len(runs):
                    target = RUN + int(runs[-1])
                    expected += float(torch.log_softmax(scores[0].masked_fill(~mask[0], float("-inf")), dim=0)[target])
                    cut += int(RUN < target < widest)
            assert abs(float(total[0]) - expected) < 1e-5, (options, float(total[0]), expected)
            alone.append(float(total[0]))
        del routed.model.block_routes, routed.policy.forward
        with torch.no_grad():  # a batch: rows that end early ride along without changing the others
            batched = expensive_log_prob(routed, images.float() / 255)
        np.testing.assert_allclose(batched.numpy(), alone, atol=1e-5)
        if "max_macs" in options:  # the budget masked the full width where a middle one (not the narrowest) fitted
            assert cut > 0, options
    mask = torch.tensor([[True, False, True, True, False, False], [True, True, False, False, False, False]])
    assert widest_valid_run(mask).tolist() == [RUN + 1, RUN + 3]  # the second row allows no RUN: the widest, uncounted


def test_attack_cli_reports_clean_and_attacked_compute(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "run"
    assert main(["train", "--env", "routing_env/DynamicResNet-v0", "--backbone", TINY_DYNAMIC, "--agent", "reinforce",
                 "--lam", "1.5", "--steps", "2000", "--out", str(run), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["attack", "--run", str(run), "--eps", "8", "--steps", "2", "--n", "100", "--max-macs", "0.3", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["n"] == 100 and report["budget"] == pytest.approx(0.3)
    assert report["attacked_max_macs_fraction"] <= 0.3 * (1 + 1e-9)
    assert main(["attack", "--run", str(run), "--steps", "0"]) == 2


def test_the_point_that_matches_the_reference_is_chosen_on_val_not_on_test() -> None:
    """``reaching_reference`` reads only ``val`` figures: a setting that reaches the reference on
    ``test`` by luck is not chosen, and among those that reach it on ``val`` the cheapest on ``val`` is."""
    from routing_env.experiments import reaching_reference

    def group(lam: float, test_acc: float, val_acc: float, val_cost: float) -> dict:
        return {"agent": "ppo", "lam": lam, "accuracy_mean": test_acc, "macs_fraction_mean": val_cost,
                "val_accuracy_mean": val_acc, "val_macs_fraction_mean": val_cost, "val_reference_accuracy": 0.92}

    lucky_on_test = group(0.3, test_acc=0.95, val_acc=0.90, val_cost=0.2)
    dear, cheap = group(0.01, 0.91, 0.93, 0.6), group(0.03, 0.90, 0.921, 0.4)
    assert reaching_reference([lucky_on_test, dear, cheap]) is cheap
    assert reaching_reference([lucky_on_test]) is None


def test_co_trained_seeds_are_held_to_their_own_backbones_mean_reference() -> None:
    """Each co-trained seed trains its own backbone, so each run has its own reference accuracy: a
    group is compared with their mean, not with the first seed's."""
    from routing_env.experiments.sweep import group_runs

    def run(seed: int, reference: float) -> dict:
        figures = {"accuracy": 0.9, "macs_fraction": 0.5, "macs_fraction_with_policy": 0.5, "reference_accuracy": reference}
        return {"agent": "ppo", "lam": 0.03, "seed": seed, "test": figures, "threshold_at_val_cost": figures,
                "val": {"accuracy": 0.9, "macs_fraction": 0.5, "reference_accuracy": reference}}

    (group,) = group_runs([run(0, 0.88), run(1, 0.92)])
    assert group["val_reference_accuracy"] == pytest.approx(0.90) and group["reference_accuracy"] == pytest.approx(0.90)


def test_the_core_refuses_rows_the_kernels_cannot_take_and_changes_nothing() -> None:
    """numba checks no bounds: a direct ``RoutingCore.step`` with a slot out of range or repeated, or an
    action out of range, is a ValueError naming the row, and the state is untouched."""
    env = RoutingVectorEnv(num_envs=3, backbone="tiny-cascade")
    env.reset(seed=0)
    core = env.unwrapped.core
    before = (core.position.copy(), core.macs.copy(), core.route.copy())
    for slots, actions in (([0, 3], [RUN, RUN]), ([1, 1], [RUN, RUN]), ([0, 1], [RUN, 7]), ([-1], [RUN])):
        with pytest.raises(ValueError, match="out of range or repeated"):
            core.step(np.array(slots), np.array(actions))
    for saved, now in zip(before, (core.position, core.macs, core.route)):
        np.testing.assert_array_equal(saved, now)


def test_a_slot_with_no_valid_move_exits_and_nan_logits_predict_as_argmax() -> None:
    tables_slots = np.zeros(1, dtype=np.int64)
    mask = np.zeros((1, 3), dtype=bool)  # a slot never reset: nothing valid
    ranks = np.tile(np.arange(3), (3, 1))
    resolved, invalid, groups, *_ = kernels.resolve_and_advance(
        tables_slots, np.array([RUN]), mask, ranks, False, np.zeros(1, dtype=np.int64), np.zeros((1, 2), dtype=np.int64),
        np.zeros(1), np.zeros((3, 3)), np.zeros(1), np.zeros((3, 3)), False, np.zeros((3, 3), dtype=bool),
    )
    assert resolved[0] == EXIT and invalid[0] and len(groups) == 0
    logits = np.array([[1.0, np.nan, 3.0, np.nan], [2.0, 5.0, 5.0, 1.0], [np.nan, 9.0, 0.0, 0.0]], dtype=np.float32)
    prediction, *_ = kernels.settle(np.arange(3), logits, np.arange(3), np.zeros(3, dtype=np.int64), np.zeros(3), np.zeros(3))
    np.testing.assert_array_equal(prediction, logits.argmax(axis=1))


def test_a_group_cheaper_than_every_static_route_is_marked_not_the_hull_column_dropped() -> None:
    """``hull_accuracy`` is ``None`` below the cheapest static route, so such a group has no margin; the
    table says so for that group and keeps the column for the others."""
    from routing_env.experiments import groups_markdown

    def group(agent: str, hull: bool) -> dict:
        g = {"agent": agent, "lam": 0.1, "seeds": [0, 1, 2], "accuracy_mean": 0.9, "accuracy_std": 0.01, "macs_fraction_mean": 0.5,
             "macs_fraction_std": 0.01, "macs_fraction_with_policy_mean": 0.51, "threshold_accuracy_mean": 0.89,
             "threshold_macs_fraction_mean": 0.5}
        return {**g, "hull_accuracy_mean": 0.88, "accuracy_minus_hull_mean": 0.02, "accuracy_minus_hull_std": 0.01} if hull else g

    results = {"singles": [{"label": "exit 3 (full path)", "accuracy": 0.8, "macs_fraction": 0.4}],
               "static_hull": [{"macs_fraction": 0.4, "accuracy": 0.8}], "groups": [group("ppo", True), group("dqn", False)],
               "oracle": {"label": "oracle", "accuracy": 0.99, "macs_fraction": 0.3}}
    table = groups_markdown(results)
    assert "static mixture at the same test cost" in table
    assert "0.8800 (+0.0200 ± 0.0100)" in table and "– (a seed is cheaper than every static route)" in table
