"""A battery of bad inputs, as a careful or a malicious user would try them (issue 16): each gives a
clear one-line error naming the value, no traceback from the CLI, and nothing written."""

from __future__ import annotations

import math
import re
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
    ({"backbone_lr": 0, "train_backbone": True}, "backbone_lr must be a finite number > 0"),
    ({"backbone_update_every": 0}, "backbone_update_every must be"),
    ({"train_backbone": True, "split": "test"}, "would train on the test labels"),
    ({"device": "gpu:7"}, "invalid device 'gpu:7'"),
    ({"colour": "red"}, "unexpected keyword argument 'colour'"),
    ({"reward": "accuracy-squared"}, "unknown reward 'accuracy-squared'"),
    ({"reward": 3}, "reward must be a RewardFn"),
    ({"train_backbone": "False"}, "train_backbone must be true or false, got 'False'"),  # a truthy string turned co-training on
    ({"device": 3}, "device must be a torch device or its name"),
    ({"dataset": "synthetic-image"}, "takes inputs of shape (16,), 'synthetic-image' has (3, 16, 16)"),
    ({"reward": "accuracy-shaped[gamma=-5]"}, "gamma must be a finite number in [0, 1] (the shaping's discount), got -5.0"),
]


@pytest.mark.parametrize("options,message", OPTIONS)
def test_bad_environment_options(options: dict, message: str) -> None:
    with pytest.raises((ValueError, TypeError), match=re.escape(message)):
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
    env, fresh = RoutingEnv(**TINY), RoutingEnv(**TINY)
    env.reset(seed=1), fresh.reset(seed=1)
    with pytest.raises(ValueError, match=message):
        env.reset(seed=5, options=options)
    assert env.reset()[0]["features"].tolist() == fresh.reset()[0]["features"].tolist()  # the refused call reseeded nothing


