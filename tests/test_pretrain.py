import json
import time
from pathlib import Path

import pytest
import torch

from routing_env.backbones.resnet import resnet8
from routing_env.checkpoints import file_sha256, load_state_dict
from routing_env.pretrain import PretrainArgs, pretrain

SMOKE = dict(backbone="resnet8", batch_size=32, subset=96, seed=3)


def test_seeded_pretraining_is_reproducible(cifar_root: str, tmp_path: Path) -> None:
    cards = [pretrain(PretrainArgs(epochs=1, **SMOKE), tmp_path / d, data_root=cifar_root, progress=False) for d in "ab"]
    assert cards[0]["sha256"] == cards[1]["sha256"] == file_sha256(tmp_path / "a" / "weights.pt")
    assert load_state_dict(tmp_path / "a" / "checkpoint.pt")["epoch"] == 1


def test_interrupted_run_resumes_to_the_same_weights(cifar_root: str, tmp_path: Path, monkeypatch) -> None:
    import routing_env.pretrain as module

    args = PretrainArgs(epochs=2, **SMOKE)
    full = pretrain(args, tmp_path / "full", data_root=cifar_root, progress=False)
    assert [(h["first_epoch"], h["last_epoch"]) for h in full["history"]] == [(1, 2)]

    calls = {"n": 0}
    real = module.save_state_dict

    def crash_after_first_epoch(state, path):
        real(state, path)
        if Path(path).name == "checkpoint.pt":
            calls["n"] += 1
            if calls["n"] == 1:
                raise KeyboardInterrupt

    monkeypatch.setattr(module, "save_state_dict", crash_after_first_epoch)
    with pytest.raises(KeyboardInterrupt):
        pretrain(args, tmp_path / "cut", data_root=cifar_root, progress=False)
    monkeypatch.setattr(module, "save_state_dict", real)
    with pytest.raises(ValueError, match="pass --resume"):
        pretrain(args, tmp_path / "cut", data_root=cifar_root, progress=False)
    resumed = pretrain(args, tmp_path / "cut", resume=True, data_root=cifar_root, progress=False)
    assert [(h["first_epoch"], h["last_epoch"]) for h in resumed["history"]] == [(1, 1), (2, 2)]
    assert all(h["git_commit"] == resumed["provenance"]["git_commit"] for h in resumed["history"])
    assert "epochs 2–2" in (tmp_path / "cut" / "MODEL_CARD.md").read_text()
    a = load_state_dict(tmp_path / "full" / "weights.pt")
    b = load_state_dict(tmp_path / "cut" / "weights.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_refuses_an_init_file_replaced_under_the_same_path(cifar_root: str, tmp_path: Path) -> None:
    """The arguments hold the init's path only; the checkpoint records its sha256, and a resume from
    other weights under that path is refused, naming both hashes, with the checkpoint untouched."""
    init = tmp_path / "init.pt"
    torch.save(resnet8().state_dict(), init)
    args = PretrainArgs(epochs=1, init=str(init), **SMOKE)
    pretrain(args, tmp_path / "run", data_root=cifar_root, progress=False)
    checkpoint = tmp_path / "run" / "checkpoint.pt"
    before = file_sha256(checkpoint)
    first = file_sha256(init)
    torch.manual_seed(1)
    torch.save(resnet8().state_dict(), init)
    with pytest.raises(ValueError, match=f"other init weights: sha256 init {first} then, {file_sha256(init)} now"):
        pretrain(args, tmp_path / "run", resume=True, data_root=cifar_root, progress=False)
    # checked before the init is read: weights that no longer fit are named as replaced, not as unfit
    torch.save({"stem.weight": torch.zeros(1)}, init)
    with pytest.raises(ValueError, match="other init weights"):
        pretrain(args, tmp_path / "run", resume=True, data_root=cifar_root, progress=False)
    assert file_sha256(checkpoint) == before


def test_an_epoch_logged_again_after_a_kill_appears_once_in_tensorboard(cifar_root: str, tmp_path: Path, monkeypatch) -> None:
    """Killed after logging epoch 2 but before its checkpoint, the run logs epoch 2 again on resume;
    the reader (TensorBoard's EventAccumulator) keeps one point per epoch, the resumed run's."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    import routing_env.pretrain as module

    args = PretrainArgs(epochs=3, **SMOKE)
    real = module.save_state_dict
    calls = {"n": 0}

    def killed_before_second_checkpoint(state, path):
        if Path(path).name == "checkpoint.pt":
            calls["n"] += 1
            if calls["n"] == 2:
                raise KeyboardInterrupt
        real(state, path)

    monkeypatch.setattr(module, "save_state_dict", killed_before_second_checkpoint)
    with pytest.raises(KeyboardInterrupt):
        pretrain(args, tmp_path / "run", data_root=cifar_root, progress=False)
    monkeypatch.setattr(module, "save_state_dict", real)
    time.sleep(1.1)  # event files sort by their creation second: the resumed run's must sort last
    card = pretrain(args, tmp_path / "run", resume=True, data_root=cifar_root, progress=False)
    events = EventAccumulator(str(tmp_path / "run" / "tb"))
    events.Reload()
    assert [e.step for e in events.Scalars("val/accuracy")] == [1, 2, 3]
    assert events.Scalars("val/accuracy")[-1].value == pytest.approx(card["val_accuracy"], abs=1e-6)


def test_model_card_fields(cifar_root: str, tmp_path: Path) -> None:
    card = pretrain(PretrainArgs(epochs=1, ema=0.9, schedule="onecycle", **SMOKE), tmp_path / "c", data_root=cifar_root,
                    progress=False, command="routing-env pretrain ...")
    on_disk = json.loads((tmp_path / "c" / "model_card.json").read_text())
    assert on_disk == card
    for key in ("test_accuracy", "val_accuracy", "macs", "parameters", "epochs", "wall_time_hours", "machine", "command", "sha256"):
        assert key in card
    assert card["macs"] == 12_239_488
    assert card["trained_on"] == f"the first {SMOKE['subset']} images of the train split (a smoke test)"
    assert card["parameters"] == sum(p.numel() for p in resnet8().parameters())
    assert "test accuracy" in (tmp_path / "c" / "MODEL_CARD.md").read_text()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"backbone": "vgg"}, "unknown backbone 'vgg' for pretraining"), ({"backbone": "resnet8", "schedule": "step"}, "unknown schedule"),
     ({"backbone": "resnet8", "ema": 1.5}, "ema must be a decay"),
     ({"backbone": "resnet8", "precision": "fp16"}, r"unknown precision 'fp16'; expected one of \('fp32', 'bf16'\)"),
     ({"backbone": "resnet8", "warmup_epochs": -1}, "warmup_epochs must be an integer >= 0, got -1"),
     ({"backbone": "resnet8", "subset": -5}, "subset must be an integer >= 1, got -5"),
     ({"backbone": "resnet8", "subset": 0}, "subset must be an integer >= 1, got 0"),
     ({"backbone": "resnet8", "epochs": 2.5}, "epochs must be an integer >= 1, got 2.5"),
     ({"backbone": "resnet20-dynamic", "sandwich": 1.5}, "sandwich must be an integer >= 0, got 1.5"),
     ({"backbone": "resnet8", "seed": -1}, "seed must be an integer >= 0, got -1")],
)
def test_bad_pretrain_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        PretrainArgs(**kwargs)


def test_a_batch_larger_than_the_train_split_is_refused_before_anything_is_written(cifar_root: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"batch_size 128 is larger than the train split \(96 images\)"):
        pretrain(PretrainArgs(epochs=1, **{**SMOKE, "batch_size": 128}), tmp_path / "e", data_root=cifar_root, progress=False)
    assert not (tmp_path / "e").exists()


def test_an_invalid_device_is_named_before_any_work(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="invalid device 'gpu7'"):
        pretrain(PretrainArgs(epochs=1, **SMOKE), tmp_path / "d", data_root=str(tmp_path / "no-data"), device="gpu7")


def test_dynamic_pretraining_starts_from_a_plain_resnet_and_reports_routes(cifar_root: str, tmp_path: Path) -> None:
    from routing_env.backbones.resnet import resnet20
    from routing_env.checkpoints import save_state_dict
    from routing_env.pretrain import build_model

    torch.manual_seed(0)
    plain = resnet20().eval()
    save_state_dict(plain.state_dict(), tmp_path / "plain.pt")
    args = PretrainArgs(backbone="resnet20-dynamic", init=str(tmp_path / "plain.pt"), epochs=1, batch_size=32, subset=64, sandwich=1)
    started = build_model(args, 10).eval()
    x = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        assert torch.allclose(started(x), plain(x), atol=1e-5)
    card = pretrain(args, tmp_path / "dyn", data_root=cifar_root, progress=False)
    routes = {r["route"]: r for r in card["routes_on_test"]}
    assert set(routes) == {"full", "width 0.25", "width 0.5", "width 0.75", "exit after block 3", "exit after block 6",
                           "random skip 0.25", "random skip 0.5"}
    assert routes["full"]["accuracy"] == card["test_accuracy"] and routes["full"]["macs"] == card["macs"] == 40_551_040
    assert routes["width 0.25"]["macs_fraction"] < routes["width 0.5"]["macs_fraction"] < routes["width 0.75"]["macs_fraction"] < 1
    assert routes["random skip 0.5"]["macs"] < routes["random skip 0.25"]["macs"] < card["macs"]
    assert card["init_sha256"] == file_sha256(tmp_path / "plain.pt") and card["exits"] == "stage" and card["num_blocks"] == 9
    assert "random skip 0.5" in (tmp_path / "dyn" / "MODEL_CARD.md").read_text()
    with pytest.raises(ValueError, match="does not fit resnet56-dynamic"):
        build_model(PretrainArgs(backbone="resnet56-dynamic", init=str(tmp_path / "plain.pt")), 10)


def test_a_teacher_replaces_the_full_paths_target(tmp_path: Path) -> None:
    """With a teacher's softmax, a route's distillation loss is its cross-entropy against the teacher's
    softmax, and the full path's loss mixes labels and teacher half and half."""
    import torch.nn.functional as F

    from routing_env.backbones.resnet import resnet20_dynamic, sandwich_loss

    torch.manual_seed(0)
    model = resnet20_dynamic().eval()
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
    teacher_logits = torch.randn(8, 10) * 3
    criterion = torch.nn.CrossEntropyLoss()
    gen = lambda: torch.Generator().manual_seed(5)  # noqa: E731
    with torch.no_grad():
        loss, logits = sandwich_loss(model, x, y, criterion, gen(), sandwich=0, teacher=F.softmax(teacher_logits, dim=1))
        full = model.forward_exits(x, [3] * model.num_blocks)
        narrow = model.forward_exits(x, [0] * model.num_blocks)
        p = F.softmax(teacher_logits, dim=1)
        soft = lambda z: -(p * F.log_softmax(z, dim=1)).sum(1).mean()  # noqa: E731
        expected = sum(0.5 * criterion(z, y) + 0.5 * soft(z) for z in full) / len(full) + sum(soft(z) for z in narrow) / len(narrow)
        assert torch.allclose(logits, full[-1])
        assert torch.allclose(loss, expected, atol=1e-5)
        plain, _ = sandwich_loss(model, x, y, criterion, gen(), sandwich=0)
        assert not torch.allclose(plain, loss)


def test_teacher_is_read_from_a_plain_resnet_and_refused_otherwise(tmp_path: Path) -> None:
    from routing_env.backbones.resnet import resnet20_dynamic, resnet56
    from routing_env.checkpoints import save_state_dict
    from routing_env.pretrain import build_teacher

    save_state_dict(resnet56().state_dict(), tmp_path / "r56.pt")
    teacher = build_teacher(str(tmp_path / "r56.pt"), 10)
    assert sum(p.numel() for p in teacher.parameters()) == sum(p.numel() for p in resnet56().parameters())
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    save_state_dict(resnet20_dynamic().state_dict(), tmp_path / "dyn.pt")
    with pytest.raises(ValueError, match="is not a plain CIFAR ResNet"):
        build_teacher(str(tmp_path / "dyn.pt"), 10)


def test_a_plain_member_distils_from_a_teacher(cifar_root: str, tmp_path: Path) -> None:
    """A small cascade member can learn from a large one: the teacher changes the weights it ends
    with, and its card names the teacher's file by sha256."""
    from routing_env.backbones.resnet import resnet20
    from routing_env.checkpoints import save_state_dict

    save_state_dict(resnet20().state_dict(), tmp_path / "r20.pt")
    plain = pretrain(PretrainArgs(epochs=1, **SMOKE), tmp_path / "plain", data_root=cifar_root, progress=False)
    taught = pretrain(PretrainArgs(epochs=1, teacher=str(tmp_path / "r20.pt"), **SMOKE), tmp_path / "kd", data_root=cifar_root, progress=False)
    assert taught["sha256"] != plain["sha256"]
    assert taught["teacher_sha256"] == file_sha256(tmp_path / "r20.pt")
    assert "teacher_sha256" not in plain


def test_a_checkpoint_from_before_an_option_existed_still_resumes() -> None:
    from dataclasses import asdict

    from routing_env.checkpoints import changed_arguments

    args = PretrainArgs(backbone="resnet20-dynamic", epochs=30)
    old = asdict(args)
    del old["teacher"]
    assert changed_arguments(json.dumps(old, sort_keys=True), args) == []
    assert changed_arguments(json.dumps(old, sort_keys=True), PretrainArgs(backbone="resnet20-dynamic", epochs=30, teacher="t.pt")) != []
    assert changed_arguments(json.dumps({**old, "epochs": 31}), args) != []


def test_a_refused_resume_names_each_changed_argument_then_and_now() -> None:
    from dataclasses import asdict

    from routing_env.checkpoints import changed_arguments

    args = PretrainArgs(backbone="resnet110", epochs=160, precision="bf16")
    written = json.dumps(asdict(args))
    assert changed_arguments(written, args) == []
    assert changed_arguments(written, PretrainArgs(backbone="resnet110", epochs=160, precision="fp32", ema=0.999)) == [
        "ema: then None, now 0.999", "precision: then 'bf16', now 'fp32'"]
    without_backbone = {k: v for k, v in asdict(args).items() if k != "backbone"}  # a required field: not the same run
    assert changed_arguments(json.dumps(without_backbone), args) == ["backbone: absent then (a required argument added since), now 'resnet110'"]


def test_exact_batchnorm_statistics_average_the_passes_and_restore_the_mode() -> None:
    from routing_env.backbones.resnet import exact_batchnorm_statistics, resnet8

    model = resnet8().eval()
    batches = [torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8) for _ in range(2)]
    with exact_batchnorm_statistics(model):
        for x in batches:
            model(x)
    assert not model.training and model.bn1.momentum == 0.1
    with torch.no_grad():  # the stem's BatchNorm holds the mean of the two batches' channel means
        stem = [model.conv1(model.normalize(x)).mean(dim=(0, 2, 3)) for x in batches]
    assert torch.allclose(model.bn1.running_mean, (stem[0] + stem[1]) / 2, atol=1e-4)


