"""What survives an app restart: the device's credentials and its open session.

Layout of the storage folder::

    device.json             {"device_id", "device_token"}        (mode 0600)
    sessions/<task>.json    the open session: token, version, deadline, plan, phase
    sessions/<task>.update  the finished update body, until the server acknowledged it
    cache/                  see :mod:`client_sdk.cache`

Every write is atomic (temp file, fsync, rename), so a kill at any instant leaves the
old file or the new one. A session file in phase ``"training"`` means the app died while
training: the session is continued if its deadline allows, else dropped. Phase
``"trained"`` means the update body is on disk: it is uploaded again with the same
session token, and the server applies it at most once.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from client_sdk.api import Checkin
from client_sdk.errors import StorageError

logger = logging.getLogger(__name__)

Phase = Literal["training", "trained"]
_SAFE = re.compile(r"[^A-Za-z0-9._-]")


@dataclass(frozen=True)
class DeviceCredentials:
    device_id: str
    device_token: str


@dataclass(frozen=True)
class PendingSession:
    """An admitted session, as persisted; ``deadline`` is on this device's wall clock."""

    task: str
    session: str
    session_id: str
    version: int
    deadline: float
    plan: dict[str, Any] = field(default_factory=dict)
    artifacts: dict[str, str] = field(default_factory=dict)
    params_url: str = ""
    evaluate: bool = False
    train: bool = True
    phase: Phase = "training"
    summary: dict[str, Any] = field(default_factory=dict)  # the training that made the update
    secure_aggregation: dict[str, Any] | None = None  # the check-in's terms (masked uploads)

    @classmethod
    def from_checkin(cls, task: str, checkin: Checkin, now: float) -> PendingSession:
        # deadline_s is relative, so server/device clock skew does not matter
        return cls(
            task=task,
            session=checkin.session,
            session_id=checkin.session_id,
            version=checkin.version,
            deadline=now + checkin.deadline_s,
            plan=dict(checkin.plan or {}),
            artifacts=dict(checkin.artifacts or {}),
            params_url=checkin.params_url,
            evaluate=checkin.evaluate,
            train=checkin.train,
            secure_aggregation=(
                None if checkin.secure_aggregation is None else dict(checkin.secure_aggregation)
            ),
        )

    def to_checkin(self, now: float) -> Checkin:
        return Checkin(
            admitted=True,
            session=self.session,
            session_id=self.session_id,
            version=self.version,
            deadline=self.deadline,
            deadline_s=self.deadline - now,
            plan=self.plan,
            artifacts=self.artifacts,
            params_url=self.params_url,
            evaluate=self.evaluate,
            train=self.train,
        )


class ClientState:
    """The storage folder (see the module docstring); one client process at a time."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._sessions = self.root / "sessions"
        try:
            self._sessions.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create storage folder {self.root}: {exc}") from exc

    # -- credentials --------------------------------------------------------------------
    def credentials(self) -> DeviceCredentials | None:
        obj = self._read_json(self.root / "device.json")
        if not isinstance(obj, dict):
            return None
        device_id, token = obj.get("device_id"), obj.get("device_token")
        if not isinstance(device_id, str) or not isinstance(token, str) or not token:
            return None
        return DeviceCredentials(device_id, token)

    def save_credentials(self, credentials: DeviceCredentials) -> None:
        self._write(self.root / "device.json", json.dumps(asdict(credentials)).encode())

    def forget_credentials(self) -> None:
        self._unlink(self.root / "device.json")

    # -- the open session -----------------------------------------------------------------
    def session(self, task: str) -> PendingSession | None:
        path = self._session_path(task)
        obj = self._read_json(path)
        if obj is None:
            return None
        try:
            pending = PendingSession(**obj)
            if not _well_formed(pending):
                raise TypeError("wrong field types")
        except TypeError:
            logger.warning("dropping unreadable session file %s", path)
            self.clear_session(task)
            return None
        if pending.phase == "trained" and not self._update_path(task).exists():
            logger.warning("session %s lost its update body; dropping it", pending.session_id)
            self.clear_session(task)
            return None
        return pending

    def save_session(self, pending: PendingSession) -> None:
        self._write(self._session_path(pending.task), json.dumps(asdict(pending)).encode())

    def save_update(
        self, pending: PendingSession, body: bytes, summary: dict[str, Any]
    ) -> PendingSession:
        """Persist the update body, then mark the session trained (in that order)."""
        self._write(self._update_path(pending.task), body)
        trained = PendingSession(**{**asdict(pending), "phase": "trained", "summary": summary})
        self.save_session(trained)
        return trained

    def update(self, task: str) -> bytes | None:
        try:
            return self._update_path(task).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StorageError(f"cannot read the pending update of {task}: {exc}") from exc

    def clear_session(self, task: str) -> None:
        self._unlink(self._session_path(task))
        self._unlink(self._update_path(task))

    # -- plumbing -------------------------------------------------------------------------
    def _session_path(self, task: str) -> Path:
        return self._sessions / f"{_SAFE.sub('_', task)}.json"

    def _update_path(self, task: str) -> Path:
        return self._sessions / f"{_SAFE.sub('_', task)}.update"

    def _read_json(self, path: Path) -> Any:
        try:
            return json.loads(path.read_bytes())
        except FileNotFoundError:
            return None
        except ValueError:
            logger.warning("ignoring corrupt state file %s", path)
            return None
        except OSError as exc:
            raise StorageError(f"cannot read {path}: {exc}") from exc

    def _write(self, path: Path, data: bytes) -> None:
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
            _fsync_dir(path.parent)
        except OSError as exc:
            raise StorageError(f"cannot write {path}: {exc}") from exc

    def _unlink(self, path: Path) -> None:
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot delete {path}: {exc}") from exc


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return  # not supported on this platform
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _well_formed(pending: PendingSession) -> bool:
    return (
        isinstance(pending.session, str)
        and bool(pending.session)
        and isinstance(pending.version, int)
        and isinstance(pending.deadline, int | float)
        and isinstance(pending.plan, dict)
        and isinstance(pending.artifacts, dict)
        and pending.phase in ("training", "trained")
    )
