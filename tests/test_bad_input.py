"""A battery of bad inputs, as a careful or a malicious user would try them (issue 16): each gives a
clear one-line error naming the value, no traceback from the CLI, and nothing written."""

from __future__ import annotations

import math
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

import routing_env  # noqa: F401
from routing_env import RoutingEnv, RoutingVectorEnv
from routing_env.cli import main

TINY = {"backbone": "tiny-cascade"}

# --- environment options (gym.make) -------------------------------------------------------------
OPTIONS = [
    ({"lam": -1.0}, "lam must be"),
    ({"lam": math.nan}, "lam must be"),
    ({"lam": math.inf}, "lam must be"),
    ({"lam": "0.1"}, "lam must be"),
    ({"split": "training"}, "unknown split 'training'"),
    ({"invalid_action": "ignore"}, "unknown invalid_action 'ignore'"),
    ({"invalid_penalty": -5}, "invalid_penalty must be"),
    ({"allow_skip": "no"}, "allow_skip must be"),
    ({"widths": []}, "widths must be a non-empty list"),
    ({"widths": "1.0"}, "widths must be a non-empty list"),
    ({"widths": [0.5]}, "width 0.5 is not one of the backbone's widths"),
    ({"max_macs": 0}, "max_macs must be"),
    ({"max_macs": math.nan}, "max_macs must be"),
    ({"max_macs": 0.001}, "below the cheapest route"),
    ({"target_macs": -0.2}, "target_macs must be"),
    ({"target_lr": 0}, "target_lr must be"),
    ({"cost": "Latency"}, "cost must be one of"),
    ({"obs_mode": "pixels"}, "unknown obs_mode 'pixels'"),
    ({"backbone": "resnet-9000"}, "unknown backbone 'resnet-9000'"),
    ({"backbone_lr": 0, "train_backbone": True}, "backbone_lr must be > 0"),
    ({"backbone_update_every": 0}, "backbone_update_every must be"),
    ({"train_backbone": True, "split": "test"}, "would train on the test labels"),
    ({"device": "gpu:7"}, "invalid device 'gpu:7'"),
    ({"colour": "red"}, "unexpected keyword argument 'colour'"),
    ({"reward": "accuracy-squared"}, "unknown reward 'accuracy-squared'"),
    ({"reward": 3}, "reward must be a RewardFn"),
]


@pytest.mark.parametrize("options,message", OPTIONS)
def test_bad_environment_options(options: dict, message: str) -> None:
    with pytest.raises((ValueError, TypeError), match=message.replace("(", r"\(").replace(")", r"\)")):
        gym.make("routing_env/Cascade-v0", **{**TINY, **options})


@pytest.mark.parametrize("env_id,backbone,message", [
    ("routing_env/DynamicResNet-v0", "tiny-cascade", "routing_env/DynamicResNet-v0 got backbone 'tiny-cascade', which is a cascade; use routing_env/Cascade-v0"),
    ("routing_env/Cascade-v0", "tiny-dynamic-resnet", "which is a dynamic ResNet; use routing_env/DynamicResNet-v0"),
])
@pytest.mark.parametrize("vector", [False, True], ids=["make", "make_vec"])
def test_an_id_refuses_the_other_familys_backbone(env_id: str, backbone: str, message: str, vector: bool) -> None:
    with pytest.raises(ValueError, match=message):
        if vector:
            gym.make_vec(env_id, num_envs=2, vectorization_mode="vector_entry_point", backbone=backbone)
        else:
            gym.make(env_id, backbone=backbone)