def test_heads_only_adds_block_exits_and_leaves_every_other_weight_as_it_was(cifar_root: str, tmp_path: Path) -> None:
    """``--exits block --heads-only`` from a stage-exit model trains the six new heads and nothing else:
    the trunk, its BatchNorm statistics and the stage heads are the init's, so every old route keeps
    its logits, and every new head moved from where it started."""
    from routing_env.backbones.resnet import resnet20_dynamic
    from routing_env.checkpoints import save_state_dict

    torch.manual_seed(0)
    stage = resnet20_dynamic().eval()
    save_state_dict(stage.state_dict(), tmp_path / "stage.pt")
    args = PretrainArgs(backbone="resnet20-dynamic", init=str(tmp_path / "stage.pt"), exits="block", heads_only=True,
                        epochs=1, batch_size=32, subset=64, sandwich=1, monitor=0, seed=1)
    card = pretrain(args, tmp_path / "heads", data_root=cifar_root, progress=False)
    assert card["exits"] == "block" and card["recalibration"] is None
    trained = load_state_dict(tmp_path / "heads" / "weights.pt")
    before = load_state_dict(tmp_path / "stage.pt")
    assert set(trained) - set(before) == {f"heads.{p}.fc.{t}" for p in (1, 2, 4, 5, 7, 8) for t in ("weight", "bias")}
    assert all(torch.equal(trained[k], before[k]) for k in before)  # trunk, BatchNorm buffers, stage heads
    from routing_env.pretrain import build_model

    torch.manual_seed(args.seed)
    fresh = build_model(args, 10).state_dict()  # pretrain's model before its first step
    assert all(not torch.equal(trained[f"heads.{p}.fc.weight"], fresh[f"heads.{p}.fc.weight"]) for p in (1, 2, 4, 5, 7, 8))
    exits = {r["route"] for r in card["routes_on_test"] if r["route"].startswith("exit")}
    assert exits == {f"exit after block {p}" for p in range(1, 9)}


