"""Joint training (Guan et al.): the cascade's members and the REINFORCE selection module learn together
on ``train``, with checkpoints that resume exactly."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from routing_env.backbones import make_backbone
from routing_env.cli import main
from routing_env.experiments import joint
from routing_env.experiments.joint import JointSpec, joint_train

SPEC = JointSpec(backbone="tiny-cascade", lam=0.05, epochs=2, num_envs=64, backbone_lr=0.005, backbone_update_every=64)


def test_joint_training_changes_the_members_lowers_the_routed_loss_and_the_policy_learns(tmp_path: Path) -> None:
    from routing_env import RoutingVectorEnv
    from routing_env.agents import load_agent, make_agent
    from routing_env.data import load_split
    from routing_env.evaluation import route_split

    summary = joint_train(SPEC, tmp_path)
    assert summary["history"][-1]["backbone_updates"] > 0 and all(np.isfinite(h["backbone_loss"]) for h in summary["history"])
    assert (tmp_path / "policy.pt").is_file() and (tmp_path / "checkpoint.pt").is_file() and list((tmp_path / "tb").iterdir())
    original, trained = make_backbone("tiny-cascade").module, make_backbone("tiny-cascade").module
    trained.load_state_dict(torch.load(tmp_path / "backbone.pt", weights_only=True))
    assert any(not torch.equal(a, b) for a, b in zip(original.state_dict().values(), trained.state_dict().values()))
    # the record names the members it started from, not those it ended with
    assert summary["start_weights_sha256"] == make_backbone("tiny-cascade").weights_sha256
    assert json.loads((tmp_path / "config.json").read_text())["start_weights_sha256"] == summary["start_weights_sha256"]
    # the members' cross-entropy on the train instances the learned policy routes to each of them falls
    env = RoutingVectorEnv(num_envs=256, backbone="tiny-cascade", split="train", lam=SPEC.lam,
                           backbone_weights=str(tmp_path / "backbone.pt"))
    policy = load_agent(tmp_path, env)
    records = route_split(policy, env)
    train = load_split("synthetic", "train")
    labels = torch.from_numpy(train.labels)

    def routed_loss(members: torch.nn.Module) -> float:
        with torch.no_grad():
            losses = [torch.nn.functional.cross_entropy(m(train.inputs), labels, reduction="none") for m in members]
        return float(torch.stack(losses)[torch.from_numpy(records.exit_position), torch.arange(len(labels))].mean())

    assert routed_loss(trained) < 0.95 * routed_loss(original)
    # and the policy learned: its return beats the untrained policy's on the same backbone
    untrained = make_agent("reinforce", env, seed=SPEC.seed)
    assert records.reward.mean() > route_split(untrained, env).reward.mean() + 0.02


AUGMENTED = JointSpec(backbone="tiny-dynamic-resnet", lam=0.05, epochs=2, num_envs=64, backbone_lr=0.005,
                      backbone_update_every=64, augment=True, backbone_lr_schedule="cosine")
"""A joint run whose random state includes the fresh views' generator (``backbone_augment``), and whose
members' learning rate follows the epoch (``backbone_lr_schedule``)."""


# the default case resumes the cosine schedule too (the scheduler's state in the checkpoint); only the
# fresh views' generator (views_rng) is left to the expensive case: a dynamic backbone's epochs are slow
@pytest.mark.parametrize("spec", [replace(SPEC, backbone_lr_schedule="cosine"), pytest.param(AUGMENTED, marks=pytest.mark.expensive)],
                         ids=["cascade-cosine", "augmented-dynamic"])
