"""The README's "In Python" blocks run as written: the first code a new user copies, on the shipped
models (the cascade from its shipped caches; the dynamic ResNet-20 on the CIFAR-10 images)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers import readme_block


def run(marker: str, namespace: dict) -> dict:
    exec(compile(readme_block(marker), f"README.md: {marker}", "exec"), namespace)
    return namespace


def test_the_cascade_quickstart_plays_an_episode_to_its_end(capsys: pytest.CaptureFixture) -> None:
    ns = run("quickstart-cascade", {})
    info = ns["info"]
    assert ns["terminated"] and 0 < info["macs_fraction"] <= 1
    # the reward's terms as the block prints them: accuracy minus λ (0.05) times the spend
    assert info["reward_terms"]["correct"] == float(info["correct"])
    assert info["reward_terms"]["compute"] == pytest.approx(-0.05 * info["macs_fraction"])
    assert str(info["macs_fraction"]) in capsys.readouterr().out


def test_the_dynamic_quickstart_runs_then_skips(cifar_root: str) -> None:
    ns = run("quickstart-dynamic", run("quickstart-cascade", {}))
    info, obs = ns["info"], ns["obs"]
    # block 0 at width 0.25, block 1 skipped: two moves made, the spend a small part of the full path
    assert info["decision_point"] == 2 and not info["invalid_action"] and not ns["terminated"]
    assert int(np.argmax(obs["position"])) == 2 and 0 < info["macs_fraction"] < 0.1


def test_the_deploy_quickstart_routes_and_exports(cifar_root: str) -> None:
    ns = run("quickstart-deploy", {})
    logits, macs, exits, decisions = (ns[k] for k in ("logits", "macs", "exit_position", "decisions"))
    assert logits.shape == (4, 10) and exits.shape == decisions.shape == macs.shape == (4,)
    full = ns["model"].reference
    assert bool((macs <= 0.6 * full * (1 + 1e-6)).all())  # max_macs=0.6 holds for every input
    exported = ns["fixed"].module()(ns["images"])
    assert torch.allclose(exported, ns["model"].route_module([0] * 9)(ns["images"]), atol=1e-5)
