import json
from pathlib import Path

import numpy as np
import pytest
import torch

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


def test_unknown_pretrained_name(fake_pretrained: Path) -> None:
    with pytest.raises(ValueError, match=r"unknown pretrained model 'nope'; expected one of \['toy-cascade'\]"):
        pretrained.load("nope")