def test_the_cli_refuses_the_other_familys_backbone(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "run"
    assert main(["train", "--env", "routing_env/DynamicResNet-v0", "--backbone", "tiny-cascade", "--agent", "reinforce", "--steps", "64", "--out", str(out)]) != 0
    err = capsys.readouterr().err
    assert "which is a cascade; use routing_env/Cascade-v0" in err and "Traceback" not in err and not out.exists()


# --- reset options and actions --------------------------------------------------------------------
@pytest.mark.parametrize("options,message", [
    ({"index": -1}, "options\\['index'\\] must be an integer"),
    ({"index": 10**9}, "options\\['index'\\] must be an integer"),
    ({"index": 1.5}, "options\\['index'\\] must be an integer"),
    ({"index": True}, "options\\['index'\\] must be an integer"),
])
def test_bad_reset_options(options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RoutingEnv(**TINY).reset(options=options)


@pytest.mark.parametrize("action", [-1, 3, 2.0, None, True, np.array([0, 1]), "EXIT"])
def test_bad_single_actions(action: object) -> None:
    env = RoutingEnv(**TINY)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="is not in the action space"):
        env.step(action)


@pytest.mark.parametrize("actions", [np.array([0, 1, 2]), np.array([0.0, 1.0]), np.array([True, False]), np.array([0, 9]), [[0, 1]]])
def test_bad_vector_actions(actions: object) -> None:
    env = RoutingVectorEnv(num_envs=2, **TINY)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="actions"):
        env.step(actions)


# --- the command line ---------------------------------------------------------------------------------
TRAIN = ["train", "--backbone", "tiny-cascade", "--agent", "reinforce"]
CLI = [
    ([*TRAIN, "--steps", "-5"], "--steps >= 0"),
    ([*TRAIN, "--steps", "10", "--num-envs", "0"], "--num-envs >= 1"),
    ([*TRAIN, "--steps", "10", "--lam", "nan"], "lam must be"),
    ([*TRAIN, "--steps", "10", "--env-kwargs", "lam"], "not of the form KEY=VALUE"),
    ([*TRAIN, "--steps", "10", "--env-kwargs", "=3"], "not of the form KEY=VALUE"),
    ([*TRAIN, "--steps", "10", "--agent-kwargs", "learning_rat=0.1"], "unknown option"),
    (["train", "--backbone", "tiny-cascade", "--agent", "sarsa", "--steps", "10"], "unknown agent 'sarsa'"),
    (["train", "--backbone", "tiny-cascade", "--agent", "no_such_module:Agent", "--steps", "10"], "cannot import module"),
    (["sweep", "--backbone", "tiny-cascade", "--agent", "reinforce", "--lams", "0.1,x", "--steps", "10"], "comma-separated list"),
    (["sweep", "--backbone", "tiny-cascade", "--agent", "reinforce", "--lams", "0.1", "--seeds", "", "--steps", "10"], "names no values"),
    (["sweep", "--backbone", "tiny-cascade", "--agent", "reinforce", "--lams", "0.1", "--steps", "10", "--workers", "0"], "workers must be"),
    (["study", "--backbone", "tiny-cascade", "--rewards", "accuracy", "--agent", "reinforce", "--steps", "10"], "exactly one of --lams"),
    (["joint", "--backbone", "tiny-cascade", "--epochs", "0"], "epochs must be"),
    (["bench", "--seconds", "-1", "--no-dynamic"], "--seconds > 0"),
    (["pretrain", "--backbone", "resnet8", "--lr", "inf"], "finite numbers"),
    (["pretrain", "--backbone", "resnet8", "--epochs", "0"], "epochs and batch_size must be >= 1"),
    (["pretrain", "--backbone", "resnet8", "--device", "gpu:7"], "invalid device"),
    (["profile", "--backbone", "tiny-cascade", "--batch", "0"], "batch >= 1"),
    ([*TRAIN, "--steps", "10", "--env-kwargs", "split=test"], "only evaluated on test"),
    (["sweep", "--backbone", "tiny-cascade", "--agent", "reinforce", "--lams", "0.1", "--steps", "10", "--env-kwargs", "split=test"],
     "only evaluated on test"),
    (["study", "--backbone", "tiny-cascade", "--rewards", "accuracy", "--agent", "reinforce", "--lams", "0.1", "--steps", "10",
      "--env-kwargs", "split=test"], "only evaluated on test"),
    (["sweep", "--backbone", "tiny-cascade", "--agent", "reinforce", "--lams", "0.1,0.10", "--steps", "10"], "repeat the runs"),
    (["evaluate", "--agent", "threshold", "--backbone", "tiny-cascade", "--steps", "-5"], "--steps >= 0"),
    (["evaluate", "--agent", "threshold", "--backbone", "tiny-cascade", "--env-kwargs", "target_macs=0.3"], "without target_macs"),
    (["evaluate", "--agent", "gain", "--backbone", "tiny-cascade"], "obs_mode='heads'"),
    (["sweep", "--backbone", "tiny-cascade", "--agent", "threshold,gain", "--lams", "0.1", "--steps", "0"], "obs_mode='heads'"),
    (["sweep", "--backbone", "tiny-cascade", "--agent", "gain", "--env-kwargs", "obs_mode=heads", "--agent-kwargs", "folds=1",
      "--lams", "0.1", "--steps", "0"], "folds must be an integer >= 2, got 1"),
]