def test_heads_only_needs_an_init_with_fewer_heads(tmp_path: Path) -> None:
    from routing_env.backbones.resnet import resnet20_dynamic
    from routing_env.checkpoints import save_state_dict
    from routing_env.pretrain import build_model, freeze_all_but_new_heads

    with pytest.raises(ValueError, match="heads_only trains the heads that init lacks: pass init"):
        PretrainArgs(backbone="resnet20-dynamic", exits="block", heads_only=True)
    with pytest.raises(ValueError, match="unknown exits 'layer'"):
        PretrainArgs(backbone="resnet20-dynamic", exits="layer")
    with pytest.raises(ValueError, match="heads_only is for dynamic backbones"):
        PretrainArgs(backbone="resnet8", init="x.pt", heads_only=True)
    save_state_dict(resnet20_dynamic().state_dict(), tmp_path / "stage.pt")
    model = build_model(PretrainArgs(backbone="resnet20-dynamic", init=str(tmp_path / "stage.pt")), 10)
    with pytest.raises(ValueError, match="init already has every exit head"):
        freeze_all_but_new_heads(model, load_state_dict(tmp_path / "stage.pt"))
    save_state_dict(resnet20_dynamic(exits="block").state_dict(), tmp_path / "block.pt")
    with pytest.raises(ValueError, match="does not fit resnet20-dynamic"):
        build_model(PretrainArgs(backbone="resnet20-dynamic", init=str(tmp_path / "block.pt")), 10)
    without_stage_head = {k: v for k, v in resnet20_dynamic().state_dict().items() if not k.startswith("heads.6.")}
    save_state_dict(without_stage_head, tmp_path / "no-head-6.pt")
    for exits in ("stage", "block"):  # only the heads inside a stage may be new, never a stage exit
        with pytest.raises(ValueError, match="does not fit resnet20-dynamic"):
            build_model(PretrainArgs(backbone="resnet20-dynamic", init=str(tmp_path / "no-head-6.pt"), exits=exits), 10)
    # a plain network's init has no dynamic heads at all: every head, the full path's too, would train
    from routing_env.backbones.resnet import resnet20

    save_state_dict(resnet20().state_dict(), tmp_path / "plain.pt")
    with pytest.raises(ValueError, match="heads_only: init is a plain network's state_dict"):
        freeze_all_but_new_heads(model, load_state_dict(tmp_path / "plain.pt"))


