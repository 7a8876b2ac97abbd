"""What survives a restart: credentials and the open session, written atomically."""

from __future__ import annotations

from pathlib import Path

from client_sdk.state import ClientState, DeviceCredentials, PendingSession

SESSION = PendingSession(
    task="t/1", session="tok", session_id="sid", version=3, deadline=100.0, plan={"lr": 0.1}
)


def test_credentials_and_a_trained_session_round_trip(tmp_path: Path) -> None:
    state = ClientState(tmp_path)
    state.save_credentials(DeviceCredentials("dev", "token"))
    state.save_session(SESSION)
    state.save_update(SESSION, b"update", {"steps": 4})

    again = ClientState(tmp_path)
    pending = again.session("t/1")

    assert again.credentials() == DeviceCredentials("dev", "token")
    assert pending is not None and pending.phase == "trained"
    assert pending.summary == {"steps": 4} and pending.version == 3
    assert again.update("t/1") == b"update"
    assert (tmp_path / "device.json").stat().st_mode & 0o777 == 0o600


def test_a_corrupt_session_file_is_dropped(tmp_path: Path) -> None:
    state = ClientState(tmp_path)
    state.save_session(SESSION)
    (session_file,) = (tmp_path / "sessions").glob("*.json")
    session_file.write_text('{"task": "t/1", "session": 5}')

    assert state.session("t/1") is None
    assert list((tmp_path / "sessions").iterdir()) == []


def test_a_trained_session_without_its_update_is_dropped(tmp_path: Path) -> None:
    state = ClientState(tmp_path)
    state.save_update(SESSION, b"update", {})
    for path in (tmp_path / "sessions").glob("*.update"):
        path.unlink()

    assert state.session("t/1") is None


def test_clearing_forgets_the_session_and_its_update(tmp_path: Path) -> None:
    state = ClientState(tmp_path)
    state.save_update(SESSION, b"update", {})

    state.clear_session("t/1")

    assert state.session("t/1") is None and state.update("t/1") is None