@pytest.mark.parametrize("argv,message", CLI)
def test_bad_command_lines(argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    if argv[0] in ("train", "sweep", "study", "joint", "pretrain"):
        argv = [*argv, "--out", str(tmp_path / "out")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out").exists()


# --- run folders ---------------------------------------------------------------------------------------
def trained_run(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    assert main([*TRAIN, "--steps", "200", "--out", str(run), "--quiet"]) == 0
    return run


def test_a_run_folder_missing_its_policy_or_with_a_corrupted_agent_json(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = trained_run(tmp_path)
    capsys.readouterr()
    (run / "policy.pt").unlink()
    assert main(["evaluate", "--run", str(run), "--json"]) == 2
    err = capsys.readouterr().err
    assert "policy.pt does not exist" in err and "Traceback" not in err
    (run / "agent.json").write_text("{not json")
    assert main(["evaluate", "--run", str(run), "--json"]) == 2
    err = capsys.readouterr().err
    assert "agent.json is not an agent description" in err and "Traceback" not in err
    assert main(["evaluate", "--run", str(tmp_path / "nowhere"), "--json"]) == 2
    assert "config.json does not exist" in capsys.readouterr().err


def test_a_truncated_policy_file_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = trained_run(tmp_path)
    capsys.readouterr()
    data = (run / "policy.pt").read_bytes()
    (run / "policy.pt").write_bytes(data[: len(data) // 2])
    assert main(["evaluate", "--run", str(run), "--json"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_a_truncated_config_or_finished_trial_names_its_file(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = trained_run(tmp_path)
    capsys.readouterr()
    (run / "config.json").write_text('{"env": "routing_env/Casc')
    assert main(["evaluate", "--run", str(run), "--json"]) == 2
    err = capsys.readouterr().err
    assert f"{run / 'config.json'} is not valid JSON" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    sweep = ["sweep", "--backbone", "tiny-cascade", "--agent", "reinforce", "--lams", "0.1", "--seeds", "0", "--steps", "64",
             "--out", str(tmp_path / "sweep"), "--quiet"]
    assert main(sweep) == 0
    done = tmp_path / "sweep" / "runs" / "reinforce-lam0.1-seed0" / "test.json"
    done.write_text(done.read_text()[:40])
    capsys.readouterr()
    assert main(sweep) == 2
    err = capsys.readouterr().err
    assert f"{done} is not valid JSON" in err and "delete it to have it written again" in err and "Traceback" not in err
    done.unlink()
    assert main(sweep) == 0  # deleted, the trial runs again


@pytest.mark.parametrize("layout", ["empty", "garbage"])
def test_an_unusable_data_root_is_one_line_and_writes_nothing(layout: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = tmp_path / "data"
    (root / "cifar-10-batches-py").mkdir(parents=True)
    if layout == "garbage":
        for name in ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"):
            (root / "cifar-10-batches-py" / name).write_bytes(b"\x80\x04 not a pickle")
    out = tmp_path / "run"
    assert main(["train", "--env", "routing_env/DynamicResNet-v0", "--backbone", "cifar10-resnet20-dynamic", "--agent", "reinforce",
                 "--steps", "10", "--data-root", str(root), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"cifar10 data at {root}" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()

