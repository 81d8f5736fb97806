"""``routing-env bench``: the JSON has the contract's keys (figures are machine-dependent, not asserted)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from helpers import shipped_dynamic_card
from routing_env.cli import main


def width_half_macs_fraction() -> float:
    """The shipped dynamic ResNet-20's width-0.5 route, as its card prices it (with LC-Net's scales)."""
    return next(r["macs_fraction"] for r in shipped_dynamic_card()["routes_on_test"] if r["route"] == "width 0.5")


def test_bench_prints_the_documented_keys(capsys: pytest.CaptureFixture) -> None:
    assert main(["bench", "--json", "--seconds", "0.05", "--ppo-steps", "256", "--no-dynamic"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["torch_threads"] >= 1 and result["machine"]
    cascade = result["cascade"]
    assert set(cascade["vector_steps_per_s"]) == {"1", "64", "1024"}
    assert cascade["ratio_to_ceiling"] == pytest.approx(cascade["vector_steps_per_s"]["1024"] / cascade["ceiling_lookups_per_s"])
    assert all(v > 0 for v in cascade["vector_steps_per_s"].values()) and cascade["single_steps_per_s"] > 0
    assert cascade["cascade_step_over_cartpole"] == pytest.approx(cascade["cascade_step_us"] / cascade["cartpole_step_us"])
    ppo = result["sb3_ppo"]
    assert ppo["ratio"] == pytest.approx(ppo["ours_steps_per_s"] / ppo["trivial_steps_per_s"])
    assert "dynamic" not in result


@pytest.mark.expensive  # the default sizes; test_device_figures runs the same functions at small ones and checks the same keys
def test_bench_dynamic_figures(cifar_root: str) -> None:
    from routing_env.bench import dynamic_figures, routed_figures

    dynamic = dynamic_figures(0.05)
    assert set(dynamic["vector_steps_per_s"]) == {"64", "256"}  # how fast is the benchmark's verdict, not a test's
    assert dynamic["routing_overhead"] == pytest.approx(float(np.median(dynamic["routing_overhead_rounds"])))
    routed = routed_figures(repeats=2)
    assert routed["batch1"]["macs_ratio"] == pytest.approx(width_half_macs_fraction(), abs=1e-3)
    assert routed["batch64"]["latency_ratio"] > 0
    assert {"policy_overhead_eager", "policy_overhead_mlp_eager", "routed_mlp_eager_ms", "policy_overhead_head", "policy_overhead_mlp_head"} <= set(routed["batch1"])


@pytest.mark.parametrize("args", [["--seconds", "0"], ["--ppo-steps", "0"]])
def test_bench_refuses_empty_measurements(args: list[str], capsys: pytest.CaptureFixture) -> None:
    assert main(["bench", "--no-dynamic", *args]) == 2
    assert "--seconds > 0 and --ppo-steps >= 1" in capsys.readouterr().err


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"))])
def test_device_figures_measure_what_runs_on_the_device(device: str, cifar_root: str) -> None:
    """``bench(device=...)``'s figures (issue 20's GPU rows) at small sizes, on the CPU everywhere and
    on a GPU where there is one: the dynamic env at each batch, the routing overhead at each of its
    batches, routed inference at each batch size, and nothing of the cascade or SB3 (CPU work)."""
    from routing_env.bench import device_figures

    result = device_figures(device, seconds=0.05, repeats=2, env_batches=(8, 16), overhead_batches=(16,), routed_batches=(1, 4))
    assert result["device"] == (torch.cuda.get_device_name() if device == "cuda" else "cpu")  # a GPU is named
    assert "cascade" not in result and "sb3_ppo" not in result
    dynamic = result["dynamic"]
    assert set(dynamic["vector_steps_per_s"]) == {"8", "16"} and all(v > 0 for v in dynamic["vector_steps_per_s"].values())
    assert set(dynamic["routing_overhead_at"]) == {"16"} and dynamic["routing_overhead"] == dynamic["routing_overhead_at"]["16"]["median"]
    routed = result["routed_inference"]
    assert {"batch1", "batch4"} <= set(routed) and routed["device"] == device
    assert routed["batch4"]["macs_ratio"] == pytest.approx(width_half_macs_fraction(), abs=1e-3) and routed["batch4"]["latency_ratio"] > 0
    assert {"policy_overhead_eager", "policy_overhead_mlp_eager", "routed_mlp_eager_ms", "policy_overhead_head", "policy_overhead_mlp_head"} <= set(routed["batch1"])


def test_bench_on_a_missing_device_is_refused_by_name(capsys: pytest.CaptureFixture) -> None:
    assert main(["bench", "--device", "nonsense"]) == 2
    assert "invalid device 'nonsense'" in capsys.readouterr().err
    assert main(["bench", "--device", "meta"]) == 2
    assert "the CPU or a CUDA device" in capsys.readouterr().err
    if not torch.cuda.is_available():  # on a GPU machine --device cuda runs: that is test_device_figures' part
        assert main(["bench", "--device", "cuda"]) == 2
        assert "device 'cuda': this machine has no CUDA device" in capsys.readouterr().err
        assert main(["bench", "--device", "cuda", "--no-dynamic"]) == 2  # refused before anything else
        captured = capsys.readouterr()
        assert "this machine has no CUDA device" in captured.err and not captured.out