def test_full_width_routes_train_skip_patterns_at_full_width() -> None:
    from routing_env.backbones.resnet import SKIP_CHOICE, random_route, resnet20_dynamic

    model = resnet20_dynamic()
    full = len(model.widths) - 1

    def draw(uniform: float, full_width: float, seed: int) -> list[int]:
        return random_route(model, 0.5, torch.Generator().manual_seed(seed), uniform, full_width)

    # full_width=1: every kept block at full width, and skips still drawn
    routes = [draw(0.0, 1.0, seed) for seed in range(200)]
    assert all(c in (full, SKIP_CHOICE) for route in routes for c in route)
    assert any(SKIP_CHOICE in route for route in routes)
    # full_width=0 leaves the random stream as it was: the routes random_route drew before the option
    # existed (recorded at e187096), so a checkpoint written then resumes along the same routes
    assert [draw(0.5, 0.0, seed) for seed in range(4)] == [
        [3, -1, -1, 3, 3, 3, 3, -1, 3],
        [3, 0, -1, 3, 1, 3, 1, 3, 0],
        [3, 1, 0, 2, 3, 2, 3, 0, 3],
        [0, 0, 0, 0, 0, 0, 0, 0, 0],
    ]
    # the three kinds in their proportions: mixed, uniform, full width
    generator = torch.Generator().manual_seed(0)
    kinds = {"uniform": 0, "full": 0, "mixed": 0}
    for _ in range(2000):
        kept = {c for c in random_route(model, 0.0, generator, 0.3, 0.4)}
        kinds["full" if kept == {full} else "uniform" if len(kept) == 1 else "mixed"] += 1
    # a uniform route at full width counts as full: expected 0.4 + 0.3/4, 0.3 * 3/4, 0.3
    assert abs(kinds["full"] / 2000 - 0.475) < 0.04
    assert abs(kinds["uniform"] / 2000 - 0.225) < 0.04
    assert abs(kinds["mixed"] / 2000 - 0.3) < 0.04
    with pytest.raises(ValueError, match="0.7 and 0.4"):
        random_route(model, 0.5, generator, 0.7, 0.4)