def test_a_killed_joint_run_resumes_exactly_where_its_last_epoch_ended(spec: JointSpec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    joint_train(spec, tmp_path / "whole")
    calls = {"n": 0}
    flush = joint.flush

    def dies_in_epoch_two(env):  # noqa: ANN001
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # as a kill: epoch 2 never reaches its checkpoint
        flush(env)

    monkeypatch.setattr(joint, "flush", dies_in_epoch_two)
    with pytest.raises(KeyboardInterrupt):
        joint_train(spec, tmp_path / "killed")
    monkeypatch.setattr(joint, "flush", flush)
    with pytest.raises(ValueError, match="pass --resume"):
        joint_train(spec, tmp_path / "killed")
    with pytest.raises(ValueError, match="written for another run"):
        joint_train(replace(spec, lam=spec.lam * 2), tmp_path / "killed", resume=True)
    # where it runs is not what it computes: another machine's device may resume it
    summary = joint_train(replace(spec, env_kwargs={**spec.env_kwargs, "device": "cpu"}), tmp_path / "killed", resume=True)
    assert summary["epochs"] == 2
    # carried over from the checkpoint: the resumed segment starts from epoch 1's members, the run did not
    assert summary["start_weights_sha256"] == json.loads((tmp_path / "whole" / "joint.json").read_text())["start_weights_sha256"]
    lrs = [h["backbone_lr"] for h in summary["history"]]
    assert lrs == ([spec.backbone_lr, spec.backbone_lr / 2] if spec.backbone_lr_schedule == "cosine" else [spec.backbone_lr] * 2)
    assert ("views_rng" in torch.load(tmp_path / "whole" / "checkpoint.pt", weights_only=True)) == spec.augment
    config = json.loads((tmp_path / "killed" / "config.json").read_text())
    assert config["env"] == ("routing_env/DynamicResNet-v0" if spec.backbone == "tiny-dynamic-resnet" else "routing_env/Cascade-v0")
    for name in ("backbone.pt", "policy.pt"):
        whole = torch.load(tmp_path / "whole" / name, weights_only=True)
        resumed = torch.load(tmp_path / "killed" / name, weights_only=True)
        assert all(torch.equal(whole[k], resumed[k]) for k in whole), name


def test_a_kill_between_the_last_checkpoint_and_the_policy_leaves_no_mismatched_pair(tmp_path: Path,
                                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Killed after the last epoch's checkpoint but before its policy is saved, ``--resume`` has no
    epoch left to run: it must still write the checkpoint's policy beside the checkpoint's members."""
    from routing_env.agents.reinforce import ReinforceAgent

    spec = JointSpec(backbone="tiny-cascade", lam=0.05, epochs=2, num_envs=64, backbone_lr=0.005, backbone_update_every=64)
    joint_train(spec, tmp_path / "whole")
    save, calls = ReinforceAgent.save, {"n": 0}

    def dies_saving_epoch_two(self, directory):  # noqa: ANN001
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # after epoch 2's checkpoint.pt and backbone.pt
        save(self, directory)

    monkeypatch.setattr(ReinforceAgent, "save", dies_saving_epoch_two)
    with pytest.raises(KeyboardInterrupt):
        joint_train(spec, tmp_path / "killed")
    monkeypatch.setattr(ReinforceAgent, "save", save)
    joint_train(spec, tmp_path / "killed", resume=True)
    for name in ("backbone.pt", "policy.pt"):
        whole = torch.load(tmp_path / "whole" / name, weights_only=True)
        resumed = torch.load(tmp_path / "killed" / name, weights_only=True)
        assert all(torch.equal(whole[k], resumed[k]) for k in whole), name


def test_the_cosine_schedule_falls_from_backbone_lr_towards_zero_and_bad_names_are_refused() -> None:
    spec = JointSpec(epochs=10, backbone_lr=0.002, backbone_lr_schedule="cosine")
    lrs = [joint.backbone_lr_at(spec, e) for e in range(10)]
    assert lrs[0] == 0.002 and all(a > b > 0 for a, b in zip(lrs, lrs[1:])) and lrs[-1] < 0.03 * 0.002
    assert joint.backbone_lr_at(JointSpec(backbone_lr=0.002), 9) == 0.002
    with pytest.raises(ValueError, match="unknown backbone_lr_schedule 'step'; expected one of"):
        JointSpec(backbone_lr_schedule="step")


def test_a_checkpoint_from_before_the_schedule_existed_still_resumes(tmp_path: Path) -> None:
    spec = JointSpec(backbone="tiny-cascade", lam=0.05, epochs=1, num_envs=64, backbone_lr=0.005, backbone_update_every=64)
    joint_train(spec, tmp_path)
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    old = json.loads(state["spec"])
    del old["backbone_lr_schedule"]
    torch.save({**state, "spec": json.dumps(old, sort_keys=True)}, tmp_path / "checkpoint.pt")
    longer = JointSpec(**{**old, "epochs": 2})
    with pytest.raises(ValueError, match="was written for another run"):
        joint_train(longer, tmp_path, resume=True)
    assert joint_train(spec, tmp_path, resume=True)["epochs"] == 1


def test_a_time_limit_stops_on_a_whole_epoch_and_resume_ends_where_one_call_would(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    argv = ["joint", "--backbone", "tiny-cascade", "--lam", "0.05", "--epochs", "2", "--num-envs", "64", "--backbone-update-every", "64",
            "--quiet", "--time-limit", "1e-4"]  # the first epoch of a call always runs; the second would not end in time
    assert main([*argv, "--out", str(tmp_path / "limited")]) == 0
    assert "1 of 2 epochs, stopped at the time limit; go on with --resume" in capsys.readouterr().err
    record = json.loads((tmp_path / "limited" / "joint.json").read_text())
    assert record["epochs"] == 1 and record["stopped"]
    assert main([*argv, "--out", str(tmp_path / "limited"), "--resume"]) == 0  # one more epoch per call, and the run is done
    assert "2 of 2 epochs, done" in capsys.readouterr().err
    assert main([*argv[:-2], "--out", str(tmp_path / "whole")]) == 0
    whole, resumed = (torch.load(tmp_path / run / "backbone.pt", weights_only=True) for run in ("whole", "limited"))
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)


def test_joint_cli_and_evaluate_run(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "joint"
    assert main(["joint", "--backbone", "tiny-cascade", "--lam", "0.05", "--epochs", "1", "--out", str(out), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["evaluate", "--run", str(out), "--split", "test", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["n"] == 10_000 and 0.3 < result["accuracy"] <= 1.0
    # the evaluation routes the co-trained members, frozen: the numbers of that environment built by hand
    from routing_env.agents import load_agent
    from routing_env.env import RoutingVectorEnv
    from routing_env.evaluation import route_split, summarize

    assert json.loads((out / "config.json").read_text())["env_kwargs"]["train_backbone"] is True
    env = RoutingVectorEnv(num_envs=64, backbone="tiny-cascade", split="test", backbone_weights=str(out / "backbone.pt"))
    by_hand = summarize(route_split(load_agent(out, env), env), env)
    for key in ("accuracy", "macs_fraction"):
        assert result[key] == pytest.approx(by_hand[key], abs=1e-9), key
    with pytest.raises(ValueError, match="set by the joint run itself"):
        JointSpec(env_kwargs={"split": "val"})


def test_package_cotrained_freezes_the_members_with_their_caches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cifar_root: str,
                                                                 capsys: pytest.CaptureFixture) -> None:
    from routing_env import pretrained
    from routing_env.backbones.resnet import resnet8
    from routing_env.checkpoints import file_sha256, load_state_dict, save_state_dict
    from routing_env.pretrained import split_members

    base = tmp_path / "pre" / "base-cascade"
    base.mkdir(parents=True)
    members = []
    for k in range(2):
        torch.manual_seed(k)
        save_state_dict(resnet8().state_dict(), base / f"m{k}.pt")
        members.append({"model": "resnet8", "weights": f"m{k}.pt", "sha256": file_sha256(base / f"m{k}.pt")})
    (base / "manifest.json").write_text(json.dumps({"name": "base-cascade", "kind": "cascade", "dataset": "cifar10",
                                                    "num_classes": 10, "members": members}))
    monkeypatch.setenv("ROUTING_ENV_PRETRAINED", str(tmp_path / "pre"))
    cotrained = pretrained.load("base-cascade").module
    with torch.no_grad():
        cotrained[1].fc.bias.add_(0.5)
    save_state_dict(cotrained.state_dict(), tmp_path / "backbone.pt")
    (base / "m0.model_card.json").write_text(json.dumps({"test_accuracy": 0.25, "val_accuracy": 0.5}))
    spec = {"backbone": "base-cascade", "lam": 0.03}
    (tmp_path / "config.json").write_text(json.dumps({"provenance": {"cpu": "a CPU", "git_commit": "abc"}}))
    # another run's record beside the weights is refused before anything is written
    (tmp_path / "joint.json").write_text(json.dumps({"spec": {**spec, "backbone": "other"}, "epochs": 2, "history": []}))
    with pytest.raises(ValueError, match="co-trained 'other', not 'base-cascade'"):
        pretrained.package_cotrained("joint-cascade", "base-cascade", tmp_path / "backbone.pt", data_root=cifar_root)
    # a run stopped before its last epoch (a time limit, a kill) is refused unless asked for
    (tmp_path / "joint.json").write_text(json.dumps({"spec": {**spec, "epochs": 3}, "epochs": 1, "stopped": True, "history": []}))
    with pytest.raises(ValueError, match="says the run stopped after epoch 1 of 3: resume it to the end, or pass allow_stopped=True"):
        pretrained.package_cotrained("joint-cascade", "base-cascade", tmp_path / "backbone.pt", data_root=cifar_root)
    (tmp_path / "joint.json").write_text(json.dumps({"spec": spec, "epochs": 2, "history": [{"seconds": 1800.0}, {"seconds": 1800.0}]}))
    (tmp_path / "copy").mkdir()  # the co-trained weights copied beside another run's record and weights
    (tmp_path / "copy" / "elsewhere.pt").write_bytes((tmp_path / "backbone.pt").read_bytes())
    save_state_dict(pretrained.load("base-cascade").module.state_dict(), tmp_path / "copy" / "backbone.pt")
    (tmp_path / "copy" / "joint.json").write_text((tmp_path / "joint.json").read_text())
    with pytest.raises(ValueError, match="is the record of"):
        pretrained.package_cotrained("joint-cascade", "base-cascade", tmp_path / "copy" / "elsewhere.pt", data_root=cifar_root)
    # so are weights that do not fit a member, and a data root without the images of the caches
    wrong = {**cotrained.state_dict(), "1.fc.bias": torch.zeros(3)}
    (tmp_path / "wrong").mkdir()
    save_state_dict(wrong, tmp_path / "wrong" / "backbone.pt")
    with pytest.raises(RuntimeError, match="size mismatch"):
        pretrained.package_cotrained("joint-cascade", "base-cascade", tmp_path / "wrong" / "backbone.pt", data_root=cifar_root)
    with pytest.raises(ValueError, match="cifar10 data at .*no-data is unusable"):
        pretrained.package_cotrained("joint-cascade", "base-cascade", tmp_path / "backbone.pt", data_root=str(tmp_path / "no-data"))
    with pytest.raises(ValueError, match="recalibrate must be an integer >= 0, got -1"):  # else every BatchNorm reset, none re-estimated
        pretrained.package_cotrained("joint-cascade", "base-cascade", tmp_path / "backbone.pt", data_root=cifar_root, recalibrate=-1)
    assert not (tmp_path / "pre" / "joint-cascade").exists()
    folder = pretrained.package_cotrained("joint-cascade", "base-cascade", tmp_path / "backbone.pt", data_root=cifar_root,
                                          note="a test", recalibrate=2)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["cotrained_from"] == "base-cascade" and manifest["note"] == "a test"
    assert manifest["batchnorm_recalibrated_on"] == "2 augmented train batches of 256"
    loaded, original = pretrained.load("joint-cascade").module.state_dict(), cotrained.state_dict()
    # the weights are the co-trained ones; only the BatchNorm statistics were re-estimated
    assert all(torch.equal(loaded[k], original[k]) for k in original if "running" not in k and "num_batches" not in k)
    assert not torch.allclose(loaded["0.bn1.running_mean"], original["0.bn1.running_mean"])
    assert sorted(p.name.split("-")[-2] for p in folder.glob("*.npz")) == ["test", "val"]
    # a card per member, named as its weights: the accuracy evaluate reproduces, where it started, how it was trained
    from routing_env.cli import main

    for position, member in enumerate(manifest["members"]):
        card = json.loads((folder / f"m{position}.model_card.json").read_text())
        assert card["sha256"] == member["sha256"] and card["cotrained_from"] == "base-cascade" and card["note"] == "a test"
        for split in ("val", "test"):
            assert main(["evaluate", "--backbone", "joint-cascade", "--agent", "fixed", "--agent-kwargs", f"position={position}",
                         "--split", split, "--json"]) == 0
            assert json.loads(capsys.readouterr().out)["accuracy"] == card[f"{split}_accuracy"]
        assert card["wall_time_hours"] == 1.0 and card["joint"]["spec"] == spec and card["training_provenance"]["cpu"] == "a CPU"
        assert not card["from_scratch"] and card["started_from"] == "base-cascade's resnet8"
        assert "a CPU" in (folder / f"m{position}.MODEL_CARD.md").read_text()
    assert json.loads((folder / "m0.model_card.json").read_text())["base_test_accuracy"] == 0.25
    assert json.loads((folder / "m1.model_card.json").read_text())["base_test_accuracy"] is None  # the base has no card for it
    # weights with no run record beside them (a train run's, or copied): a card without it, nothing made up
    from routing_env.backbones.cascade import FeatureCache

    (tmp_path / "bare").mkdir()
    (tmp_path / "bare" / "backbone.pt").write_bytes((tmp_path / "backbone.pt").read_bytes())
    assert pretrained.joint_run_record(tmp_path / "bare" / "backbone.pt", "base-cascade") == {}
    caches = {split: FeatureCache(np.zeros((2, 4, 64), np.float32), np.eye(10, dtype=np.float32)[[0, 1, 2, 3]][None].repeat(2, 0),
                                  np.array([0, 1, 2, 9])) for split in ("val", "test")}
    card = pretrained.cotrained_card(manifest, 0, resnet8(), 1, caches, None, {})
    assert card["test_accuracy"] == 0.75 and card["joint"] is None and card["wall_time_hours"] is None and card["training_provenance"] is None
    assert "| joint epochs | – |" in pretrained.cotrained_card_markdown(card) and "Joint run: –" in pretrained.cotrained_card_markdown(card)
    # a from-scratch run's members did not start from the base's weights
    (tmp_path / "bare" / "joint.json").write_text(json.dumps({"spec": {**spec, "dense_epochs": 3}, "epochs": 4, "hours": 0.5, "history": None}))
    record = pretrained.joint_run_record(tmp_path / "bare" / "backbone.pt", "base-cascade")
    card = pretrained.cotrained_card(manifest, 0, resnet8(), 1, caches, {"test_accuracy": 0.25, "val_accuracy": 0.5}, record)
    assert card["from_scratch"] and card["base_test_accuracy"] is None and card["wall_time_hours"] == 0.5
    assert card["started_from"].startswith("random weights")
    with pytest.raises(ValueError, match=r"holds members \[0, 1\], the cascade has 3"):
        split_members(load_state_dict(tmp_path / "backbone.pt"), 3)


# --- backbone_augment: fresh views of the train images while co-training --------------------------
def _features_at(env_kwargs: dict, seed: int, index: list[int]) -> np.ndarray:
    from routing_env.env import RoutingVectorEnv

    env = RoutingVectorEnv(num_envs=len(index), backbone="tiny-dynamic-resnet", split="train", **env_kwargs)
    obs, _ = env.reset(seed=seed, options={"index": np.array(index)})
    return obs["features"]


def test_augmenting_executors_read_fresh_seeded_views() -> None:
    live = {"train_backbone": True}
    index = list(range(16))
    plain = _features_at(live, 0, index)
    a = _features_at({**live, "backbone_augment": True}, 0, index)
    b = _features_at({**live, "backbone_augment": True}, 0, index)
    c = _features_at({**live, "backbone_augment": True}, 1, index)
    assert np.array_equal(a, b)  # reset(seed=...) seeds the views
    assert not np.allclose(a, plain, atol=1e-4) and not np.allclose(a, c, atol=1e-4)


def test_augmented_loss_reads_another_view_of_the_same_instances() -> None:
    from routing_env.env import RoutingVectorEnv

    env = RoutingVectorEnv(num_envs=4, backbone="tiny-dynamic-resnet", split="train", train_backbone=True, backbone_augment=True)
    env.reset(seed=0)
    executor = env.core.executor
    indices = np.arange(32)
    routes = np.full((32, env.core.num_stages), len(env.core.backbone.spec.widths) - 1)  # the widest width everywhere
    exits = np.full(32, env.core.num_stages)
    with torch.no_grad():
        first = executor.loss(indices, routes, exits)
        second = executor.loss(indices, routes, exits)
    assert float(first) != float(second)  # a fresh view each call, where a fixed image gives one loss
    executor.views = None
    with torch.no_grad():
        assert float(executor.loss(indices, routes, exits)) == float(executor.loss(indices, routes, exits))


def test_augmentation_is_refused_where_there_is_nothing_to_crop() -> None:
    from routing_env.env import EnvConfig, RoutingVectorEnv

    with pytest.raises(ValueError, match="true only with train_backbone=True"):
        EnvConfig(backbone="tiny-dynamic-resnet", backbone_augment=True)
    with pytest.raises(ValueError, match=r"augmented views need images \(N, C, H, W\); these inputs have shape \(20000, 16\)"):
        RoutingVectorEnv(num_envs=2, backbone="tiny-cascade", split="train", train_backbone=True, backbone_augment=True)
    with pytest.raises(ValueError, match="set by the joint run itself"):
        JointSpec(env_kwargs={"backbone_augment": True})


# --- backbone_targets="heads": every head on the route learns ----------------------------------
def test_heads_on_route_lists_every_evaluated_head_up_to_the_exit() -> None:
    from routing_env.backbones.base import SKIP_CHOICE
    from routing_env.core import NOT_REACHED
    from routing_env.cotraining import heads_on_route

    instances = np.array([10, 11, 12, 13])
    routes = np.array([[NOT_REACHED, NOT_REACHED], [0, NOT_REACHED], [0, 0], [SKIP_CHOICE, 0]])
    exits = np.array([0, 1, 2, 2])
    rows, kept_routes, positions = heads_on_route(instances, routes, exits, np.array([0, 1, 2]))
    assert sorted(zip(rows.tolist(), positions.tolist())) == [
        (10, 0), (11, 0), (11, 1), (12, 0), (12, 1), (12, 2), (13, 0), (13, 2)]  # 13 skipped member 1
    assert all((kept_routes[i] == routes[instances.tolist().index(r)]).all() for i, r in enumerate(rows.tolist()))
    # a dynamic ResNet evaluates the head after a skipped block too: 13's head at 1 is on its route
    rows, _, positions = heads_on_route(instances, routes, exits, np.array([0, 1, 2]), head_after_skip=True)
    assert sorted(zip(rows.tolist(), positions.tolist())) == [
        (10, 0), (11, 0), (11, 1), (12, 0), (12, 1), (12, 2), (13, 0), (13, 1), (13, 2)]


def test_heads_targets_train_the_exit_head_reached_by_a_skip() -> None:
    """A dynamic ResNet's episode that skips the block before its exit head still trains that head
    under ``heads`` (an update made only of such episodes once had no rows and crashed)."""
    from routing_env.backbones.base import SKIP_CHOICE
    from routing_env.core import NOT_REACHED
    from routing_env.cotraining import BackboneTrainer, CoTraining
    from routing_env.env import RoutingVectorEnv

    env = RoutingVectorEnv(num_envs=2, backbone="tiny-dynamic-resnet", split="train", train_backbone=True)
    spec = env.core.backbone.spec
    k = next(k for k in range(spec.num_stages) if spec.skippable[k] and k + 1 in spec.head_positions)
    route = np.full(spec.num_stages, NOT_REACHED)
    route[:k] = 0
    route[k] = SKIP_CHOICE
    trainer = BackboneTrainer.of(env, CoTraining(lr=0.5, update_every=2, targets="heads"))
    head = env.core.backbone.module.heads[str(k + 1)]
    before = {n: t.clone() for n, t in head.state_dict().items()}
    trainer.record(np.array([0, 1]), np.stack([route, route]), np.array([k + 1, k + 1]))
    assert trainer.updates == 1 and np.isfinite(trainer.last_loss)
    assert any(not torch.equal(before[n], t) for n, t in head.state_dict().items())


def test_heads_targets_train_the_first_member_on_every_instance() -> None:
    """Under ``exit`` a member learns only from the episodes that exited at it; under ``heads`` the
    first member learns from every episode, so it changes even when no episode exits there."""
    from routing_env.cotraining import CoTrainBackbone
    from routing_env.env import RoutingVectorEnv

    changed = {}
    for targets in ("exit", "heads"):
        env = CoTrainBackbone(RoutingVectorEnv(num_envs=32, backbone="tiny-cascade", split="train", train_backbone=True,
                                               backbone_lr=0.05, backbone_update_every=32, backbone_targets=targets))
        first = {k: v.clone() for k, v in env.unwrapped.core.backbone.module[0].state_dict().items()}
        env.reset(seed=0)
        env.step(np.full(32, 2))  # RUN(1), then EXIT at the second member: no episode exits at the first
        env.step(np.full(32, 0))
        assert env.trainer.updates == 1
        after = env.unwrapped.core.backbone.module[0].state_dict()
        changed[targets] = any(not torch.equal(first[k], after[k]) for k in first)
    assert changed == {"exit": False, "heads": True}
    with pytest.raises(ValueError, match="unknown backbone_targets 'all'; expected one of \\('exit', 'heads'\\)"):
        RoutingVectorEnv(num_envs=2, backbone="tiny-cascade", split="train", train_backbone=True, backbone_targets="all")


def test_an_evaluation_drops_the_options_only_co_training_reads() -> None:
    """``joint --augment`` records ``backbone_augment=True``, which a frozen environment refuses: scoring
    the run (``evaluate --run``) drops it with the other co-training options."""
    from routing_env.env import EnvConfig
    from routing_env.experiments.train import COTRAINING_OPTIONS, evaluation_kwargs

    options = {"backbone": "tiny-dynamic-resnet", "train_backbone": True, "backbone_augment": True, "backbone_lr": 0.005,
               "backbone_update_every": 64, "backbone_targets": "heads", "lam": 0.05}
    kwargs = evaluation_kwargs(options, "test", run=Path("run"))
    assert not set(COTRAINING_OPTIONS) & set(kwargs) and kwargs["train_backbone"] is False and kwargs["lam"] == 0.05
    assert kwargs["backbone_weights"] == str(Path("run") / "backbone.pt")
    EnvConfig.from_options(kwargs)  # accepted (it raised "backbone_augment must be ... true only with train_backbone=True")


def test_a_non_finite_co_training_loss_is_refused_before_the_step(monkeypatch: pytest.MonkeyPatch) -> None:
    from routing_env import RoutingEnv
    from routing_env.cotraining import CoTrainBackboneEnv

    env = CoTrainBackboneEnv(RoutingEnv(backbone="tiny-cascade", train_backbone=True, backbone_lr=0.05, backbone_update_every=4))
    trainer = env.trainer
    before = [p.detach().clone() for p in trainer.parameters]
    monkeypatch.setattr(trainer, "loss", lambda *a: sum(p.sum() for p in trainer.parameters) * float("nan"))
    with pytest.raises(FloatingPointError, match="co-training: the backbone's loss is nan after 0 updates"):
        trainer.update(np.arange(4), np.zeros((4, 2), dtype=np.int64), np.ones(4, dtype=np.int64))
    assert all(torch.equal(a, b) for a, b in zip(before, trainer.parameters))


def test_a_non_finite_policy_loss_is_refused_before_the_step(monkeypatch: pytest.MonkeyPatch) -> None:
    """``reinforce`` (the selection module of a joint run) raises rather than apply a NaN step that would
    spoil the policy and the run's next checkpoint."""
    from routing_env import RoutingVectorEnv
    from routing_env.agents import make_agent

    agent = make_agent("reinforce", RoutingVectorEnv(num_envs=16, backbone="tiny-cascade", lam=0.05), seed=0)
    before = {k: v.clone() for k, v in agent.net.state_dict().items()}
    real_value = agent.net.value
    monkeypatch.setattr(agent.net, "value", lambda x: real_value(x) * float("nan"))
    with pytest.raises(FloatingPointError, match="reinforce: the loss is nan"):
        agent.learn(2_000)
    assert all(torch.equal(before[k], v) for k, v in agent.net.state_dict().items())


def test_a_joint_run_whose_checkpoint_is_lost_is_not_started_over(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each epoch's curves are on disk before its checkpoint; a folder that has them and no checkpoint
    (the weights not copied back between sessions) is refused, not silently started over."""
    calls, flush = {"n": 0}, joint.flush

    def dies_in_epoch_two(env):  # noqa: ANN001
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        flush(env)

    monkeypatch.setattr(joint, "flush", dies_in_epoch_two)
    with pytest.raises(KeyboardInterrupt):
        joint_train(SPEC, tmp_path)
    monkeypatch.setattr(joint, "flush", flush)
    assert json.loads((tmp_path / "joint.json").read_text())["stopped"]  # written after each epoch: a killed run says so
    for name in ("checkpoint.pt", "backbone.pt", "policy.pt"):
        (tmp_path / name).unlink()
    with pytest.raises(ValueError, match="holds an earlier run's joint.json and no checkpoint.pt"):
        joint_train(SPEC, tmp_path, resume=True)
    (tmp_path / "joint.json").unlink()  # nothing left but the curves
    with pytest.raises(ValueError, match="holds TensorBoard curves of an earlier run up to epoch 1 and no checkpoint.pt"):
        joint_train(SPEC, tmp_path, resume=True)


def test_a_joint_run_killed_in_its_first_epoch_starts_again_under_the_same_command(tmp_path: Path,
                                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Killed before its first checkpoint, a run has curves (logged at every update) and nothing to resume:
    the same ``--resume`` command starts it again, and the killed epoch's curves are dropped (each step
    drawn once)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    flush = joint.flush

    def dies_in_epoch_one(env):  # noqa: ANN001
        raise KeyboardInterrupt

    monkeypatch.setattr(joint, "flush", dies_in_epoch_one)
    with pytest.raises(KeyboardInterrupt):
        joint_train(SPEC, tmp_path, resume=True)
    assert not (tmp_path / "checkpoint.pt").exists() and list((tmp_path / "tb").iterdir())
    monkeypatch.setattr(joint, "flush", flush)
    assert joint_train(SPEC, tmp_path, resume=True)["epochs"] == SPEC.epochs
    accumulator = EventAccumulator(str(tmp_path / "tb"), size_guidance={"scalars": 0})
    accumulator.Reload()
    steps = [e.step for e in accumulator.Scalars("charts/episodic_return")]
    assert steps == sorted(set(steps)) and [e.value for e in accumulator.Scalars(joint.EPOCH_TAG)] == [1.0, 2.0]
