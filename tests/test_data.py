import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from routing_env.data import SPLITS, augment, cifar_arrays, load_split, val_indices


def write_fixture(root: Path, per_batch: int = 4, test: int = 6) -> dict[str, np.ndarray]:
    """A tiny CIFAR-10 in torchvision's python layout (5 train batches and a test batch)."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    arrays = {}
    for name, n in [(f"data_batch_{i}", per_batch) for i in range(1, 6)] + [("test_batch", test)]:
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n).tolist()
        with open(folder / name, "wb") as f:
            pickle.dump({"batch_label": name, "labels": labels, "data": data, "filenames": [f"{i}.png" for i in range(n)]}, f)
        arrays[name] = data
    return arrays


def test_fixture_loads_with_counts_shapes_and_plane_order(tmp_path: Path) -> None:
    raw = write_fixture(tmp_path)
    out = cifar_arrays("cifar10", tmp_path, sizes=(20, 6))
    assert out["x_train"].shape == (20, 3, 32, 32) and out["x_train"].dtype == np.uint8
    assert out["x_test"].shape == (6, 3, 32, 32) and out["y_train"].dtype == np.int64
    first = raw["data_batch_1"][0]
    np.testing.assert_array_equal(out["x_train"][0, 0], first[:1024].reshape(32, 32))  # the R plane, row-major
    np.testing.assert_array_equal(out["x_train"][0, 2], first[2048:].reshape(32, 32))
    np.testing.assert_array_equal(out["x_train"][4], raw["data_batch_2"][0].reshape(3, 32, 32))


def test_missing_root_says_how_to_point_at_the_data(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=f"cifar10 data at {tmp_path} is unusable: .*data_batch_1 does not exist. Point --data-root or ROUTING_ENV_DATA.*CIFAR10\\(root, download=True\\).*tiny-. backbone needs no data"):
        cifar_arrays("cifar10", tmp_path)


def test_truncated_batch_is_reported(tmp_path: Path) -> None:
    write_fixture(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ValueError, match="truncated or corrupted"):
        cifar_arrays("cifar10", tmp_path, sizes=(20, 6))


def test_wrong_counts_are_reported(tmp_path: Path) -> None:
    write_fixture(tmp_path)
    with pytest.raises(ValueError, match="the train set has 20 images and 20 labels, expected 50000"):
        cifar_arrays("cifar10", tmp_path)


def test_val_indices_are_fixed_and_the_right_size() -> None:
    idx = val_indices()
    assert len(idx) == 5000 and len(np.unique(idx)) == 5000
    np.testing.assert_array_equal(idx, val_indices())
    assert idx.min() >= 0 and idx.max() < 50_000


def test_cifar10_splits_have_the_documented_sizes_and_are_disjoint(cifar_root: str) -> None:
    splits = {s: load_split("cifar10", s, cifar_root) for s in ("train", "val", "test")}
    assert [len(splits[s]) for s in ("train", "val", "test")] == [45_000, 5_000, 10_000]
    assert SPLITS == ("train", "val", "test", "val-aug", "val-fit", "val-holdout", "val-aug-fit")
    assert [len(load_split("cifar10", s, cifar_root)) for s in ("val-fit", "val-holdout")] == [4_000, 1_000]
    for s in splits.values():
        assert s.inputs.dtype == torch.uint8 and s.inputs.shape[1:] == (3, 32, 32) and s.num_classes == 10
    train, val = splits["train"].inputs.reshape(45_000, -1), splits["val"].inputs.reshape(5_000, -1)
    train_rows = {bytes(r) for r in train.numpy()}
    assert not any(bytes(r) in train_rows for r in val.numpy())
    assert splits["test"].labels[:5].tolist() == [3, 8, 8, 0, 6]  # the official test order
    assert np.bincount(splits["test"].labels).tolist() == [1000] * 10


def test_augment_crops_and_flips_in_batch() -> None:
    x = torch.arange(2 * 3 * 32 * 32, dtype=torch.float32).reshape(2, 3, 32, 32)
    out = augment(x, torch.Generator().manual_seed(0), padding=0)
    assert out.shape == x.shape
    for i in range(2):
        assert torch.equal(out[i], x[i]) or torch.equal(out[i], x[i].flip(-1))
    many = 1 + torch.arange(20 * 3 * 32 * 32, dtype=torch.float32).reshape(20, 3, 32, 32)  # no pixel is a padding zero
    out = augment(many, torch.Generator().manual_seed(1))
    assert out.shape == many.shape and out.is_contiguous(memory_format=torch.channels_last)
    padded = torch.nn.functional.pad(many, (4, 4, 4, 4))
    offsets = []
    for i in range(20):  # each view is a 32-pixel window of the zero-padded image, flipped or not
        found = [(dy, dx) for dy in range(9) for dx in range(9) for view in (padded[i, :, dy : dy + 32, dx : dx + 32],)
                 if torch.equal(out[i], view) or torch.equal(out[i], view.flip(-1))]
        assert len(found) == 1, i
        offsets += found
    assert len(set(offsets)) > 5  # the windows move
    flips = [torch.equal(augment(x[:1], torch.Generator().manual_seed(s), padding=0)[0], x[0].flip(-1)) for s in range(20)]
    assert 0 < sum(flips) < 20


def test_val_aug_is_val_and_its_seeded_augmented_views() -> None:
    from routing_env.data import VAL_AUG_VIEWS, augmented_views

    val = load_split("synthetic-image", "val")
    aug = load_split("synthetic-image", "val-aug")
    n = len(val)
    assert len(aug) == VAL_AUG_VIEWS * n and aug.inputs.dtype == val.inputs.dtype
    assert torch.equal(aug.inputs[:n], val.inputs)  # view 0 is the image itself
    np.testing.assert_array_equal(aug.labels, np.tile(val.labels, VAL_AUG_VIEWS))
    assert not torch.equal(aug.inputs[n : 2 * n], val.inputs)
    assert torch.equal(augmented_views(val).inputs, aug.inputs)  # deterministic
    for split in ("val-aug", "val-aug-fit"):  # the error names the split asked for, not the one it is part of
        with pytest.raises(ValueError, match=f"split '{split}' needs images"):
            load_split("synthetic", split)


def test_an_environment_on_val_aug_routes_every_view_of_each_val_image() -> None:
    from routing_env import RoutingVectorEnv

    env = RoutingVectorEnv(num_envs=8, backbone="tiny-dynamic-resnet", split="val-aug")
    plain = RoutingVectorEnv(num_envs=8, backbone="tiny-dynamic-resnet", split="val")
    n = plain.num_instances
    assert env.num_instances == 8 * n
    views, _ = env.reset(seed=0, options={"index": np.arange(8) * n})  # the eight views of val image 0
    image, _ = plain.reset(seed=0, options={"index": np.zeros(8, dtype=np.int64)})
    np.testing.assert_allclose(views["features"][0], image["features"][0], rtol=1e-5, atol=1e-6)  # view 0: the image
    differ = [not np.allclose(views["features"][v], image["features"][0], rtol=1e-3, atol=1e-4) for v in range(1, 8)]
    assert sum(differ) >= 6  # crops and flips (one view in 162 draws the image's own offset, unflipped)
    obs, *_ = env.step(np.full(8, 2))
    assert obs["features"].shape == (8, env.single_observation_space["features"].shape[0])
