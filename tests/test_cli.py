import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from helpers import readme_block
from routing_env.backbones import make_backbone
from routing_env.cli import main
from routing_env.env import EnvConfig

ROOT = Path(__file__).resolve().parents[1]
EVAL_KEYS = {"policy", "env", "split", "n", "accuracy", "macs_mean", "macs_fraction",
             "reference_accuracy", "reference_macs", "exit_histogram", "stage_choices"}


def run_cli(*args: str, cwd: Path | None = None, pythonpath: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = f"{pythonpath}{os.pathsep}{env.get('PYTHONPATH', '')}"
    return subprocess.run([sys.executable, "-m", "routing_env", *args], capture_output=True, text=True, env=env, cwd=cwd)


def test_train_then_evaluate_run(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert main(["train", "--backbone", "tiny-cascade", "--agent", "reinforce", "--lam", "0.05", "--steps", "2000", "--out", str(out), "--quiet"]) == 0
    for name in ("config.json", "eval.json", "agent.json", "policy.pt"):
        assert (out / name).is_file()
    assert list((out / "tb").glob("events.out.tfevents.*"))
    val = json.loads((out / "eval.json").read_text())
    assert val["split"] == "val" and EVAL_KEYS <= set(val)
    done = run_cli("evaluate", "--run", str(out), "--split", "test", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)  # stdout is exactly one JSON object
    assert EVAL_KEYS <= set(result) and result["split"] == "test" and result["policy"] == "reinforce"
    assert result["n"] == 10_000 and sum(result["exit_histogram"]) == 10_000


def test_tensorboard_has_the_cleanrl_keys(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    main(["train", "--backbone", "tiny-cascade", "--agent", "reinforce", "--steps", "3000", "--out", str(out), "--quiet"])
    acc = EventAccumulator(str(out / "tb"))
    acc.Reload()
    scalars = set(acc.Tags()["scalars"])
    assert {"charts/episodic_return", "charts/accuracy", "charts/macs_fraction", "charts/SPS", "losses/policy_loss"} <= scalars
    # the return split by reward term: the terms' means add up to the mean return at every logged step
    returns = {e.step: e.value for e in acc.Scalars("charts/episodic_return")}
    split = [{e.step: e.value for e in acc.Scalars(f"reward_terms/{name}")} for name in ("correct", "compute")]
    assert returns and all(abs(split[0][s] + split[1][s] - r) < 1e-5 for s, r in returns.items())


def test_train_refuses_to_overwrite_a_run_unless_asked(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "run"
    train = ["train", "--backbone", "tiny-cascade", "--agent", "reinforce", "--steps", "200", "--out", str(out), "--quiet"]
    assert main(train + ["--seed", "0"]) == 0
    first = (out / "policy.pt").read_bytes()
    assert main(train + ["--seed", "1"]) == 2
    assert f"--out {out} already holds a finished run" in capsys.readouterr().err
    assert (out / "policy.pt").read_bytes() == first and json.loads((out / "config.json").read_text())["seed"] == 0
    assert main(train + ["--seed", "1", "--overwrite"]) == 0
    assert json.loads((out / "config.json").read_text())["seed"] == 1


def test_sb3_training_writes_tensorboard_charts(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "ppo"
    main(["train", "--backbone", "tiny-cascade", "--agent", "ppo", "--steps", "2048", "--out", str(out), "--quiet"])
    acc = EventAccumulator(str(out / "tb"))
    acc.Reload()
    assert {"charts/accuracy", "charts/macs_fraction", "reward_terms/correct", "reward_terms/compute"} <= set(acc.Tags()["scalars"])
    assert json.loads((out / "config.json").read_text())["env_kwargs"]["lam"] == EnvConfig().lam  # no --lam: the default, recorded


def test_evaluate_baselines_reproduce_single_exit_accuracy(capsys: pytest.CaptureFixture) -> None:
    assert main(["evaluate", "--backbone", "tiny-cascade", "--agent", "fixed", "--agent-kwargs", "position=2", "--split", "test", "--json"]) == 0
    fixed = json.loads(capsys.readouterr().out)
    cache = make_backbone("tiny-cascade").feature_cache("synthetic", "test")  # head 2's accuracy from its logits
    assert fixed["n"] == len(cache.labels)
    assert fixed["accuracy"] == pytest.approx(float((cache.logits[2].argmax(1) == cache.labels).mean()))
    assert fixed["exit_histogram"] == [0, 0, fixed["n"]]
    assert main(["evaluate", "--backbone", "tiny-cascade", "--agent", "oracle", "--json"]) == 0
    oracle = json.loads(capsys.readouterr().out)
    assert oracle["uses_labels"] is True and oracle["accuracy"] >= fixed["accuracy"]


def test_evaluate_reports_the_tuned_threshold(capsys: pytest.CaptureFixture) -> None:
    """The τ a threshold tuned on val is in the JSON beside its test score, and is the one scored."""
    assert main(["evaluate", "--backbone", "tiny-cascade", "--agent", "threshold", "--agent-kwargs", "target_macs_fraction=0.5",
                 "--split", "test", "--json"]) == 0
    tuned = json.loads(capsys.readouterr().out)
    tau = tuned["options"]["tau"]
    assert 0.0 < tau <= 1.0 and tuned["options"]["target_macs_fraction"] == 0.5
    assert main(["evaluate", "--backbone", "tiny-cascade", "--agent", "threshold", "--agent-kwargs", f"tau={tau!r}",
                 "--split", "test", "--json"]) == 0
    given = json.loads(capsys.readouterr().out)
    assert (given["accuracy"], given["macs_fraction"]) == (tuned["accuracy"], tuned["macs_fraction"])


def test_custom_agent_from_the_readme(tmp_path: Path) -> None:
    (tmp_path / "my_agents.py").write_text(readme_block("custom-agent-example"))
    done = run_cli("evaluate", "--backbone", "tiny-cascade", "--agent", "my_agents:ConfidentExit", "--split", "test", "--json", pythonpath=tmp_path)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["policy"] == "confident-exit" and 0.9 < result["accuracy"] <= 1.0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["evaluate", "--agent", "nope"], r"unknown agent 'nope'; expected one of \['reinforce'"),
        (["evaluate", "--agent", "bad::path"], r"malformed custom agent 'bad::path'"),
        (["evaluate", "--agent", "random", "--backbone", "resnet9000"], r"unknown backbone 'resnet9000'; expected one of"),
        (["evaluate", "--agent", "random", "--env", "CartPole-v1"], r"unknown environment id 'CartPole-v1'; expected one of"),
        (["evaluate", "--agent", "random", "--lam", "-1"], r"lam must be a finite number >= 0, got -1.0"),
        (["evaluate", "--agent", "random", "--env-kwargs", "obs_mode=pixels"], r"unknown obs_mode 'pixels'"),
        (["evaluate", "--agent", "random", "--env-kwargs", "colour=red"], r"unknown environment option\(s\) \['colour'\]"),
        (["evaluate", "--agent", "random", "--env-kwargs", "colour"], r"'colour' is not of the form KEY=VALUE"),
        (["evaluate", "--run", "/nonexistent/run"], r"config.json does not exist"),
        (["evaluate"], r"exactly one of --run DIR or --agent NAME"),
        (["evaluate", "--agent", "random", "--env-kwargs", "lam=0.1", "lam=0.2"], r"--env-kwargs gives lam twice, 0.1 and 0.2; give it once"),
        (["evaluate", "--agent", "threshold", "--env-kwargs", "split=train"],
         r"--env-kwargs split would be ignored; give the split as --split"),
        (["evaluate", "--agent", "threshold", "--env-kwargs", "backbone_lr=0.1"], r"--env-kwargs backbone_lr would be ignored"),
        (["evaluate", "--run", "/nonexistent/run", "--steps", "100", "--env", "routing_env/DynamicResNet-v0", "--agent-kwargs", "lr=1"],
         r"--agent-kwargs, --env, --steps are options of evaluate --agent; --run evaluates the run's own agent"),
        (["sweep", "--agent", "random", "--lams", "0.1,cheap", "--steps", "1", "--out", "/nonexistent/sweep"],
         r"--lams '0.1,cheap' is not a comma-separated list of float values"),
        (["sweep", "--agent", ",", "--lams", "0.1", "--steps", "1", "--out", "/nonexistent/sweep"], r"--agent ',' names no values"),
        (["pretrain", "--backbone", "resnet8", "--precision", "fp16", "--out", "/nonexistent/pretrain"], r"unknown precision 'fp16'"),
    ],
)
def test_bad_input_is_a_one_line_error(args: list[str], message: str, capsys: pytest.CaptureFixture) -> None:
    assert main(args) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and re.search(message, lines[0]), captured.err


@pytest.mark.parametrize("command", ["sweep", "study"])
def test_the_grids_take_their_seeds_from_seeds_only(command: str) -> None:
    """The grids have no ``--seed`` of their own, which ``--seeds`` would silently override: ``--seed 7``
    is argparse's abbreviation of ``--seeds 7``, one seed, 7."""
    from routing_env.cli import build_parser

    rewards = ["--rewards", "accuracy"] if command == "study" else []
    args = build_parser().parse_args([command, "--agent", "random", "--lams", "0.1", *rewards, "--steps", "1",
                                      "--seed", "7", "--out", "/nonexistent/grid"])
    assert args.seeds == "7" and not hasattr(args, "seed")


def test_demo_prints_the_comparison_table_and_writes_the_pareto_plot(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "demo"
    assert main(["demo", "--backbone", "tiny-cascade", "--out", str(out), "--steps", "3000", "--quiet"]) == 0
    printed = capsys.readouterr().out
    for row in ("mlp4 alone", "mlp64x64 alone", "threshold at the policy's val cost", "reinforce (learned on val, lam=0.03)",
                "oracle (upper bound, uses labels)"):
        assert row in printed
    results = json.loads((out / "results.json").read_text())
    assert [s["label"] for s in results["singles"]] == ["mlp4 alone", "mlp16 alone", "mlp64x64 alone"]
    assert results["singles"][-1]["macs_fraction"] == 1.0
    assert results["singles"][-1]["accuracy"] == results["runs"][0]["test"]["reference_accuracy"]
    assert (out / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_sweep_trains_every_point_resumes_and_refuses_other_settings(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "sweep"
    args = ["sweep", "--backbone", "tiny-cascade", "--agent", "random,threshold", "--lams", "0.02,0.2", "--seeds", "0,1",
            "--steps", "100", "--out", str(out), "--quiet"]
    assert main(args) == 0
    table = capsys.readouterr().out
    assert "| random | 0.2 | 2 |" in table and "| threshold | 0.02 | 2 |" in table
    results = json.loads((out / "results.json").read_text())
    assert len(results["runs"]) == 8 and len(results["groups"]) == 4
    cheap, dear = (next(g for g in results["groups"] if g["agent"] == "threshold" and g["lam"] == lam) for lam in (0.2, 0.02))
    assert cheap["macs_fraction_mean"] < dear["macs_fraction_mean"]
    rows = (out / "pareto.csv").read_text().splitlines()
    assert sum(r.startswith("policy,") for r in rows) == 8 and sum(r.startswith("single,") for r in rows) == 3
    points = list(csv.DictReader(rows))
    test_records = {(run["agent"], run["lam"], run["seed"]): run["test"] for run in results["runs"]}
    for point in points:  # a policy's mean test reward beside its point; blank for the static routes
        if point["kind"] == "policy":
            record = test_records[point["agent"], float(point["lam"]), int(point["seed"])]
            assert float(point["reward_mean"]) == pytest.approx(record["reward_mean"])
        else:
            assert point["reward_mean"] == ""
    for g in results["groups"]:  # each term's mean over the group's seeds; together they make its mean reward
        runs = [r["test"] for r in results["runs"] if (r["agent"], r["lam"]) == (g["agent"], g["lam"])]
        assert g["reward_mean"] == pytest.approx(np.mean([r["reward_mean"] for r in runs]))
        assert g["reward_terms_mean"] == pytest.approx({k: np.mean([r["reward_terms_mean"][k] for r in runs]) for k in ("correct", "compute")})
        assert sum(g["reward_terms_mean"].values()) == pytest.approx(g["reward_mean"])
    finished = {p: p.stat().st_mtime_ns for p in out.glob("runs/*/test.json")}
    assert len(finished) == 8
    assert main(args) == 0
    assert {p: p.stat().st_mtime_ns for p in out.glob("runs/*/test.json")} == finished
    capsys.readouterr()
    assert main([*args[:-5], "--steps", "200", "--out", str(out), "--quiet"]) == 2
    assert "choose another --out" in capsys.readouterr().err
    # the same name, other weights (a re-packaged model, a rewritten weights file): the runs are not reused
    import torch

    from routing_env.backbones import make_backbone
    from routing_env.checkpoints import save_state_dict

    module = make_backbone("tiny-cascade").module
    with torch.no_grad():
        next(module.parameters()).add_(1.0)
    save_state_dict(module.state_dict(), tmp_path / "other.pt")
    assert main([*args[:-1], "--env-kwargs", f"backbone_weights={tmp_path / 'other.pt'}", "--quiet"]) == 2
    assert "choose another --out" in capsys.readouterr().err
    # two trials that would share one run folder are refused before anything trains
    assert main([*args[:7], "--seeds", "0,1,0", "--steps", "100", "--out", str(tmp_path / "again"), "--quiet"]) == 2
    assert "repeat the runs" in capsys.readouterr().err and not (tmp_path / "again" / "runs").exists()


def test_console_script_and_module_agree() -> None:
    done = run_cli("--version")
    assert done.returncode == 0 and done.stdout.startswith("routing-env ")
    script = Path(sys.executable).parent / "routing-env"  # the [project.scripts] entry point pip installed
    assert script.is_file(), f"{script} is missing: is the package installed into this interpreter's environment?"
    by_script = subprocess.run([str(script), "--version"], capture_output=True, text=True)
    assert by_script.returncode == 0 and by_script.stdout == done.stdout


def test_pretrain_passes_every_flag_to_its_field(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    """Every ``pretrain`` flag, set away from its default, reaches its ``PretrainArgs`` field or
    ``pretrain()`` argument (the CLI maps them by hand), and the card is printed as JSON."""
    from routing_env import pretrain as module

    calls = []

    def pretrain(args, out, **kwargs):
        calls.append((args, out, kwargs))
        return {"stopped": True, "epochs": 1}

    monkeypatch.setattr(module, "pretrain", pretrain)
    assert main(["pretrain", "--backbone", "resnet20-dynamic", "--dataset", "synthetic", "--epochs", "7", "--out", str(tmp_path),
                 "--resume", "--data-root", "/data", "--download", "--batch-size", "64", "--lr", "0.05", "--weight-decay", "0.001",
                 "--label-smoothing", "0.2", "--schedule", "onecycle", "--ema", "0.99", "--seed", "3", "--precision", "bf16",
                 "--device", "cuda", "--init", "a.pt", "--sandwich", "4", "--skip-rate", "0.3", "--uniform-routes", "0.4",
                 "--full-width-routes", "0.2", "--whole-uniform-routes", "--no-order-channels", "--recalibrate", "7",
                 "--monitor", "9", "--teacher", "t.pt", "--rescale", "--exits", "block", "--heads-only", "--time-limit", "12.5",
                 "--quiet"]) == 0
    assert json.loads(capsys.readouterr().out) == {"stopped": True, "epochs": 1}
    (args, out, kwargs), = calls
    assert out == str(tmp_path)
    assert (args.backbone, args.dataset, args.epochs, args.batch_size, args.lr, args.weight_decay, args.label_smoothing) == (
        "resnet20-dynamic", "synthetic", 7, 64, 0.05, 0.001, 0.2)
    assert (args.schedule, args.ema, args.seed, args.precision, args.init, args.sandwich, args.skip_rate) == (
        "onecycle", 0.99, 3, "bf16", "a.pt", 4, 0.3)
    assert (args.uniform_routes, args.full_width_routes, args.whole_uniform_routes, args.order_channels, args.recalibrate) == (
        0.4, 0.2, True, False, 7)
    assert (args.monitor, args.teacher, args.rescale, args.exits, args.heads_only) == (9, "t.pt", True, "block", True)
    assert {k: kwargs[k] for k in ("resume", "data_root", "download", "progress", "device", "time_limit")} == {
        "resume": True, "data_root": "/data", "download": True, "progress": False, "device": "cuda", "time_limit": 12.5}
    assert "--heads-only" in kwargs["command"]  # the card's command line is this one


def test_backbones_lists_every_name_with_its_cards_accuracy(capsys: pytest.CaptureFixture, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """``routing-env backbones``: every name ``backbone=`` takes, the environment that routes it (two
    defaults, the environments' own), and each model's test accuracy as its shipped card records it."""
    from routing_env import pretrained
    from routing_env.backbones import DEFAULT_BACKBONE, DYNAMIC_BACKBONE, backbone_names

    assert main(["backbones", "--json"]) == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    assert list(rows) == backbone_names()
    assert {name for name, row in rows.items() if row["default"]} == {DEFAULT_BACKBONE, DYNAMIC_BACKBONE}
    assert rows[DEFAULT_BACKBONE]["env"] == "routing_env/Cascade-v0" and rows[DYNAMIC_BACKBONE]["env"] == "routing_env/DynamicResNet-v0"
    assert rows[DYNAMIC_BACKBONE]["needs_data"] and not rows[DEFAULT_BACKBONE]["needs_data"]
    for name, manifest in pretrained.available().items():
        folder = pretrained.folder_of(name)[0]
        cards = [json.loads((folder / f"{m['model']}.model_card.json").read_text()) for m in manifest.get("members") or [manifest]]
        assert [(m["model"], m["test_accuracy"]) for m in rows[name]["models"]] == [(c["model"], c["test_accuracy"]) for c in cards]
    assert rows["cifar10-resnet-cascade-5-kd"]["models"][-1]["test_accuracy"] == 0.935
    assert rows[DYNAMIC_BACKBONE]["exits"] == "stage" and rows["cifar10-resnet20-dynamic-exits"]["exits"] == "block"
    assert not any(row["error"] for row in rows.values())
    # a folder without cards or caches: the manifest's own figures, and routing it reads the images;
    # a kind this version does not load and a name two folders claim are listed with why, not raised
    # and so is what load() would refuse before reading weights (an unknown model, a member without its keys)
    member = {"model": "resnet8", "weights": "m.pt", "sha256": "0" * 64, "macs": 5e6, "test_accuracy": 0.5}
    manifests = {"m": {"name": "mine", "kind": "cascade", "members": [member]},
                 "v": {"name": "vit", "kind": "vit"}, "a": {"name": "twice", "kind": "cascade", "members": []},
                 "b": {"name": "twice", "kind": "cascade", "members": []},
                 "u": {"name": "unknown-model", "kind": "cascade", "members": [{**member, "model": "resnet9000"}]},
                 "k": {"name": "keyless", "kind": "cascade", "members": [{"model": "resnet8"}]}}
    for folder, manifest in manifests.items():
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "manifest.json").write_text(json.dumps({"dataset": "cifar10", "num_classes": 10, **manifest}))
    monkeypatch.setenv("ROUTING_ENV_PRETRAINED", str(tmp_path))
    assert main(["backbones", "--json"]) == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    assert rows["mine"]["needs_data"] and rows["mine"]["models"] == [{"model": "resnet8", "test_accuracy": 0.5, "macs": 5e6}]
    assert "this version loads" in rows["vit"]["error"] and rows["vit"]["env"] is None
    assert "claimed by 2 folders" in rows["twice"]["error"] and rows["mine"]["error"] is None
    assert "unknown model 'resnet9000'; expected one of" in rows["unknown-model"]["error"] and rows["unknown-model"]["models"] == []
    assert "'members' must be a non-empty list of {model, weights, sha256} objects" in rows["keyless"]["error"]
    with pytest.raises(ValueError, match="unknown model 'resnet9000'; expected one of"):  # the catalogue's error is load's
        pretrained.load("unknown-model")
    assert main(["backbones"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 7 and any(line.startswith("mine ") and "resnet8 0.5000 at 5.0M MACs" in line for line in lines)
    assert any(line.startswith("vit ") and "cannot be loaded" in line for line in lines)


def test_a_custom_backbone_registered_by_name_is_listed(capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """Registered as the design says (``BACKBONES[name] = factory``, nothing else): listed, not a KeyError."""
    from routing_env import backbones

    monkeypatch.setitem(backbones.BACKBONES, "my-net", backbones.tiny_cascade)
    rows = {row["name"]: row for row in backbones.backbone_catalogue()}
    assert rows["my-net"] | {"models": None} == {"name": "my-net", "kind": "custom", "env": "routing_env/Cascade-v0", "default": False,
                                                 "dataset": None, "needs_data": None, "exits": None, "models": None, "error": None}
    assert main(["backbones"]) == 0
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("my-net "))
    assert "custom, routing_env/Cascade-v0 (no data set registered: pass dataset=)" in line
