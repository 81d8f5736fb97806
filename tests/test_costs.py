import pytest
import torch

from routing_env.backbones import resnet
from routing_env.costs import count_macs, module_macs

# He et al. 2016 CIFAR ResNets: MACs of one 32x32 image (the "FLOPs" of most tables)
ANCHORS = {"resnet20": 40.6e6, "resnet32": 68.9e6, "resnet44": 97.2e6, "resnet56": 125.5e6, "resnet110": 252.9e6}


@pytest.mark.parametrize("name", sorted(ANCHORS))
def test_cifar_resnet_macs_match_published(name: str) -> None:
    macs = module_macs(getattr(resnet, name)(), (3, 32, 32))
    assert macs == pytest.approx(ANCHORS[name], rel=0.02)


def test_count_macs_of_a_linear_layer_is_in_times_out() -> None:
    layer = torch.nn.Linear(7, 5)
    assert count_macs(layer, torch.zeros(3, 7)) == 3 * 7 * 5


def test_resnet_depth_must_be_6n_plus_2() -> None:
    with pytest.raises(ValueError, match="6n\\+2"):
        resnet.CifarResNet(21)


def test_option_a_shortcut_has_no_parameters_and_keeps_shapes() -> None:
    net = resnet.resnet8()
    shortcut = net.layer2[0].shortcut
    assert isinstance(shortcut, resnet.PadShortcut)
    assert sum(p.numel() for p in shortcut.parameters()) == 0
    out = shortcut(torch.ones(2, 16, 32, 32))
    assert out.shape == (2, 32, 16, 16)
    assert out[:, 16:].abs().sum() == 0
    assert net(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
