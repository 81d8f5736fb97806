"""LC-Net's learned rescaling of narrowed and skipped blocks (``DynamicResNet(rescale=True)``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from routing_env.backbones.dynamic import DynamicResNetBackbone, dynamic_costs, tiny_dynamic_model
from routing_env.backbones.resnet import SKIP_CHOICE, DynamicResNet, global_pool, inference_copy
from routing_env.checkpoints import save_state_dict
from routing_env.data import SYNTHETIC_CLASSES, SYNTHETIC_IMAGE_SIZE, load_split
from routing_env.pretrain import PretrainArgs, build_model

FULL = 3  # the full width's index


def rescaled_tiny(random_scales: bool = True) -> tuple[DynamicResNet, DynamicResNet]:
    """The tiny dynamic ResNet, and the same weights with rescaling (random scales in [0.5, 1.5], or 1)."""
    plain = tiny_dynamic_model()
    scaled = DynamicResNet(14, SYNTHETIC_CLASSES, base_width=4, rescale=True)
    result = scaled.load_state_dict(plain.state_dict(), strict=False)
    assert not result.unexpected_keys and all("scale_" in key for key in result.missing_keys)
    if random_scales:
        generator = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for name, p in scaled.named_parameters():
                if "scale_" in name:
                    p.copy_(torch.rand(p.shape, generator=generator) + 0.5)
    return plain, scaled.eval()


def random_routes(model: DynamicResNet, count: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(seed)
    routes = rng.integers(0, len(model.widths), size=(count, model.num_blocks))
    skippable = np.array([b.skippable for b in model.blocks])
    routes[(rng.random(routes.shape) < 0.4) & skippable] = SKIP_CHOICE
    exits = rng.choice(model.exit_positions, size=count)
    return torch.from_numpy(routes), torch.from_numpy(exits)


def test_scales_at_one_compute_the_unscaled_network() -> None:
    plain, scaled = rescaled_tiny(random_scales=False)
    x = load_split("synthetic-image", "val").inputs[:16]
    routes, exits = random_routes(plain, 16)
    with torch.no_grad():
        assert torch.allclose(scaled.forward_routes(x, routes, exits), plain.forward_routes(x, routes, exits), atol=1e-6)


def test_full_path_is_never_rescaled_and_other_routes_are() -> None:
    plain, scaled = rescaled_tiny()
    x = load_split("synthetic-image", "val").inputs[:16]
    routes, exits = random_routes(plain, 16)
    with torch.no_grad():
        assert torch.equal(scaled(x), plain(x))
        assert not torch.allclose(scaled.forward_routes(x, routes, exits), plain.forward_routes(x, routes, exits), atol=1e-3)
        k = next(k for k, b in enumerate(scaled.blocks) if b.skippable)
        h = torch.rand(2, scaled.channels[k], 8, 8)
        block, reference = scaled.blocks[k], plain.blocks[k]
        assert torch.equal(block.skip(h), h * block.scale_skip.view(1, -1, 1, 1))
        assert torch.allclose(block(h, 0), reference(h, 0) * block.scale_width[0].view(1, -1, 1, 1))
        assert torch.equal(block(h, FULL), reference(h, FULL))
        unskippable = next(b for b in scaled.blocks if not b.skippable)
        with pytest.raises(ValueError, match="cannot be skipped"):
            unskippable.skip(h)


def test_inference_copy_keeps_the_scales() -> None:
    _, scaled = rescaled_tiny()
    x = load_split("synthetic-image", "val").inputs[:16]
    routes, exits = random_routes(scaled, 16, seed=1)
    with torch.no_grad():
        expected = scaled.forward_routes(x, routes, exits)
        folded = inference_copy(scaled, channels_last=False).forward_routes(x, routes, exits)
    assert torch.allclose(folded, expected, atol=1e-4)


def test_the_inference_copy_differentiates_in_its_input_as_the_network_does() -> None:
    """The in-place inference block keeps its input's gradient (the compute attack needs it): under
    autograd its scale allocates instead of overwriting the ReLU's saved output, and the gradient
    along narrowed, skipped and full routes equals the network's."""
    _, scaled = rescaled_tiny()
    folded = inference_copy(scaled, channels_last=True)
    x = load_split("synthetic-image", "val").inputs[:16].float() / 255
    routes, exits = random_routes(scaled, 16, seed=2)
    grads = []
    for model in (scaled, folded):
        xi = x.clone().requires_grad_(True)
        model.forward_routes(xi, routes, exits).logsumexp(1).sum().backward()
        grads.append(xi.grad)
    assert torch.isfinite(grads[1]).all() and grads[1].abs().sum() > 0
    assert torch.allclose(grads[1], grads[0], atol=1e-4, rtol=1e-3)
    with torch.inference_mode():  # and in place without autograd, the same outputs
        assert torch.allclose(folded.forward_routes(x, routes, exits), scaled.forward_routes(x, routes, exits), atol=1e-4)