def test_whole_uniform_routes_train_each_slimmed_network_whole() -> None:
    """``whole_uniform``: a uniform route skips nothing, the other routes are the ones drawn without it,
    and the random stream is the same (so the option changes which blocks run, not what is drawn)."""
    from routing_env.backbones.resnet import SKIP_CHOICE, random_route, resnet20_dynamic

    model = resnet20_dynamic()
    before, after = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    whole = {w: 0 for w in range(len(model.widths))}
    for _ in range(2000):
        old = random_route(model, 0.5, before, 0.5, 0.3)
        new = random_route(model, 0.5, after, 0.5, 0.3, whole_uniform=True)
        kept = {c for c in new if c != SKIP_CHOICE}
        if SKIP_CHOICE not in new and len(kept) == 1:
            whole[kept.pop()] += 1
        if new != old:  # only a skipping route of one width can change, and only by losing its skips
            assert SKIP_CHOICE in old and SKIP_CHOICE not in new
            assert len({c for c in old if c != SKIP_CHOICE}) == 1
            assert all(c == n for c, n in zip(old, new) if c != SKIP_CHOICE)
    assert torch.equal(before.get_state(), after.get_state())
    # uniform routes 0.5 / 4 widths = 0.125 whole each (v2's mix, with skips: about 0.03 for 0.5 and 0.75)
    for w in (0, 1, 2):
        assert abs(whole[w] / 2000 - 0.125) < 0.03, whole


