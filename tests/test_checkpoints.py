import pytest
import torch

from routing_env.checkpoints import file_sha256, load_state_dict, resumes, save_state_dict, state_dict_sha256


def test_save_load_round_trip_with_sha256(tmp_path) -> None:
    state = torch.nn.Linear(3, 2).state_dict()
    path = tmp_path / "w.pt"
    save_state_dict(state, path)
    loaded = load_state_dict(path, sha256=file_sha256(path))
    assert all(torch.equal(state[k], loaded[k]) for k in state)
    assert not list(tmp_path.glob(".*tmp"))  # the atomic write leaves no temporary file


def test_corrupted_checkpoint_is_refused_naming_the_file(tmp_path) -> None:
    path = tmp_path / "w.pt"
    save_state_dict(torch.nn.Linear(3, 2).state_dict(), path)
    expected = file_sha256(path)
    path.write_bytes(path.read_bytes()[:-3] + b"xyz")
    with pytest.raises(ValueError, match=f"checkpoint {path} is corrupted: sha256 .* does not match the expected {expected}"):
        load_state_dict(path, sha256=expected)


def test_missing_checkpoint_names_the_path(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        load_state_dict(tmp_path / "nope.pt")


def test_state_dict_hash_tracks_the_weights() -> None:
    net = torch.nn.Linear(3, 2)
    before = state_dict_sha256(net)
    assert state_dict_sha256(net) == before
    with torch.no_grad():
        net.bias += 1
    assert state_dict_sha256(net) != before


def test_an_atomic_write_gets_the_permissions_a_plain_write_gets(tmp_path) -> None:  # noqa: ANN001
    import stat

    from routing_env.checkpoints import atomic_write_text

    (tmp_path / "plain.json").write_text("{}")
    atomic_write_text(tmp_path / "atomic.json", "{}")
    mode = {name: stat.S_IMODE((tmp_path / name).stat().st_mode) for name in ("plain.json", "atomic.json")}
    assert mode["atomic.json"] == mode["plain.json"], mode


def test_a_run_starts_resumes_or_refuses_a_start_that_would_overwrite_earlier_work(tmp_path) -> None:  # noqa: ANN001
    checkpoint, outputs = tmp_path / "checkpoint.pt", ("backbone.pt", "joint.json")
    assert resumes(checkpoint, False, outputs) is False and resumes(checkpoint, True, outputs) is False  # a new run
    (tmp_path / "tb").mkdir()  # killed before its first epoch ended: nothing to lose, it starts again
    assert resumes(checkpoint, True, outputs) is False
    (tmp_path / "joint.json").write_text("{}")  # an earlier run's result, its checkpoint not kept
    for resume in (False, True):
        with pytest.raises(ValueError, match=r"holds an earlier run's joint.json and no checkpoint.pt to go on from"):
            resumes(checkpoint, resume, outputs)
    save_state_dict({"epoch": torch.tensor(3)}, checkpoint)
    assert resumes(checkpoint, True, outputs) is True
    with pytest.raises(ValueError, match="exists: pass --resume"):
        resumes(checkpoint, False, outputs)


def test_pretrain_and_joint_refuse_to_start_over_a_finished_run_without_its_checkpoint(tmp_path, cifar_root) -> None:  # noqa: ANN001
    from routing_env.experiments.joint_scratch import ScratchJointSpec, joint_from_scratch
    from routing_env.pretrain import PretrainArgs, pretrain

    args = PretrainArgs(backbone="resnet8", batch_size=32, subset=96, seed=3, epochs=1)
    card = pretrain(args, tmp_path / "p", data_root=cifar_root, progress=False)
    (tmp_path / "p" / "checkpoint.pt").unlink()
    with pytest.raises(ValueError, match="holds an earlier run's weights.pt, model_card.json"):
        pretrain(args, tmp_path / "p", resume=True, data_root=cifar_root, progress=False)
    assert file_sha256(tmp_path / "p" / "weights.pt") == card["sha256"]  # untouched
    spec = ScratchJointSpec(backbone="tiny-cascade", epochs=1, warmup_epochs=0, batch_size=128, precision="fp32")
    joint_from_scratch(spec, tmp_path / "j")
    (tmp_path / "j" / "checkpoint.pt").unlink()
    with pytest.raises(ValueError, match="holds an earlier run's backbone.pt, policy.pt, joint.json"):
        joint_from_scratch(spec, tmp_path / "j", resume=True)
