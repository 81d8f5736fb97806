import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import shipped_dynamic_card
from routing_env import RoutingEnv, pretrained
from routing_env.backbones import backbone_names, make_backbone
from routing_env.backbones.cascade import FeatureCache
from routing_env.backbones.resnet import resnet8
from routing_env.checkpoints import file_sha256, save_state_dict


@pytest.fixture
def fake_pretrained(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A two-member ResNet-8 'cascade' (random weights) with a shipped test cache and no image data."""
    folder = tmp_path / "toy-cascade"
    folder.mkdir()
    members = []
    for k in range(2):
        torch.manual_seed(k)
        save_state_dict(resnet8().state_dict(), folder / f"m{k}.pt")
        members.append({"model": "resnet8", "weights": f"m{k}.pt", "sha256": file_sha256(folder / f"m{k}.pt")})
    manifest = {"name": "toy-cascade", "kind": "cascade", "dataset": "cifar10", "num_classes": 10, "members": members}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    monkeypatch.setenv("ROUTING_ENV_PRETRAINED", str(tmp_path))
    monkeypatch.setenv("ROUTING_ENV_DATA", str(tmp_path / "no-data-here"))
    cascade = pretrained.load("toy-cascade")
    rng = np.random.default_rng(0)
    cache = FeatureCache(
        rng.random((2, 50, 64), dtype=np.float32), rng.normal(size=(2, 50, 10)).astype(np.float32), rng.integers(0, 10, 50)
    )
    cache.save(folder / cascade.cache_name("cifar10", "test"))
    return folder


def test_pretrained_models_load_by_name_and_route_without_image_data(fake_pretrained: Path) -> None:
    assert "toy-cascade" in backbone_names()
    cascade = make_backbone("toy-cascade")
    assert cascade.spec.num_stages == 1 and cascade.costs.reference == pytest.approx(12_240_128, rel=0.01)
    env = RoutingEnv(backbone="toy-cascade", split="test")
    assert env.num_instances == 50
    env.reset(options={"index": 7})
    *_, info = env.step(0)
    assert info["label"] == env.core.labels[7]


def test_corrupted_weights_are_refused_naming_the_file(fake_pretrained: Path) -> None:
    path = fake_pretrained / "m1.pt"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=f"checkpoint {path} is corrupted: sha256"):
        pretrained.load("toy-cascade")


def test_missing_data_without_a_cache_says_how_to_point_at_it(fake_pretrained: Path) -> None:
    with pytest.raises(ValueError, match="Point --data-root or ROUTING_ENV_DATA"):
        RoutingEnv(backbone="toy-cascade", split="val")


def test_a_broken_manifest_or_cache_is_refused_naming_the_file(fake_pretrained: Path) -> None:
    manifest = fake_pretrained / "manifest.json"
    good = manifest.read_text()
    manifest.write_text(good[:30])
    with pytest.raises(ValueError, match=f"{manifest} is not valid JSON"):
        pretrained.load("toy-cascade")
    manifest.write_text(json.dumps({k: v for k, v in json.loads(good).items() if k != "kind"}))
    with pytest.raises(ValueError, match=r"manifest.json lacks \['kind'\]"):
        pretrained.load("toy-cascade")
    manifest.write_text(json.dumps({k: v for k, v in json.loads(good).items() if k != "members"}))
    with pytest.raises(ValueError, match=r"a cascade manifest needs \['members'\]; it lacks \['members'\]"):
        pretrained.load("toy-cascade")  # a bare KeyError before
    with pytest.raises(ValueError, match=r"a cascade manifest needs \['members'\]"):  # building on it too (a bare KeyError before)
        pretrained.package_cotrained("joint-toy", "toy-cascade", fake_pretrained.parent / "no-backbone.pt", out=fake_pretrained.parent / "joint")
    manifest.write_text(json.dumps({**json.loads(good), "members": [{"model": "resnet8"}]}))
    with pytest.raises(ValueError, match="'members' must be a non-empty list of {model, weights, sha256} objects"):
        pretrained.load("toy-cascade")
    manifest.write_text(good)
    cascade = pretrained.load("toy-cascade")
    cache = fake_pretrained / cascade.cache_name("cifar10", "test")
    rng = np.random.default_rng(0)
    FeatureCache(rng.random((3, 50, 64), dtype=np.float32), rng.normal(size=(3, 50, 10)).astype(np.float32),
                 rng.integers(0, 10, 50)).save(cache)  # a cache of three members for a cascade of two
    with pytest.raises(ValueError, match=f"feature cache {cache} holds 3 members and 10 classes; 'toy-cascade' has 2 and 10"):
        RoutingEnv(backbone="toy-cascade", split="test")
    FeatureCache(rng.random((2, 50, 64), dtype=np.float32), rng.normal(size=(2, 49, 10)).astype(np.float32),
                 rng.integers(0, 10, 50)).save(cache)
    with pytest.raises(ValueError, match=r"holds features \(2, 50, 64\), logits \(2, 49, 10\) and labels \(50,\)"):
        RoutingEnv(backbone="toy-cascade", split="test")
    cache.write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match=f"feature cache {cache} cannot be read"):
        RoutingEnv(backbone="toy-cascade", split="test")


def test_one_broken_manifest_does_not_hide_the_other_models(fake_pretrained: Path) -> None:
    from routing_env.backbones import backbone_catalogue

    half = fake_pretrained.parent / "half-written"
    half.mkdir()
    (half / "manifest.json").write_text('{"name": "half-')
    assert pretrained.load("toy-cascade").spec.num_stages == 1
    assert "toy-cascade" in pretrained.available()
    rows = {row["name"]: row for row in backbone_catalogue()}
    assert rows["toy-cascade"]["error"] is None
    assert rows["half-written"]["error"].startswith(f"{half / 'manifest.json'} is not valid JSON")
    with pytest.raises(ValueError, match=r"unknown pretrained model 'half-written'; expected one of \['toy-cascade'\] .*"
                                         r"these manifests could not be read: .*half-written/manifest.json is not valid JSON"):
        pretrained.load("half-written")
    (fake_pretrained / "m0.model_card.json").write_text("{")  # a member's card that cannot be read: that row's error
    rows = {row["name"]: row for row in backbone_catalogue()}
    assert rows["toy-cascade"]["error"].startswith(f"{fake_pretrained / 'm0.model_card.json'} is not valid JSON")
    assert rows["tiny-cascade"]["error"] is None


def test_unknown_pretrained_name(fake_pretrained: Path) -> None:
    with pytest.raises(ValueError, match=r"unknown pretrained model 'nope'; expected one of \['toy-cascade'\]"):
        pretrained.load("nope")


def test_a_model_loads_by_its_manifests_name_from_any_folder_and_two_of_a_name_are_refused(fake_pretrained: Path) -> None:
    import shutil

    elsewhere = fake_pretrained.parent / "packaged-with-out"  # package_*(..., out=) may name the folder otherwise
    fake_pretrained.rename(elsewhere)
    assert pretrained.load("toy-cascade").spec.num_stages == 1
    shutil.copytree(elsewhere, fake_pretrained.parent / "twin")
    with pytest.raises(ValueError, match="all name 'toy-cascade'"):
        pretrained.load("toy-cascade")
    assert "toy-cascade" in pretrained.available()  # listed, and the other names still load
    with pytest.raises(ValueError, match="unknown pretrained model 'nope'"):
        pretrained.load("nope")
    with pytest.raises(ValueError, match="already names 'toy-cascade'"):  # a package may not add a third
        pretrained.package_dynamic("toy-cascade", fake_pretrained.parent / "no-run", out=fake_pretrained.parent / "third")
    with pytest.raises(ValueError, match="all name 'toy-cascade'"):  # nor be built on one of the two
        pretrained.package_cotrained("joint-toy", "toy-cascade", fake_pretrained.parent / "no-backbone.pt", out=fake_pretrained.parent / "joint")
    with pytest.raises(ValueError, match=r"unknown pretrained cascade 'nope'; expected one of \["):
        pretrained.package_cotrained("joint-toy", "nope", fake_pretrained.parent / "no-backbone.pt", out=fake_pretrained.parent / "joint")
    assert not (fake_pretrained.parent / "joint").exists()


def test_package_cascade_turns_pretrain_runs_into_a_cascade_that_loads_by_name_and_routes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cifar_root: str) -> None:
    """The way the shipped cascades were made (training/README.md), end to end on two one-epoch runs:
    weights and cards copied, the manifest's sha256 and caches, and an environment on the package."""
    from routing_env.pretrain import PretrainArgs, pretrain

    runs = [tmp_path / name for name in ("resnet8", "resnet14")]
    cards = [pretrain(PretrainArgs(backbone=run.name, epochs=1, batch_size=32, subset=96, seed=3), run, data_root=cifar_root,
                      progress=False) for run in runs]
    folder = pretrained.package_cascade("smoke-cascade", runs, data_root=cifar_root, out=tmp_path / "pre" / "smoke-cascade")
    manifest = json.loads((folder / "manifest.json").read_text())
    assert [m["model"] for m in manifest["members"]] == ["resnet8", "resnet14"]
    for member, card in zip(manifest["members"], cards):
        assert member["sha256"] == card["sha256"] == file_sha256(folder / member["weights"])
        assert member["test_accuracy"] == card["test_accuracy"] and (folder / f"{member['model']}.MODEL_CARD.md").is_file()
    assert sorted(manifest["caches"]) == sorted(p.name for p in folder.glob("*.npz")) and len(manifest["caches"]) == 2
    assert all(manifest["caches"][name] == file_sha256(folder / name) for name in manifest["caches"])
    monkeypatch.setenv("ROUTING_ENV_PRETRAINED", str(tmp_path / "pre"))
    monkeypatch.setenv("ROUTING_ENV_DATA", str(tmp_path / "no-data-here"))  # the shipped caches suffice
    env = RoutingEnv(backbone="smoke-cascade", split="test")
    obs, _ = env.reset(seed=0)
    _, _, terminated, _, info = env.step(0)  # EXIT after the first member
    assert terminated and obs["probs"].sum() == pytest.approx(1.0, abs=1e-5)
    assert info["prediction"] == int(obs["probs"].argmax()) and info["correct"] == (info["prediction"] == info["label"])
    # the shipped test cache is the packaged members' own: each one's accuracy on the images its card was scored on
    cache = pretrained.load("smoke-cascade").feature_cache("cifar10", "test")
    for k, card in enumerate(cards):
        assert float((cache.logits[k, :96].argmax(1) == cache.labels[:96]).mean()) == pytest.approx(card["test_accuracy"]), card["model"]


def test_package_cascade_refuses_two_members_of_one_architecture_before_writing(tmp_path: Path) -> None:
    runs = []
    for k in range(2):
        run = tmp_path / f"run{k}"
        run.mkdir()
        (run / "model_card.json").write_text(json.dumps({"model": "resnet8", "dataset": "cifar10"}))
        runs.append(run)
    with pytest.raises(ValueError, match=r"repeat the architecture \['resnet8'\]"):
        pretrained.package_cascade("two-eights", runs, out=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_package_cascade_checks_every_run_before_writing(tmp_path: Path) -> None:
    from routing_env.backbones.resnet import resnet8, resnet14
    from routing_env.checkpoints import save_state_dict

    runs = []
    for model, net in (("resnet8", resnet8()), ("resnet14", resnet14())):
        run = tmp_path / model
        run.mkdir()
        save_state_dict(net.state_dict(), run / "weights.pt")
        (run / "model_card.json").write_text(json.dumps({"model": model, "dataset": "cifar10", "weights": "weights.pt",
                                                         "sha256": file_sha256(run / "weights.pt")}))
        runs.append(run)
    card = json.loads((runs[1] / "model_card.json").read_text())
    (runs[1] / "model_card.json").write_text(json.dumps({**card, "sha256": "0" * 64}))  # the second run's weights are not its card's
    with pytest.raises(ValueError, match="sha256"):
        pretrained.package_cascade("damaged", runs, out=tmp_path / "out")
    (runs[1] / "model_card.json").write_text(json.dumps({**card, "dataset": "svhn"}))
    with pytest.raises(ValueError, match="trained on 'svhn', not 'cifar10'"):
        pretrained.package_cascade("mixed", runs, out=tmp_path / "out")
    (runs[1] / "model_card.json").write_text(json.dumps(card))
    with pytest.raises(ValueError, match="cifar10 data at .*no-data.* is unusable"):  # the caches' images, checked first too
        pretrained.package_cascade("no-images", runs, data_root=str(tmp_path / "no-data"), out=tmp_path / "out")
    save_state_dict(resnet14(num_classes=100).state_dict(), runs[1] / "weights.pt")
    (runs[1] / "model_card.json").write_text(json.dumps({**card, "sha256": file_sha256(runs[1] / "weights.pt")}))
    with pytest.raises(ValueError, match=r"the members' heads have \[10, 100\] classes"):
        pretrained.package_cascade("ten-and-a-hundred", runs, out=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_refused_package_leaves_the_package_in_its_folder_as_it_was(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Packaging again into a model's own folder is allowed; a run refused there (its weights are not its
    card's) must not have overwritten the weights the manifest vouches for."""
    from routing_env.backbones.resnet import resnet20_dynamic

    run = tmp_path / "run"
    run.mkdir()
    save_state_dict(resnet20_dynamic().state_dict(), run / "weights.pt")
    card = {"model": "resnet20-dynamic", "dataset": "cifar10", "weights": "weights.pt", "sha256": file_sha256(run / "weights.pt"),
            "num_blocks": 9, "exits": "stage", "test_accuracy": 0.1, "macs": 1}
    (run / "model_card.json").write_text(json.dumps(card))
    (run / "MODEL_CARD.md").write_text("# card\n")
    monkeypatch.setenv("ROUTING_ENV_PRETRAINED", str(tmp_path / "pre"))
    folder = pretrained.package_dynamic("toy-dynamic", run)
    before = {path.name: path.read_bytes() for path in folder.iterdir()}
    torch.manual_seed(1)
    save_state_dict(resnet20_dynamic().state_dict(), run / "weights.pt")  # new weights, the card's sha256 still the old ones'
    with pytest.raises(ValueError, match="sha256"):
        pretrained.package_dynamic("toy-dynamic", run)
    assert {path.name: path.read_bytes() for path in folder.iterdir()} == before
    (run / "model_card.json").write_text(json.dumps({**card, "sha256": file_sha256(run / "weights.pt")}))
    (run / "MODEL_CARD.md").unlink()  # a run that lacks a file it ships: refused before its weights are written
    with pytest.raises(FileNotFoundError, match="MODEL_CARD.md"):
        pretrained.package_dynamic("toy-dynamic", run)
    assert {path.name: path.read_bytes() for path in folder.iterdir()} == before
    assert pretrained.load("toy-dynamic").name == "toy-dynamic"
    with pytest.raises(FileNotFoundError):
        pretrained.package_dynamic("toy-dynamic-2", tmp_path / "no-run")
    assert not (tmp_path / "pre" / "toy-dynamic-2").exists()


# --- the shipped CIFAR-10 cascade -------------------------------------------------------------------
SHIPPED_CASCADES = ("cifar10-resnet-cascade", "cifar10-resnet-cascade-5", "cifar10-resnet-cascade-5-joint", "cifar10-resnet-cascade-5-kd",
                    "cifar10-resnet-cascade-6", "cifar10-resnet-cascade-6-kd20")
"""The default three-member cascade, the five-member one (ResNet-14 and -32 added), the five
co-trained with a selection module (issue 13's joint training), five with a 160-epoch ResNet-56
and a ResNet-8 and -14 distilled from it, those five with a ResNet-110 after them, and those six
with a distilled ResNet-20."""


def shipped_cards(name: str = "cifar10-resnet-cascade") -> list[dict]:
    folder = Path(__file__).resolve().parents[1] / "pretrained" / name
    manifest = json.loads((folder / "manifest.json").read_text())
    return [json.loads((folder / f"{m['model']}.model_card.json").read_text()) for m in manifest["members"]]


def test_shipped_cascade_is_the_default_and_grows_at_least_2x_per_member() -> None:
    from routing_env.backbones import DEFAULT_BACKBONE
    from routing_env.env import EnvConfig

    assert EnvConfig().backbone == DEFAULT_BACKBONE == "cifar10-resnet-cascade"
    cascade = pretrained.load("cifar10-resnet-cascade")
    assert cascade.member_names == ["resnet8", "resnet20", "resnet56"]
    macs = cascade.member_macs
    assert all(b >= 2 * a for a, b in zip(macs, macs[1:]))
    assert macs[2] == pytest.approx(125.5e6, rel=0.01) and cascade.costs.reference == macs[2]
    assert [card["macs"] for card in shipped_cards()] == pytest.approx(macs, rel=1e-6)


def test_the_five_member_cascade_adds_resnet14_and_resnet32_to_the_default_ones() -> None:
    default, five = pretrained.load("cifar10-resnet-cascade"), pretrained.load("cifar10-resnet-cascade-5")
    assert five.member_names == ["resnet8", "resnet14", "resnet20", "resnet32", "resnet56"]
    macs = five.member_macs
    assert all(b > a for a, b in zip(macs, macs[1:])) and five.costs.reference == default.costs.reference == macs[-1]
    kept = {m["model"]: m["sha256"] for m in pretrained.folder_of("cifar10-resnet-cascade")[1]["members"]}
    added = {m["model"]: m["sha256"] for m in pretrained.folder_of("cifar10-resnet-cascade-5")[1]["members"]}
    assert {m: added[m] for m in kept} == kept  # the shared members are the same weights


def test_the_cotrained_cascade_is_the_five_members_retrained_and_its_cards_say_from_what() -> None:
    _, base = pretrained.folder_of("cifar10-resnet-cascade-5")
    _, joint = pretrained.folder_of("cifar10-resnet-cascade-5-joint")
    assert joint["cotrained_from"] == "cifar10-resnet-cascade-5" and "routing-env joint" in joint["note"]
    assert [m["model"] for m in joint["members"]] == [m["model"] for m in base["members"]]
    moved = [any(not torch.equal(a[k], b[k]) for k in a if "running" not in k and "num_batches" not in k)
             for a, b in zip(pretrained.load("cifar10-resnet-cascade-5-joint").module, pretrained.load("cifar10-resnet-cascade-5").module)
             for a, b in [(a.state_dict(), b.state_dict())]]
    assert all(moved)  # co-training moved every member's weights, not only its BatchNorm statistics
    for before, after in zip(shipped_cards("cifar10-resnet-cascade-5"), shipped_cards("cifar10-resnet-cascade-5-joint")):
        assert after["base_test_accuracy"] == before["test_accuracy"] and after["base_val_accuracy"] == before["val_accuracy"]
        assert after["joint"]["spec"]["backbone"] == "cifar10-resnet-cascade-5" and after["wall_time_hours"] > 0
        assert not after["from_scratch"] and after["training_provenance"]["git_commit"]


def members_against(base: str, name: str) -> tuple[list[str], dict[str, str], dict[str, dict], dict[str, dict]]:
    """Package ``name``'s members against ``base``'s, which must be the same architectures in the same
    order: the models whose weights changed, ``name``'s sha256 by model, and each package's cards by model."""
    _, old = pretrained.folder_of(base)
    _, new = pretrained.folder_of(name)
    models = [m["model"] for m in new["members"]]
    assert models == [m["model"] for m in old["members"]]
    before = {m["model"]: m["sha256"] for m in old["members"]}
    after = {m["model"]: m["sha256"] for m in new["members"]}
    changed = [m for m in models if after[m] != before[m]]
    return changed, after, dict(zip(models, shipped_cards(name))), dict(zip(models, shipped_cards(base)))


def test_the_distilled_cascade_keeps_the_middle_members_and_its_cards_name_the_teacher() -> None:
    changed, after, cards, replaced = members_against("cifar10-resnet-cascade-5", "cifar10-resnet-cascade-5-kd")
    assert changed == ["resnet8", "resnet14", "resnet56"]  # resnet20 and resnet32 kept
    assert cards["resnet56"]["epochs"] == 160 and cards["resnet56"]["test_accuracy"] > replaced["resnet56"]["test_accuracy"]
    for student in ("resnet8", "resnet14"):  # distilled from the cascade's own last member, and better than the member it replaces
        assert cards[student]["teacher_sha256"] == after["resnet56"] and "--teacher" in cards[student]["command"]
        assert cards[student]["test_accuracy"] > replaced[student]["test_accuracy"]


def test_the_six_member_cascade_is_the_distilled_five_and_a_resnet110_that_sets_its_costs() -> None:
    """The seed paper compares a cascade with its own largest ResNet: here ResNet-110, the reference
    every cost fraction of this cascade is taken against (about twice ResNet-56's MACs)."""
    _, kd = pretrained.folder_of("cifar10-resnet-cascade-5-kd")
    _, six = pretrained.folder_of("cifar10-resnet-cascade-6")
    assert [(m["model"], m["sha256"]) for m in six["members"][:-1]] == [(m["model"], m["sha256"]) for m in kd["members"]]
    assert six["members"][-1]["model"] == "resnet110"
    cascade = pretrained.load("cifar10-resnet-cascade-6")
    macs = cascade.member_macs
    assert cascade.costs.reference == macs[-1] and 1.9 < macs[-1] / macs[-2] < 2.1
    card = shipped_cards("cifar10-resnet-cascade-6")[-1]
    assert card["epochs"] == 160 and card["macs"] == pytest.approx(macs[-1], rel=1e-6) and "teacher_sha256" not in card


def test_the_six_with_a_distilled_resnet20_change_only_that_member() -> None:
    changed, after, cards, replaced = members_against("cifar10-resnet-cascade-6", "cifar10-resnet-cascade-6-kd20")
    assert changed == ["resnet20"]
    card = cards["resnet20"]
    assert card["teacher_sha256"] == after["resnet56"] and card["epochs"] == 160
    assert card["test_accuracy"] > replaced["resnet20"]["test_accuracy"]
    cascade = pretrained.load("cifar10-resnet-cascade-6-kd20")
    assert cascade.costs.reference == cascade.member_macs[-1]


@pytest.mark.parametrize("name", SHIPPED_CASCADES)
def test_shipped_cascade_routes_with_no_image_data(name: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ROUTING_ENV_DATA", str(tmp_path / "no-data-here"))
    for split, n in (("val", 5000), ("test", 10000)):
        env = RoutingEnv(backbone=name, split=split)
        assert env.num_instances == n
        obs, _ = env.reset(seed=0)
        assert obs["features"].shape == (64,) and obs["probs"].shape == (10,)


@pytest.mark.parametrize("name", SHIPPED_CASCADES)
@pytest.mark.parametrize("split", ["val", "test"])
def test_fixed_agent_reproduces_each_model_card(name: str, split: str, capsys: pytest.CaptureFixture) -> None:
    from routing_env.cli import main

    for position, card in enumerate(shipped_cards(name)):
        assert main(["evaluate", "--backbone", name, "--agent", "fixed", "--agent-kwargs", f"position={position}",
                     "--split", split, "--json"]) == 0
        result = json.loads(capsys.readouterr().out)
        assert result["accuracy"] == card[f"{split}_accuracy"], card["model"]


@pytest.mark.parametrize("name", SHIPPED_CASCADES)
def test_loaded_models_predict_the_shipped_logits_and_features(name: str, cifar_root: str) -> None:
    from routing_env.data import load_split

    cascade = pretrained.load(name)
    shipped = cascade.feature_cache("cifar10", "test")
    test = load_split("cifar10", "test", cifar_root)
    index = np.arange(0, len(test), 625)  # 16 images spread over the split
    rebuilt = cascade.compute_cache(dataclasses.replace(test, inputs=test.inputs[index], labels=test.labels[index]))
    np.testing.assert_array_equal(rebuilt.labels, shipped.labels[index])
    np.testing.assert_allclose(rebuilt.logits, shipped.logits[:, index], atol=1e-4)
    np.testing.assert_allclose(rebuilt.features, shipped.features[:, index], atol=1e-4)
    assert (rebuilt.logits.argmax(2) == shipped.logits[:, index].argmax(2)).all()


# the default suite rebuilds 16 test images of the cache (above) and reproduces every member's card
# accuracy from the shipped val/test caches; the whole caches, val's included, only here
@pytest.mark.expensive
@pytest.mark.parametrize("name", SHIPPED_CASCADES)
@pytest.mark.parametrize("split", ["val", "test"])
def test_rebuilding_a_whole_shipped_cache_matches_it(name: str, split: str, cifar_root: str) -> None:
    from routing_env.data import load_split

    cascade = pretrained.load(name)
    shipped = cascade.feature_cache("cifar10", split)
    rebuilt = cascade.compute_cache(load_split("cifar10", split, cifar_root))
    np.testing.assert_array_equal(rebuilt.labels, shipped.labels)
    np.testing.assert_allclose(rebuilt.logits, shipped.logits, atol=1e-4)
    assert (rebuilt.logits.argmax(2) == shipped.logits.argmax(2)).all()


def test_shipped_dynamic_resnet_is_the_dynamic_default() -> None:
    import gymnasium as gym

    from routing_env.backbones import DYNAMIC_BACKBONE

    assert DYNAMIC_BACKBONE == "cifar10-resnet20-dynamic"
    env = gym.make("routing_env/DynamicResNet-v0").unwrapped
    backbone = env.core.backbone
    assert backbone.spec.num_stages == 9 and backbone.spec.widths == (0.25, 0.5, 0.75, 1.0)
    assert backbone.costs.reference == pytest.approx(40.55e6, rel=0.01) == shipped_dynamic_card()["macs"]


def evaluate_json(capsys: pytest.CaptureFixture, *args: str) -> dict:
    from routing_env.cli import main

    assert main(["evaluate", "--env", "routing_env/DynamicResNet-v0", "--split", "test", "--json", *args]) == 0
    return json.loads(capsys.readouterr().out)


def test_dynamic_card_full_path_reproduces(cifar_root: str, capsys: pytest.CaptureFixture) -> None:
    card = shipped_dynamic_card()
    result = evaluate_json(capsys, "--agent", "fixed")
    # the environment runs blocks on groups of images, the card on batches of 500: float rounding may differ
    assert result["accuracy"] == pytest.approx(card["test_accuracy"], abs=3e-4)


# the default suite reproduces the card's full path (above); the narrow and early-exit routes' card
# figures only here. Their machinery (the rescaled narrow blocks, the exits) is checked against the model's
# own forward on the tiny backbone by default (test_rescale, test_dynamic), not on the shipped weights.
@pytest.mark.expensive
def test_dynamic_card_routes_reproduce(cifar_root: str, capsys: pytest.CaptureFixture) -> None:
    routes = {r["route"]: r for r in shipped_dynamic_card()["routes_on_test"]}
    for j, w in enumerate((0.25, 0.5, 0.75)):
        result = evaluate_json(capsys, "--agent", "fixed", "--agent-kwargs", f"width={j}")
        assert result["accuracy"] == pytest.approx(routes[f"width {w:g}"]["accuracy"], abs=3e-4)
    for p in (3, 6):
        result = evaluate_json(capsys, "--agent", "fixed", "--agent-kwargs", f"position={p}")
        assert result["accuracy"] == pytest.approx(routes[f"exit after block {p}"]["accuracy"], abs=3e-4)


def test_block_exit_model_is_the_stage_exit_model_plus_six_heads() -> None:
    """``cifar10-resnet20-dynamic-exits`` was trained with ``--heads-only``: every weight and BatchNorm
    statistic of the default dynamic model is in it unchanged, so each route of the default keeps its
    accuracy on its card, and the card lists an exit after every block."""
    stage = pretrained.load("cifar10-resnet20-dynamic").model.state_dict()
    block = pretrained.load("cifar10-resnet20-dynamic-exits").model.state_dict()
    assert set(block) - set(stage) == {f"heads.{p}.fc.{t}" for p in (1, 2, 4, 5, 7, 8) for t in ("weight", "bias")}
    assert all(torch.equal(stage[k], block[k]) for k in stage)
    old = {r["route"]: r for r in shipped_dynamic_card()["routes_on_test"]}
    new = {r["route"]: r for r in shipped_dynamic_card("cifar10-resnet20-dynamic-exits")["routes_on_test"]}
    assert set(new) - set(old) == {f"exit after block {p}" for p in (1, 2, 4, 5, 7, 8)}
    assert all(new[name]["accuracy"] == old[name]["accuracy"] for name in old)


@pytest.mark.expensive  # the default suite keeps the dynamic card's full path and that -exits is that model plus six heads
def test_block_exit_card_reproduces_at_an_added_head(cifar_root: str, capsys: pytest.CaptureFixture) -> None:
    routes = {r["route"]: r for r in shipped_dynamic_card("cifar10-resnet20-dynamic-exits")["routes_on_test"]}
    result = evaluate_json(capsys, "--backbone", "cifar10-resnet20-dynamic-exits", "--agent", "fixed", "--agent-kwargs", "position=4")
    assert result["accuracy"] == pytest.approx(routes["exit after block 4"]["accuracy"], abs=3e-4)