def test_whole_uniform_routes_reach_the_sandwich_and_are_refused_where_they_do_nothing(cifar_root: str, tmp_path: Path, monkeypatch) -> None:
    import routing_env.pretrain as module

    seen = []
    real = module.sandwich_loss

    def recording(*args, **kwargs):
        seen.append(args[10])  # whole_uniform, after full_width
        return real(*args, **kwargs)

    monkeypatch.setattr(module, "sandwich_loss", recording)
    args = PretrainArgs(backbone="resnet20-dynamic", epochs=1, batch_size=32, subset=64, recalibrate=0, monitor=0,
                        whole_uniform_routes=True)
    pretrain(args, tmp_path / "run", data_root=cifar_root, progress=False)
    assert seen == [True, True]
    with pytest.raises(ValueError, match="whole_uniform_routes is for dynamic backbones"):
        PretrainArgs(backbone="resnet8", whole_uniform_routes=True)
    with pytest.raises(ValueError, match="uniform_routes is 0"):
        PretrainArgs(backbone="resnet20-dynamic", uniform_routes=0.0, whole_uniform_routes=True)


def test_full_width_routes_must_leave_room_for_uniform_routes() -> None:
    with pytest.raises(ValueError, match=r"uniform_routes \+ full_width_routes must be at most 1, got 0.5 \+ 0.6"):
        PretrainArgs(backbone="resnet20-dynamic", uniform_routes=0.5, full_width_routes=0.6)
    # sums of exactly 1 are accepted (as random_route accepts them), whatever the float rounding
    for uniform, full_width in ((0.55, 0.45), (0.34, 0.66), (0.07, 0.93)):
        PretrainArgs(backbone="resnet20-dynamic", uniform_routes=uniform, full_width_routes=full_width)
    with pytest.raises(ValueError, match="full_width_routes is for dynamic backbones, got it for 'resnet20'"):
        PretrainArgs(backbone="resnet20", full_width_routes=0.3)  # a plain network has no routes to draw