def test_costs_count_one_multiply_per_output_element_of_a_rescaled_block() -> None:
    plain, scaled = rescaled_tiny()
    shape = (3, SYNTHETIC_IMAGE_SIZE, SYNTHETIC_IMAGE_SIZE)
    base, rescaled = dynamic_costs(plain, shape), dynamic_costs(scaled, shape)
    backbone = DynamicResNetBackbone(scaled, "rescaled", shape)
    for k, block in enumerate(scaled.blocks):
        elements = float(np.prod(backbone.map_shapes[k + 1]))
        np.testing.assert_allclose(rescaled.stage[k, :FULL] - base.stage[k, :FULL], elements)
        assert rescaled.stage[k, FULL] == base.stage[k, FULL]
        assert rescaled.skip[k] == (elements if block.skippable else 0.0)
    assert rescaled.reference == base.reference


def test_the_environment_executor_follows_the_rescaled_network() -> None:
    _, scaled = rescaled_tiny()
    shape = (3, SYNTHETIC_IMAGE_SIZE, SYNTHETIC_IMAGE_SIZE)
    executor = DynamicResNetBackbone(scaled, "rescaled", shape).executor("synthetic-image", "val", num_slots=4)
    slots, indices = np.arange(4), np.arange(4)
    route = [0 if not b.skippable else SKIP_CHOICE for b in scaled.blocks]  # every skippable block skipped, the rest narrow
    executor.begin(slots, indices)
    for k, choice in enumerate(route):
        executor.skip(slots, k) if choice == SKIP_CHOICE else executor.run(slots, k, choice)
    with torch.no_grad():
        x = load_split("synthetic-image", "val").inputs[:4]
        h = scaled.stem(x)
        for k, choice in enumerate(route):
            h = scaled.blocks[k].skip(h) if choice == SKIP_CHOICE else scaled.blocks[k](h, choice)
        logits = scaled.head(scaled.num_blocks, h)
    np.testing.assert_allclose(executor.features(slots), global_pool(h).numpy(), atol=1e-4)
    np.testing.assert_allclose(executor.head(slots, np.full(4, scaled.num_blocks)), logits.numpy(), atol=1e-4)


def test_pretrain_adds_scales_at_one_to_weights_without_them(tmp_path: Path) -> None:
    plain = DynamicResNet(20)
    path = tmp_path / "dynamic.pt"
    save_state_dict(plain.state_dict(), path)
    model = build_model(PretrainArgs(backbone="resnet20-dynamic", init=str(path), rescale=True), 10)
    assert model.rescale
    state = model.state_dict()
    for key, value in plain.state_dict().items():
        assert torch.equal(state[key], value)
    scales = [v for k, v in state.items() if "scale_" in k]
    assert scales and all(bool((v == 1).all()) for v in scales)
    with pytest.raises(ValueError, match="rescale is for dynamic backbones"):
        PretrainArgs(backbone="resnet20", rescale=True)


def test_a_latency_profile_prices_a_rescaled_skip_and_leaves_a_plain_one_free() -> None:
    from routing_env.latency import profile

    plain, scaled = rescaled_tiny()
    shape = (3, SYNTHETIC_IMAGE_SIZE, SYNTHETIC_IMAGE_SIZE)
    skippable = [b.skippable for b in scaled.blocks]
    priced = profile(DynamicResNetBackbone(scaled, "rescaled", shape), repeats=3)["skip"]
    assert all((t > 0) == s for t, s in zip(priced, skippable))
    assert profile(DynamicResNetBackbone(plain, "plain", shape), repeats=3)["skip"] == [0.0] * len(skippable)
