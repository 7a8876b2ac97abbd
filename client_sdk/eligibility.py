"""When a device may train: its state (from a provider the app wires to the OS) and a
policy over that state.

The client asks the provider before checking in and again between training steps, so
``current()`` must be cheap (read a cached value, do not query hardware each time).
A field the provider does not know is ``None``, and an unknown value fails a check the
policy requires: the SDK never trains on a guess. The defaults follow Papaya: charging,
on an unmetered network, idle.
"""

from __future__ import annotations

import dataclasses
import threading
from dataclasses import dataclass
from typing import Any, Protocol

from client_sdk.errors import ConfigError


@dataclass(frozen=True)
class DeviceState:
    charging: bool | None = None
    unmetered: bool | None = None  # Wi-Fi or ethernet rather than a metered cellular link
    idle: bool | None = None  # screen off / user away
    battery: float | None = None  # charge level in [0, 1]


class DeviceStateProvider(Protocol):
    def current(self) -> DeviceState:
        """The device state now; called between training steps, so keep it cheap."""
        ...


class ManualDeviceState:
    """A provider the app updates from OS callbacks (``update(charging=False)``);
    safe to update from any thread."""

    def __init__(self, state: DeviceState | None = None, **fields: Any) -> None:
        self._state = dataclasses.replace(state or DeviceState(), **fields)
        self._lock = threading.Lock()

    def current(self) -> DeviceState:
        return self._state

    def update(self, **fields: Any) -> DeviceState:
        with self._lock:
            self._state = dataclasses.replace(self._state, **fields)
            return self._state


@dataclass(frozen=True)
class EligibilityPolicy:
    require_charging: bool = True
    require_unmetered: bool = True
    require_idle: bool = True
    min_battery: float | None = 0.2

    def __post_init__(self) -> None:
        if self.min_battery is not None and not 0.0 <= self.min_battery <= 1.0:
            raise ConfigError(f"min_battery must be in [0, 1], got {self.min_battery}")

    @classmethod
    def always(cls) -> EligibilityPolicy:
        """No requirement (desktops, servers, tests)."""
        return cls(False, False, False, None)

    def reasons(self, state: DeviceState) -> tuple[str, ...]:
        """Why the device may not train now (empty: it may), e.g. ``("not_charging",)``."""
        out: list[str] = []
        if self.require_charging and state.charging is not True:
            out.append("not_charging" if state.charging is False else "charging_unknown")
        if self.require_unmetered and state.unmetered is not True:
            out.append("metered_network" if state.unmetered is False else "network_unknown")
        if self.require_idle and state.idle is not True:
            out.append("not_idle" if state.idle is False else "idle_unknown")
        if self.min_battery is not None:
            if state.battery is None:
                out.append("battery_unknown")
            elif state.battery < self.min_battery:
                out.append("battery_low")
        return tuple(out)