def test_a_time_limit_stops_on_a_whole_epoch_and_the_run_resumes(cifar_root: str, tmp_path: Path, monkeypatch) -> None:
    """``time_limit`` starts an epoch only if the last one's duration says it ends in time: the run
    stops with its checkpoint written and no card, and ``resume`` goes on to the same weights as an
    uninterrupted run. The clock is pretrain's own (each read advances it 10 s)."""
    import types

    import routing_env.pretrain as module

    args = PretrainArgs(epochs=3, **SMOKE)
    full = pretrain(args, tmp_path / "full", data_root=cifar_root, progress=False)
    clock = {"t": 0.0}

    def tick() -> float:
        clock["t"] += 10.0
        return clock["t"]

    monkeypatch.setattr(module, "time", types.SimpleNamespace(time=tick))
    # start at 10 s; epoch 1 begins at 20 s (no estimate yet) and, read at 30 and 40 s, takes 20 s;
    # epoch 2 would begin at 50 s and end at 70 s, past the limit of 60 s: stop after epoch 1
    stopped = pretrain(args, tmp_path / "cut", data_root=cifar_root, progress=False, time_limit=50 / 60)
    assert stopped == {"stopped": True, "epoch": 1, "epochs": 3, "checkpoint": str(tmp_path / "cut" / "checkpoint.pt")}
    assert load_state_dict(tmp_path / "cut" / "checkpoint.pt")["epoch"] == 1
    assert not (tmp_path / "cut" / "model_card.json").exists()
    monkeypatch.setattr(module, "time", __import__("time"))
    # a resumed call has no estimate of its own yet: its first epoch runs whatever the limit, then it stops
    again = pretrain(args, tmp_path / "cut", resume=True, data_root=cifar_root, progress=False, time_limit=1e-5)
    assert again["stopped"] and again["epoch"] == 2
    resumed = pretrain(args, tmp_path / "cut", resume=True, data_root=cifar_root, progress=False, time_limit=60)
    assert resumed["sha256"] == full["sha256"]
    with pytest.raises(ValueError, match="time_limit must be a positive number of minutes, got -1"):
        pretrain(args, tmp_path / "bad", data_root=cifar_root, progress=False, time_limit=-1)


