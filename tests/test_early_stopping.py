"""Early stopping on a held-out part of ``val`` (issue 13: regularisation of learned policies).

``val-fit`` / ``val-holdout`` partition ``val``; ``val-aug-fit`` holds every augmented view of the
``val-fit`` images and none of the held-out ones; a cascade serves the parts from its ``val`` caches;
``train`` keeps the policy that scored best on ``val-holdout`` and stops when it stops improving."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from routing_env.backbones.cascade import tiny_cascade
from routing_env.cli import main
from routing_env.data import HOLDOUT_FRACTION, VAL_AUG_VIEWS, Split, augmented_views, load_split, split_rows
from routing_env.experiments import EarlyStopping, SweepSpec, run_sweep, train_run
from routing_env.experiments.train import learn_with_early_stopping


def test_fit_and_holdout_partition_val() -> None:
    val = load_split("synthetic", "val")
    fit, held = load_split("synthetic", "val-fit"), load_split("synthetic", "val-holdout")
    rows_fit, rows_held = split_rows("val-fit", len(val)), split_rows("val-holdout", len(val))
    assert len(rows_held) == round(HOLDOUT_FRACTION * len(val)) and len(rows_fit) + len(rows_held) == len(val)
    assert not np.intersect1d(rows_fit, rows_held).size
    torch.testing.assert_close(held.inputs, val.inputs[torch.from_numpy(rows_held)])
    np.testing.assert_array_equal(fit.labels, val.labels[rows_fit])
    assert (fit.name, held.name) == ("val-fit", "val-holdout")


def test_val_aug_fit_holds_every_view_of_the_fit_images_and_none_of_the_held_out() -> None:
    images = torch.randint(0, 256, (50, 3, 8, 8), dtype=torch.uint8)
    val = Split("toy", "val", images, np.arange(50) % 10, 10)
    aug = augmented_views(val)
    rows = split_rows("val-aug-fit", len(aug))
    fit, held = split_rows("val-fit", 50), split_rows("val-holdout", 50)
    assert len(rows) == VAL_AUG_VIEWS * len(fit)
    np.testing.assert_array_equal(np.unique(rows % 50), fit)  # every view of the fit images…
    assert not np.isin(rows % 50, held).any()  # …and of no held-out one
    np.testing.assert_array_equal(aug.labels[rows], np.tile(val.labels[fit], VAL_AUG_VIEWS))


def test_cascade_serves_the_parts_from_its_val_cache(tmp_path: Path) -> None:
    cascade = tiny_cascade(cache_dir=tmp_path)
    whole = cascade.feature_cache("synthetic", "val")
    part = cascade.feature_cache("synthetic", "val-holdout")
    rows = split_rows("val-holdout", len(whole.labels))
    np.testing.assert_array_equal(part.logits, whole.logits[:, rows])
    np.testing.assert_array_equal(part.labels, load_split("synthetic", "val-holdout").labels)
    assert sorted(p.name.split("-synthetic-")[1].split("-")[0] for p in tmp_path.glob("*.npz")) == ["val"]  # no cache of its own


class ScriptedAgent:
    """Learns nothing; its held-out score is scripted by how many steps it has taken."""

    def __init__(self) -> None:
        self.steps = 0

    def learn(self, steps: int, logger: Any = None, progress: bool = False) -> None:
        self.steps += steps

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "policy.json").write_text(json.dumps({"steps": self.steps}))


def test_keeps_the_best_policy_and_stops_after_patience_scorings_without_a_better_one(tmp_path: Path) -> None:
    rewards = {100: 0.1, 200: 0.3, 300: 0.2, 400: 0.25, 500: 0.9}
    score = lambda agent: {"reward_mean": rewards[agent.steps], "accuracy": 0.5, "macs_fraction": 0.5}  # noqa: E731
    agent = ScriptedAgent()
    stopped = learn_with_early_stopping(agent, EarlyStopping(every=100, patience=2), 1000, score, tmp_path)
    assert (stopped["best_steps"], stopped["stopped_at"]) == (200, 400)  # 500's better score is never reached
    assert [row["steps"] for row in stopped["history"]] == [100, 200, 300, 400]
    assert json.loads((tmp_path / "policy.json").read_text()) == {"steps": 200}  # the run folder holds the best policy
    assert agent.steps == 400


def test_the_last_round_is_shorter_and_a_late_best_is_kept(tmp_path: Path) -> None:
    rewards = {100: 0.1, 200: 0.2, 250: 0.3}
    score = lambda agent: {"reward_mean": rewards[agent.steps], "accuracy": 0.5, "macs_fraction": 0.5}  # noqa: E731
    stopped = learn_with_early_stopping(ScriptedAgent(), EarlyStopping(every=100, patience=1), 250, score, tmp_path)
    assert (stopped["best_steps"], stopped["stopped_at"]) == (250, 250)
    assert json.loads((tmp_path / "policy.json").read_text()) == {"steps": 250}


def test_no_steps_saves_the_policy_as_made(tmp_path: Path) -> None:
    stopped = learn_with_early_stopping(ScriptedAgent(), EarlyStopping(100, 1), 0, lambda agent: {}, tmp_path)
    assert (stopped["best_steps"], stopped["stopped_at"], stopped["history"]) == (0, 0, [])
    assert json.loads((tmp_path / "policy.json").read_text()) == {"steps": 0}


@pytest.mark.parametrize(("options", "message"), [
    ({"split": "val"}, "learn on the rest of val, one of .*'val-fit', 'val-aug-fit'.*not split='val'"),
    ({"split": "val-holdout"}, "not split='val-holdout'"),
    ({"split": "val-fit", "train_backbone": True}, "co-trained backbone"),
    ({"split": "val-fit", "target_macs": 0.4}, "target_macs adapts lam"),
    ({"split": "train"}, "learn on the rest of val"),
])
def test_refuses_a_holdout_that_is_not_held_out(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        EarlyStopping(100, 2).check(options)


@pytest.mark.parametrize(("every", "patience"), [(0, 2), (100, 0), (1.5, 2), (True, 2)])
def test_refuses_bad_settings(every: Any, patience: Any) -> None:
    with pytest.raises(ValueError, match="early stopping needs (every|patience)"):
        EarlyStopping(every, patience)


def test_train_run_writes_the_best_policy_and_its_scorings(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "run"
    _, result = train_run("routing_env/Cascade-v0", {"backbone": "tiny-cascade", "split": "val-fit", "lam": 0.05}, "reinforce", {},
                          0, 6000, 16, out, early_stopping=EarlyStopping(every=1500, patience=10))
    stopped = json.loads((out / "holdout.json").read_text())
    assert len(stopped["history"]) == 4 and stopped["history"][-1]["steps"] >= 6000
    best = max(stopped["history"], key=lambda row: row["reward_mean"])
    assert stopped["best_steps"] == best["steps"] == result["early_stopping"]["best_steps"]
    assert (out / "policy.pt").read_bytes() == (out / "best" / "policy.pt").read_bytes()
    assert result["split"] == "val-fit"
    assert json.loads((out / "config.json").read_text())["early_stopping"] == {"every": 1500, "patience": 10}
    # the kept policy scores on val-holdout what the scoring said
    capsys.readouterr()
    assert main(["evaluate", "--run", str(out), "--split", "val-holdout", "--json"]) == 0
    scored = json.loads(capsys.readouterr().out)
    for key in ("reward_mean", "accuracy", "macs_fraction"):
        assert scored[key] == pytest.approx(best[key], abs=1e-9), key


def test_sweep_refuses_early_stopping_on_val_before_any_run(tmp_path: Path) -> None:
    spec = SweepSpec("routing_env/Cascade-v0", {"backbone": "tiny-cascade"}, ("reinforce",), (0.05,), (0,), 1000,
                     early_stopping=EarlyStopping(500, 2))
    with pytest.raises(ValueError, match="not split='val'"):
        run_sweep(spec, tmp_path)
    assert not (tmp_path / "runs").exists()


def test_cli_train_with_early_stopping(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    assert main(["train", "--backbone", "tiny-cascade", "--agent", "reinforce", "--env-kwargs", "split=val-fit", "--steps", "4000",
                 "--holdout-every", "1000", "--patience", "1", "--out", str(out), "--quiet"]) == 0
    assert "best on val-holdout" in capsys.readouterr().err
    assert json.loads((out / "config.json").read_text())["early_stopping"] == {"every": 1000, "patience": 1}
    holdout = json.loads((out / "holdout.json").read_text())
    assert (holdout["every"], holdout["patience"]) == (1000, 1)
    rewards = [h["reward_mean"] for h in holdout["history"]]
    best = rewards.index(max(rewards))  # the first scoring of the best reward
    assert holdout["best_steps"] == holdout["history"][best]["steps"]
    # patience 1: it stops at the first scoring that is not a new best (or at the end of the steps)
    first_worse = next((k for k in range(1, len(rewards)) if rewards[k] <= max(rewards[:k])), len(rewards) - 1)
    assert holdout["stopped_at"] == holdout["history"][first_worse]["steps"] and len(rewards) == first_worse + 1


def tiny_vector_env(split: str = "val-fit") -> Any:
    from routing_env.experiments import make_vector_env

    return make_vector_env("routing_env/Cascade-v0", 16, backbone="tiny-cascade", split=split, lam=0.05)


def test_sb3_rounds_run_inside_one_learn_so_schedules_span_the_run() -> None:
    from routing_env.agents import make_agent

    agent = make_agent("dqn", tiny_vector_env(), exploration_fraction=0.5, learning_starts=100)
    seen: list[tuple[int, float]] = []

    def after_round(steps: int) -> bool:
        seen.append((steps, agent.model.exploration_rate))
        return True

    agent.learn_rounds(4000, 1000, after_round)
    assert [steps for steps, _ in seen] == [1008, 2016, 3024, 4000]  # 16 instance-steps a step; the last round shorter
    # one learn over 4000 steps: ε falls from 1 to 0.05 over the first 2000 (separate learn calls would
    # restart the schedule over each round and reach 0.05 within the first 500 steps)
    assert seen[0][1] == pytest.approx(1 - 0.95 * 1008 / 2000, abs=0.01) and seen[-1][1] == pytest.approx(0.05)


def test_sb3_rounds_stop_learning_when_told() -> None:
    from routing_env.agents import make_agent

    agent = make_agent("ppo", tiny_vector_env())
    calls: list[int] = []
    agent.learn_rounds(10_240, 2048, lambda steps: bool(calls.append(steps)) or len(calls) < 2)
    assert calls == [2048, 4096] and agent.model.num_timesteps < 10_240


def test_cli_refuses_patience_without_early_stopping(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--backbone", "tiny-cascade", "--agent", "random", "--steps", "10", "--patience", "3", "--out", str(tmp_path)]) != 0
    assert "--patience 3 needs --holdout-every" in capsys.readouterr().err


def test_a_run_without_early_stopping_leaves_no_stale_scorings(tmp_path: Path) -> None:
    options = {"backbone": "tiny-cascade", "split": "val-fit", "lam": 0.05}
    train_run("routing_env/Cascade-v0", options, "threshold", {}, 0, 2000, 16, tmp_path, early_stopping=EarlyStopping(1000, 1))
    assert (tmp_path / "holdout.json").is_file() and (tmp_path / "best").is_dir()
    train_run("routing_env/Cascade-v0", options, "threshold", {}, 0, 0, 16, tmp_path)
    assert not (tmp_path / "holdout.json").exists() and not (tmp_path / "best").exists()


def test_no_steps_still_tunes_what_learns_without_steps(tmp_path: Path) -> None:
    options = {"backbone": "tiny-cascade", "split": "val-fit", "lam": 0.05}
    _, plain = train_run("routing_env/Cascade-v0", options, "threshold", {}, 0, 0, 16, tmp_path / "plain")
    _, stopped = train_run("routing_env/Cascade-v0", options, "threshold", {}, 0, 0, 16, tmp_path / "stopped",
                           early_stopping=EarlyStopping(1000, 1))
    assert json.loads((tmp_path / "stopped" / "agent.json").read_text())["options"] == json.loads((tmp_path / "plain" / "agent.json").read_text())["options"]
    assert stopped["accuracy"] == plain["accuracy"] and stopped["macs_fraction"] == plain["macs_fraction"]


def test_reinforce_rounds_count_the_steps_it_learned(tmp_path: Path) -> None:
    _, result = train_run("routing_env/Cascade-v0", {"backbone": "tiny-cascade", "split": "val-fit", "lam": 0.05}, "reinforce", {},
                          0, 3000, 16, tmp_path, early_stopping=EarlyStopping(every=1000, patience=10))
    steps = [row["steps"] for row in json.loads((tmp_path / "holdout.json").read_text())["history"]]
    assert steps == sorted(steps) and all(s >= 1000 * (k + 1) for k, s in enumerate(steps)) and steps[-1] >= 3000
    assert steps[0] > 1000  # whole updates: the first round ran past 1,000 and says so
