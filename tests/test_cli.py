import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from routing_env.cli import main

ROOT = Path(__file__).resolve().parents[1]
EVAL_KEYS = {"policy", "env", "split", "n", "accuracy", "macs_mean", "macs_fraction",
             "reference_accuracy", "reference_macs", "exit_histogram"}


def run_cli(*args: str, cwd: Path | None = None, pythonpath: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = f"{pythonpath}{os.pathsep}{env.get('PYTHONPATH', '')}"
    return subprocess.run([sys.executable, "-m", "routing_env", *args], capture_output=True, text=True, env=env, cwd=cwd)


def test_train_then_evaluate_run(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert main(["train", "--agent", "reinforce", "--lam", "0.05", "--steps", "2000", "--out", str(out), "--quiet"]) == 0
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
    main(["train", "--agent", "reinforce", "--steps", "3000", "--out", str(out), "--quiet"])
    acc = EventAccumulator(str(out / "tb"))
    acc.Reload()
    scalars = set(acc.Tags()["scalars"])
    assert {"charts/episodic_return", "charts/accuracy", "charts/macs_fraction", "charts/SPS", "losses/policy_loss"} <= scalars


def test_sb3_training_writes_tensorboard_charts(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "ppo"
    main(["train", "--agent", "ppo", "--steps", "2048", "--out", str(out), "--quiet"])
    acc = EventAccumulator(str(out / "tb"))
    acc.Reload()
    assert {"charts/accuracy", "charts/macs_fraction"} <= set(acc.Tags()["scalars"])


def test_evaluate_baselines_reproduce_single_exit_accuracy(capsys: pytest.CaptureFixture) -> None:
    assert main(["evaluate", "--agent", "fixed", "--agent-kwargs", "position=2", "--split", "test", "--json"]) == 0
    fixed = json.loads(capsys.readouterr().out)
    assert fixed["accuracy"] == fixed["reference_accuracy"]
    assert fixed["exit_histogram"] == [0, 0, fixed["n"]]
    assert main(["evaluate", "--agent", "oracle", "--json"]) == 0
    oracle = json.loads(capsys.readouterr().out)
    assert oracle["uses_labels"] is True and oracle["accuracy"] >= fixed["accuracy"]


def test_custom_agent_from_the_readme(tmp_path: Path) -> None:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- custom-agent-example -->\s*```python\n(.*?)```", text, re.S)
    assert block, "the README lost its custom agent example"
    (tmp_path / "my_agents.py").write_text(block.group(1))
    done = run_cli("evaluate", "--agent", "my_agents:ConfidentExit", "--split", "test", "--json", pythonpath=tmp_path)
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
        (["evaluate", "--agent", "random", "--lam", "-1"], r"lam must be a number >= 0, got -1.0"),
        (["evaluate", "--agent", "random", "--env-kwargs", "obs_mode=pixels"], r"unknown obs_mode 'pixels'"),
        (["evaluate", "--agent", "random", "--env-kwargs", "colour=red"], r"unknown environment option\(s\) \['colour'\]"),
        (["evaluate", "--agent", "random", "--env-kwargs", "colour"], r"'colour' is not of the form KEY=VALUE"),
        (["evaluate", "--run", "/nonexistent/run"], r"config.json does not exist"),
        (["evaluate"], r"exactly one of --run DIR or --agent NAME"),
    ],
)
def test_bad_input_is_a_one_line_error(args: list[str], message: str, capsys: pytest.CaptureFixture) -> None:
    assert main(args) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and re.search(message, lines[0]), captured.err


def test_demo_prints_the_comparison_table(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["demo", "--out", str(tmp_path / "demo"), "--steps", "3000", "--quiet"]) == 0
    out = capsys.readouterr().out
    for row in ("fixed route, exit at point 0", "reference model alone", "threshold", "reinforce (learned)", "oracle (upper bound, uses labels)"):
        assert row in out
    rows = json.loads((tmp_path / "demo" / "results.json").read_text())["rows"]
    assert len(rows) == 7


def test_console_script_and_module_agree() -> None:
    done = run_cli("--version")
    assert done.returncode == 0 and done.stdout.startswith("routing-env ")