def test_a_diverged_epoch_raises_and_leaves_the_last_good_checkpoint(cifar_root: str, tmp_path: Path, monkeypatch) -> None:
    """A NaN loss (here: NaN images from the second epoch on) stops the run before it writes anything of
    that epoch, so ``--resume`` can go on from the last finite one."""
    import routing_env.pretrain as module

    real, calls = module.augment, {"n": 0}

    def nan_after_the_first_epoch(x, generator):  # noqa: ANN001, ANN202
        calls["n"] += 1
        out = real(x, generator)
        return out * float("nan") if calls["n"] > 3 else out  # 96 images, batch 32: three steps an epoch

    monkeypatch.setattr(module, "augment", nan_after_the_first_epoch)
    with pytest.raises(FloatingPointError, match="epoch 2: the training loss is nan; nothing of this epoch is written"):
        pretrain(PretrainArgs(epochs=3, **SMOKE), tmp_path / "run", data_root=cifar_root, progress=False)
    saved = load_state_dict(tmp_path / "run" / "checkpoint.pt")
    assert saved["epoch"] == 1 and all(torch.isfinite(v).all() for v in saved["model"].values() if v.is_floating_point())


def test_each_segment_records_its_command_and_code_and_a_resume_says_when_the_code_changed(
    cifar_root: str, tmp_path: Path, monkeypatch, capsys
) -> None:  # noqa: ANN001
    import routing_env.pretrain as module

    args = PretrainArgs(epochs=2, **SMOKE)
    stopped = pretrain(args, tmp_path / "run", data_root=cifar_root, progress=False, time_limit=1e-5, command="first")
    assert stopped["stopped"] and stopped["epoch"] == 1
    capsys.readouterr()
    code = module.training_code_sha256()
    monkeypatch.setattr(module, "training_code_sha256", lambda: "0" * 64)  # the code edited between the segments
    card = pretrain(args, tmp_path / "run", resume=True, data_root=cifar_root, progress=False, command="second")
    assert "the training code (pretrain.py, data.py, checkpoints.py, backbones/resnet.py) changed since epochs 1–1" in capsys.readouterr().err
    assert [(h["command"], h["code_sha256"]) for h in card["history"]] == [("first", code), ("second", "0" * 64)]
    assert "epochs 1–1" in (md := (tmp_path / "run" / "MODEL_CARD.md").read_text()) and ": `first`" in md and ": `second`" in md


def test_a_run_whose_checkpoint_is_lost_is_not_started_over_its_curves(cifar_root: str, tmp_path: Path) -> None:
    """The same ``--resume`` command serves every segment, so a checkpoint lost between sessions would
    silently start the run over and purge its TensorBoard curves: refused, naming the last epoch logged."""
    args = PretrainArgs(epochs=2, **SMOKE)
    assert pretrain(args, tmp_path / "run", data_root=cifar_root, progress=False, time_limit=1e-5)["stopped"]
    (tmp_path / "run" / "checkpoint.pt").unlink()
    with pytest.raises(ValueError, match="holds TensorBoard curves of an earlier run up to epoch 1 and no checkpoint.pt"):
        pretrain(args, tmp_path / "run", resume=True, data_root=cifar_root, progress=False)
    import shutil

    shutil.rmtree(tmp_path / "run" / "tb")  # as the message says: then it starts afresh
    assert pretrain(args, tmp_path / "run", resume=True, data_root=cifar_root, progress=False)["epochs"] == 2