@pytest.mark.parametrize("index", [[0, -1], [0], [0, 10**9]])
def test_a_refused_vector_reset_reseeds_nothing(index: list) -> None:
    env, fresh = RoutingVectorEnv(num_envs=2, **TINY), RoutingVectorEnv(num_envs=2, **TINY)
    env.reset(seed=1), fresh.reset(seed=1)
    with pytest.raises(ValueError, match="options\\['index'\\] must"):
        env.reset(seed=5, options={"index": index})
    assert env.reset()[0]["features"].tolist() == fresh.reset()[0]["features"].tolist()


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
    # reinforce's options: each was silently wrong (a negative max_grad_norm flips the gradient) or failed deep in torch
    ([*TRAIN, "--steps", "10", "--agent-kwargs", "max_grad_norm=-1"], "max_grad_norm must be a finite number > 0, got -1"),
    ([*TRAIN, "--steps", "10", "--agent-kwargs", "hidden=0"], "hidden must be an integer >= 1, got 0"),
    ([*TRAIN, "--steps", "10", "--agent-kwargs", "episodes_per_update=1.5"], "episodes_per_update must be an integer >= 1, got 1.5"),
    ([*TRAIN, "--steps", "10", "--agent-kwargs", "normalize_advantage=no"], "normalize_advantage must be true or false, got 'no'"),
    ([*TRAIN, "--steps", "10", "--agent-kwargs", "ent_coef=NaN"], "ent_coef must be a finite number >= 0, got nan"),
    (["train", "--backbone", "tiny-cascade", "--agent", "ppo", "--steps", "10", "--agent-kwargs", "batch_size=1"],
     "invalid option value for agent 'ppo' (given {'batch_size': 1})"),
    ([*TRAIN, "--steps", "10", "--seed", "-1"], "seed must be an integer >= 0, got -1"),
    ([*TRAIN, "--steps", "10", "--env-kwargs", "train_backbone=False"], "train_backbone must be true or false"),
    (["sweep", "--backbone", "tiny-cascade", "--agent", "reinforce", "--lams", "0.1", "--seeds=0,-1", "--steps", "10"],
     "seed must be an integer >= 0, got -1"),
    (["study", "--backbone", "tiny-cascade", "--rewards", "accuracy", "--agent", "reinforce,gain", "--lams", "0.1", "--seeds", "0",
      "--steps", "10"], "obs_mode='heads'"),  # refused before the first trial trains, as a sweep refuses it
    (["joint", "--backbone", "tiny-cascade", "--seed", "-1"], "seed must be an integer >= 0"),
    (["joint", "--backbone", "tiny-cascade", "--lam", "-1"], "lam must be"),
    (["evaluate", "--agent", "threshold", "--backbone", "tiny-cascade", "--agent-kwargs", "lam=NaN"], "lam must be a finite number >= 0"),
    (["evaluate", "--agent", "threshold", "--backbone", "tiny-cascade", "--agent-kwargs", "tau=-1"], "tau must be a number >= 0"),
    (["evaluate", "--agent", "threshold", "--backbone", "tiny-cascade", "--agent-kwargs", "tau=abc"], "tau must be a number >= 0"),
    (["evaluate", "--agent", "threshold", "--backbone", "tiny-cascade", "--agent-kwargs", "target_macs_fraction=true"],
     "target_macs_fraction must be a finite number >= 0"),
    (["train", "--backbone", "tiny-cascade", "--agent", "sarsa", "--steps", "10"], "unknown agent 'sarsa'"),
    (["train", "--backbone", "tiny-cascade", "--agent", "no_such_module:Agent", "--steps", "10"], "cannot import module"),
    (["sweep", "--backbone", "tiny-cascade", "--agent", "reinforce", "--lams", "0.1,x", "--steps", "10"], "comma-separated list"),
    (["sweep", "--backbone", "tiny-cascade", "--agent", "reinforce", "--lams", "0.1", "--seeds", "", "--steps", "10"], "names no values"),
    (["sweep", "--backbone", "tiny-cascade", "--agent", "reinforce", "--lams", "0.1", "--steps", "10", "--workers", "0"], "workers must be"),
    (["study", "--backbone", "tiny-cascade", "--rewards", "accuracy", "--agent", "reinforce", "--steps", "10"], "exactly one of --lams"),
    (["joint", "--backbone", "tiny-cascade", "--epochs", "0"], "epochs must be"),
    (["bench", "--seconds", "-1", "--no-dynamic"], "--seconds > 0"),
    (["pretrain", "--backbone", "resnet8", "--lr", "inf"], "finite numbers"),
    (["pretrain", "--backbone", "resnet8", "--epochs", "0"], "epochs must be an integer >= 1, got 0"),
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



# --- the Python API beyond the options ---------------------------------------------------------------
def test_numpy_numbers_are_numbers_written_as_json_and_a_list_of_seeds_has_one_per_environment(tmp_path: Path) -> None:
    import json

    import torch

    from routing_env.experiments import train_run

    with pytest.warns(UserWarning, match="backbone_update_every=4 does nothing without train_backbone"):  # as a Python int
        env = RoutingVectorEnv(num_envs=2, lam=np.float32(0.1), backbone_update_every=np.int64(4), device=torch.device("cpu"), **TINY)
    config = env.unwrapped.config  # numpy's numbers were refused as "not a finite number"; stored as Python's
    assert type(config.lam) is float and type(config.backbone_update_every) is int and config.device == "cpu"
    # a run writes every option it was given, as given: numpy's scalars too (they failed in json.dumps, after the folder was cleared)
    train_run("routing_env/Cascade-v0", {**TINY, "lam": np.float32(0.1)}, "threshold", {"target_macs_fraction": np.float64(0.5)},
              np.int64(0), 0, 2, tmp_path / "run")
    assert json.loads((tmp_path / "run" / "config.json").read_text())["env_kwargs"]["lam"] == pytest.approx(0.1)
    assert json.loads((tmp_path / "run" / "agent.json").read_text())["options"]["target_macs_fraction"] == 0.5
    for seeds in ([], [1, 2, 3]):
        with pytest.raises(ValueError, match="a list of 2 \\(one per environment"):
            env.reset(seed=seeds)
    first, _ = env.reset(seed=[5, 6])
    again, _ = env.reset(seed=5)
    np.testing.assert_array_equal(first["features"], again["features"])  # the batch's one stream, seeded by the first


