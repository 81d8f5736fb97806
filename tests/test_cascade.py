import numpy as np
import pytest
import torch

from routing_env.backbones import Cascade, FeatureCache, make_backbone
from routing_env.backbones.cascade import MLPClassifier
from routing_env.data import load_split, synthetic_difficulty


@pytest.fixture(scope="module")
def cascade() -> Cascade:
    return make_backbone("tiny-cascade")


def test_tiny_cascade_costs_increase_and_reference_is_the_largest_member(cascade: Cascade) -> None:
    c = cascade.costs
    member_macs = [c.prefix + c.head[0]] + [c.stage[k, 0] + c.head[k + 1] for k in range(cascade.spec.num_stages)]
    assert all(b > 2 * a for a, b in zip(member_macs, member_macs[1:]))
    assert c.reference == max(member_macs)


def test_routing_matters_on_synthetic_data(cascade: Cascade) -> None:
    split = load_split("synthetic", "test")
    _, _, level = synthetic_difficulty(len(split), 3)
    cache = cascade.compute_cache(split)
    right = cache.logits.argmax(axis=2) == split.labels
    easy, hard = level == 0, level == 2
    assert right[0, easy].mean() > 0.95  # the small net is right on easy instances
    assert right[0, hard].mean() < 0.5 and right[-1, hard].mean() > 0.85  # only the large one on hard ones
    assert right[0].mean() < right[1].mean() < right[2].mean()


def test_feature_cache_round_trip_and_reuse(cascade: Cascade, tmp_path) -> None:
    built = Cascade(list(cascade.classifiers), (16,), name="t", cache_dir=tmp_path)
    first = built.feature_cache("synthetic", "val")
    path = built.cache_path("synthetic", "val")
    assert path.is_file() and built.sha256[:16] in path.name
    loaded = FeatureCache.load(path)
    np.testing.assert_array_equal(loaded.features, first.features)
    np.testing.assert_array_equal(loaded.logits, first.logits)
    np.testing.assert_array_equal(loaded.labels, load_split("synthetic", "val").labels)
    # a cache is a cache: the second call reads the file rather than recomputing
    np.savez(path, features=first.features + 1, logits=first.logits, labels=first.labels)
    np.testing.assert_array_equal(built.feature_cache("synthetic", "val").features, first.features + 1)


def test_shipped_caches_are_read_first_and_never_written(cascade: Cascade, tmp_path) -> None:
    shipped, user = tmp_path / "shipped", tmp_path / "user"
    shipped.mkdir()
    built = Cascade(list(cascade.classifiers), (16,), name="t", cache_dir=user, shipped_dir=shipped)
    cache = built.compute_cache(load_split("synthetic", "test"))
    marked = FeatureCache(cache.features, cache.logits, cache.labels + 100)
    marked.save(shipped / built.cache_name("synthetic", "test"))
    np.testing.assert_array_equal(built.feature_cache("synthetic", "test").labels, cache.labels + 100)
    assert not user.exists()
    built.feature_cache("synthetic", "val")
    assert (user / built.cache_name("synthetic", "val")).is_file()
    assert not (shipped / built.cache_name("synthetic", "val")).exists()


def test_cache_key_changes_with_the_weights(cascade: Cascade, tmp_path) -> None:
    members = [MLPClassifier(16, (4,), 4), MLPClassifier(16, (8,), 4)]
    a = Cascade(members, (16,), name="m", cache_dir=tmp_path)
    with torch.no_grad():
        members[1].fc.bias += 1.0
    b = Cascade(members, (16,), name="m", cache_dir=tmp_path)
    assert a.cache_path("synthetic", "val") != b.cache_path("synthetic", "val")


def test_executor_lookups_equal_the_classifiers_outputs(cascade: Cascade) -> None:
    split = load_split("synthetic", "val")
    ex = cascade.executor("synthetic", "val", num_slots=3)
    slots, idx = np.arange(3), np.array([4, 9, 100])
    x = split.inputs[idx]
    with torch.no_grad():
        f0 = cascade.classifiers[0].features(x)
        f2 = cascade.classifiers[2].features(x)
        ex.begin(slots, idx)
        np.testing.assert_allclose(ex.features(slots)[:, :4], f0.numpy(), rtol=1e-5)
        np.testing.assert_allclose(ex.head(slots, np.zeros(3, dtype=np.int64)), cascade.classifiers[0].head(f0).numpy(), rtol=1e-5, atol=1e-6)
        ex.skip(slots, 0)
        np.testing.assert_allclose(ex.features(slots)[:, :4], f0.numpy(), rtol=1e-5)  # skipping keeps the features
        ex.run(slots, 0, 0)
        ex.run(slots, 1, 0)
        np.testing.assert_allclose(ex.features(slots), f2.numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(ex.head(slots, np.full(3, 2)), cascade.classifiers[2].head(f2).numpy(), rtol=1e-5, atol=1e-5)
        ex.begin(slots[:1], idx[:1])  # one slot restarts: only its features go back to classifier 0's
        np.testing.assert_allclose(ex.features(slots)[0, :4], f0.numpy()[0], rtol=1e-5)
        np.testing.assert_allclose(ex.features(slots)[1:], f2.numpy()[1:], rtol=1e-5, atol=1e-6)


def test_a_cascade_needs_two_members() -> None:
    with pytest.raises(ValueError, match="at least 2 classifiers"):
        Cascade([MLPClassifier(16, (4,), 4)], (16,), name="x")
