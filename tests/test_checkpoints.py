import pytest
import torch

from routing_env.checkpoints import file_sha256, load_state_dict, save_state_dict, state_dict_sha256


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