def test_flat_observation_refuses_what_is_not_a_routing_environment() -> None:
    from routing_env.wrappers import FlatObservation

    with pytest.raises(ValueError, match="FlatObservation wraps a routing environment's Dict observation"):
        FlatObservation(gym.make("CartPole-v1"))
    with pytest.raises(ValueError, match=r"got \['action_mask', 'observations'\]"):
        FlatObservation(FlatObservation(RoutingEnv(**TINY)))


def test_weights_of_another_network_are_one_line_naming_the_file(tmp_path: Path) -> None:
    import torch

    path = tmp_path / "other.pt"
    torch.save({"conv.weight": torch.zeros(1)}, path)
    with pytest.raises(ValueError) as e:
        RoutingEnv(backbone_weights=str(path), **TINY)
    message = str(e.value)
    assert message.startswith(f"backbone_weights {str(path)!r} do not fit backbone 'tiny-cascade'") and "\n" not in message
    assert "missing keys" in message and "1 unexpected keys (e.g. 'conv.weight')" in message


def test_routed_model_refuses_a_nan_budget_and_inputs_of_another_shape() -> None:
    import torch

    from routing_env.agents import make_agent
    from routing_env.routed import RoutedModel

    env = RoutingVectorEnv(num_envs=2, backbone="tiny-dynamic-resnet")
    policy = make_agent("reinforce", env, seed=0).policy_module()
    with pytest.raises(ValueError, match="max_macs must be a number > 0"):
        RoutedModel(env.core.backbone, policy, max_macs=math.nan)  # masked nothing: every input exited at once
    assert RoutedModel(env.core.backbone, policy, max_macs=math.inf).budget == math.inf  # no budget, as None
    assert RoutingVectorEnv(num_envs=2, backbone="tiny-dynamic-resnet", max_macs=math.inf).config.max_macs is None  # the same here
    routed = RoutedModel(env.core.backbone, policy)
    shape = env.core.backbone.input_shape
    for bad in (torch.zeros(shape), torch.zeros(2, shape[0], shape[1] + 1, shape[2])):
        with pytest.raises(ValueError, match=f"RoutedModel takes a batch of inputs of shape \\(B, {', '.join(map(str, shape))}\\)"):
            routed(bad)
    assert routed(torch.zeros(2, *shape))[0].shape[0] == 2


@pytest.mark.parametrize("options,controlled", [
    ({"backbone_lr": 0.001}, {"train_backbone": True}),
    ({"target_lr": 0.01}, {"target_macs": 0.3}),
    ({"invalid_penalty": 0.5}, {"invalid_action": "penalize"}),
], ids=["co-training", "budget-targeting", "penalty"])
def test_an_option_set_without_the_one_it_needs_warns(options: dict, controlled: dict) -> None:
    """Set without its controlling option, an option does nothing, and the run would train as if it
    were not there; with it, or as an evaluation drops them, nothing is said."""
    import warnings

    from routing_env.env import EnvConfig
    from routing_env.experiments.train import evaluation_kwargs

    name, value = next(iter(options.items()))
    with pytest.warns(UserWarning, match=re.escape(f"{name}={value!r} does nothing without {next(iter(controlled))}")):
        EnvConfig(**TINY, **options)
    with warnings.catch_warnings():  # the controlling option set, or the evaluation of such a run: silent
        warnings.simplefilter("error")
        EnvConfig(**TINY, **options, **controlled)
        EnvConfig.from_options(evaluation_kwargs({**TINY, **options, **controlled}, "test"))
