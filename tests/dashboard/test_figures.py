"""The admin API behind every figure on the dashboard, from known device reports.

Devices of known tiers check in, report federated evaluations and upload updates whose
metrics say what they cost; the fleet, cost, history and timeline documents (and
``/metrics``) must add up to exactly what the reports imply.
"""

from __future__ import annotations

import asyncio
import math
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from client_sdk.api import ServerApi
from client_sdk.transport import AiohttpTransport
from client_sdk.wire import decode_tensors, unpack
from server.admin_client import AdminClient
from server.process import ServerProcess
from tests.conftest import ServerProcessFactory
from tests.server.fleet import create_task, wait_for

POWER = {"low": 2.0, "high": 10.0}
DEFAULT_W, GRID = 4.0, 500.0
ENV = {
    "ASYNCFL_TIER_POWER_W": "low=2,high=10",
    "ASYNCFL_DEFAULT_POWER_W": str(DEFAULT_W),
    "ASYNCFL_GRID_G_CO2E_PER_KWH": str(GRID),
    "ASYNCFL_FLEET_REFRESH_S": "0.5",
}


@dataclass
class Report:
    tier: str
    train_s: float
    energy_j: float | None
    download_bytes: int
    body_bytes: int = 0

    def energy(self) -> float:
        if self.energy_j is not None:
            return self.energy_j
        return self.train_s * POWER.get(self.tier, DEFAULT_W)


class Devices:
    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        self.transport = AiohttpTransport(server.url)
        self.api = ServerApi(self.transport)
        self.tokens: dict[str, str] = {}
        self.reports: list[Report] = []
        self.zeros: list[np.ndarray[Any, Any]] = []

    async def enroll(self, name: str, info: dict[str, Any]) -> None:
        _, self.tokens[name] = await self.api.enroll(self.server.enrollment_key, info)

    async def checkin(self, name: str) -> tuple[str, int]:
        answer = await self.api.checkin("t1", self.tokens[name], {})
        assert answer.admitted, answer
        if not self.zeros:
            fetched = await self.api.fetch(answer.params_url, self.tokens[name])
            assert fetched.body is not None
            self.zeros = [np.zeros_like(a) for a in decode_tensors(unpack(fetched.body))]
        return answer.session, answer.version

    async def evaluate(self, session: tuple[str, int], accuracy: float, n: int) -> None:
        metrics = {"loss": 1.0 - accuracy, "accuracy": accuracy, "num_examples": n}
        await self.api.report_evaluation("t1", session[0], session[1], metrics)

    async def upload(self, session: tuple[str, int], report: Report) -> None:
        metrics: dict[str, float] = {"train_s": report.train_s}
        metrics["download_bytes"] = report.download_bytes
        if report.energy_j is not None:
            metrics["energy_j"] = report.energy_j
        body = self.api.encode_update(session[0], session[1], 10, self.zeros, metrics)
        report.body_bytes = len(body)
        await self.api.upload("t1", body)
        self.reports.append(report)


@pytest.fixture
async def trained(start_server: ServerProcessFactory) -> AsyncIterator[Devices]:
    """Six applied updates from five devices of four tiers, in three versions."""
    server = start_server(env=ENV)
    await create_task(server, federated_eval_fraction=1.0, eval_every=0)
    devices = Devices(server)
    try:
        for name, info in [
            ("low1", {"tier": "low"}),
            ("low2", {"tier": "LOW"}),
            ("high", {"tier": "high"}),
            ("mid", {"device_class": "mid"}),
            ("plain", {"os": "android"}),
        ]:
            await devices.enroll(name, info)
        held = await devices.checkin("high")  # trains on version 0, uploads after v2
        await devices.evaluate(held, 0.5, 20)
        first = [await devices.checkin("low1"), await devices.checkin("low2")]
        await devices.evaluate(first[0], 0.9, 10)
        await devices.evaluate(first[1], 0.7, 30)
        await devices.upload(first[0], Report("low", 2.0, None, 1000))
        await devices.upload(first[1], Report("low", 3.0, 5.0, 2000))
        await wait_for(server, lambda s: s["version"] >= 1)
        second = [await devices.checkin("mid"), await devices.checkin("plain")]
        await devices.evaluate(second[0], 0.6, 10)
        await devices.upload(second[0], Report("mid", 1.5, None, 0))
        await devices.upload(second[1], Report("unknown", 4.0, None, 500))
        await wait_for(server, lambda s: s["version"] >= 2)
        third = await devices.checkin("low1")
        await devices.upload(held, Report("high", 1.0, None, 3000))  # staleness 2
        await devices.upload(third, Report("low", 0.5, 1.25, 0))
        await wait_for(server, lambda s: s["version"] >= 3)
        yield devices
    finally:
        await devices.transport.close()


async def _get(server: ServerProcess, path: str, ready: Any = None) -> dict[str, Any]:
    """GET an admin document; with ``ready``, until ``ready(doc)`` (figures land within
    a second or two: batched writers, then a rollup refresh)."""
    async with AdminClient(server.url, server.admin_token) as admin:
        for _ in range(150):
            doc: dict[str, Any] = await admin.request("GET", path)
            if ready is None or ready(doc):
                return doc
            await asyncio.sleep(0.1)
    raise AssertionError(f"{path} never got ready: {doc}")


def _settled(doc: dict[str, Any]) -> bool:
    """Every tier in, the evaluations of the three tiers that reported, every enrollment
    counted (the devices table is re-counted every few seconds)."""
    evaluated = [row["tier"] for row in doc["tiers"] if row["federated"] is not None]
    enrolled = sum(row["enrolled"] for row in doc["tiers"])
    applied = sum(row["updates"] for row in doc["tiers"])
    return sorted(evaluated) == ["high", "low", "mid"] and (enrolled, applied) == (5, 6)


async def test_the_tier_table_counts_participation_staleness_and_accuracy(
    trained: Devices,
) -> None:
    doc = await _get(trained.server, "/admin/v1/tasks/t1/fleet", _settled)
    tiers = {row["tier"]: row for row in doc["tiers"]}

    assert sorted(tiers) == ["high", "low", "mid", "unknown"]
    assert (tiers["low"]["devices"], tiers["low"]["updates"]) == (2, 3)
    assert tiers["low"]["participation"] == 1.5
    assert tiers["low"]["enrolled"] == 2 and tiers["unknown"]["enrolled"] == 1
    assert tiers["high"]["mean_staleness"] == 2.0 and tiers["low"]["mean_staleness"] == 0.0
    assert tiers["low"]["federated"]["accuracy"] == pytest.approx((0.9 * 10 + 0.7 * 30) / 40)
    assert tiers["low"]["federated"]["devices"] == 2
    assert tiers["high"]["federated"]["accuracy"] == pytest.approx(0.5)
    assert tiers["unknown"]["federated"] is None
    assert doc["gap"]["best"] == "low" and doc["gap"]["worst"] == "high"
    assert doc["gap"]["gap"] == pytest.approx(0.75 - 0.5)


async def test_cost_adds_reported_and_estimated_energy_and_bytes(trained: Devices) -> None:
    doc = await _get(
        trained.server, "/admin/v1/tasks/t1/cost", lambda d: d["total"]["updates"] == 6
    )
    total, reports = doc["total"], trained.reports
    energy = sum(r.energy() for r in reports)

    assert total["energy_j"] == pytest.approx(energy)
    assert total["energy_reported_j"] == pytest.approx(5.0 + 1.25)
    assert (total["updates_metered"], total["updates_estimated"]) == (2, 4)
    assert total["kwh"] == pytest.approx(energy / 3.6e6)
    assert total["co2e_g"] == pytest.approx(energy / 3.6e6 * GRID)
    assert total["train_s"] == pytest.approx(sum(r.train_s for r in reports))
    assert total["bytes_up"] == sum(r.body_bytes for r in reports)
    assert total["bytes_down"] == sum(r.download_bytes for r in reports)
    assert doc["by_tier"]["low"]["energy_j"] == pytest.approx(2.0 * 2 + 5.0 + 1.25)
    assert doc["by_tier"]["mid"]["energy_j"] == pytest.approx(1.5 * DEFAULT_W)
    assert doc["model"]["power_w"] == POWER and doc["model"]["grid_g_co2e_per_kwh"] == GRID


async def test_history_has_each_versions_tiers_cost_and_evaluations(trained: Devices) -> None:
    await _get(trained.server, "/admin/v1/tasks/t1/fleet", _settled)
    doc = await _get(
        trained.server, "/admin/v1/tasks/t1/history", lambda d: len(d["versions"]) == 4
    )
    versions = {v["version"]: v for v in doc["versions"]}
    later = await _get(trained.server, "/admin/v1/tasks/t1/history?after_version=3")

    assert sorted(versions) == [0, 1, 2, 3]
    assert versions[1]["tiers"] == {"low": {"updates": 2, "mean_staleness": 0.0, "accuracy": None}}
    assert versions[0]["federated"]["devices"] == 3
    assert versions[0]["federated"]["accuracy"] == pytest.approx((9 + 21 + 10) / 60)
    assert versions[1]["cost"]["energy_j"] == pytest.approx(2.0 * 2 + 5.0)
    assert versions[3]["tiers"]["high"]["mean_staleness"] == 2.0
    assert versions[3]["cost"]["bytes_down"] == 3000
    assert all(v["version"] > 3 - 8 for v in later["versions"])  # the tail is re-sent


async def test_timeline_counts_updates_check_ins_and_staleness(trained: Devices) -> None:
    server = trained.server
    async with AdminClient(server.url, server.admin_token) as admin:
        await admin.request("POST", "/admin/v1/tasks/t1/pause")
    turned = await trained.api.checkin("t1", trained.tokens["mid"], {})
    # check-ins counted here are folded at once, the ledger's figures with the next
    # refresh: wait for both
    doc = await _get(
        server,
        "/admin/v1/tasks/t1/timeline",
        lambda d: (
            d["checkins"]["turned_away"] == 1 and sum(h["count"] for h in d["staleness"]) == 6
        ),
    )
    buckets = doc["buckets"]

    assert not turned.admitted and turned.reason == "task_paused"
    assert doc["checkins"] == {"admitted": 6, "turned_away": 1, "by_reason": {"paused": 1}}
    assert sum(b["accepted"] for b in buckets) == 6
    assert sum(b["applied"] for b in buckets) == 6
    assert sum(b["admitted"] for b in buckets) == 6
    assert {(h["staleness"], h["count"]) for h in doc["staleness"]} == {(0, 5), (2, 1)}
    assert all(b["t"] % doc["bucket_s"] == 0 for b in buckets)


async def test_metrics_carry_the_same_figures(trained: Devices) -> None:
    cost = await _get(
        trained.server, "/admin/v1/tasks/t1/cost", lambda d: d["total"]["updates"] == 6
    )
    fleet = await _get(trained.server, "/admin/v1/tasks/t1/fleet", _settled)
    await asyncio.sleep(1.0)  # the monitor's own refresh (every 0.5 s here) feeds /metrics

    def scrape() -> dict[str, float]:
        with urllib.request.urlopen(f"{trained.server.url}/metrics", timeout=5) as resp:
            text = resp.read().decode()
        return {
            line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line and not line.startswith("#")
        }

    samples = await asyncio.to_thread(scrape)
    total = cost["total"]
    low = next(r for r in fleet["tiers"] if r["tier"] == "low")

    assert math.isclose(samples['asyncfl_task_co2e_grams{task="t1"}'], total["co2e_g"])
    assert math.isclose(
        samples['asyncfl_task_energy_joules{source="estimated",task="t1"}'],
        total["energy_estimated_j"],
    )
    assert samples['asyncfl_task_bytes{direction="up",task="t1"}'] == total["bytes_up"]
    assert samples['asyncfl_tier_updates{task="t1",tier="low"}'] == low["updates"]
    assert samples['asyncfl_tier_devices{task="t1",tier="low"}'] == low["devices"]
    assert math.isclose(samples['asyncfl_task_tier_accuracy_gap{task="t1"}'], fleet["gap"]["gap"])
    assert samples['asyncfl_dashboard_cpu_seconds_total{part="refresh"}'] > 0
    assert samples["asyncfl_dashboard_refreshes_total"] > 0


async def test_figures_need_the_admin_token(trained: Devices) -> None:
    server = trained.server
    async with AdminClient(server.url, "wrong") as admin:
        codes = []
        for path in ("overview", "tasks/t1/fleet", "tasks/t1/cost", "tasks/t1/live"):
            try:
                await admin.request("GET", f"/admin/v1/{path}")
            except Exception as exc:
                codes.append(getattr(exc, "status", None))
    bad = await _bad_query(server)

    assert codes == [401, 401, 401, 401]
    assert bad == (400, "bad_parameter")


async def _bad_query(server: ServerProcess) -> tuple[int, str]:
    async with AdminClient(server.url, server.admin_token) as admin:
        try:
            await admin.request("GET", "/admin/v1/tasks/t1/history?after_version=x")
        except Exception as exc:
            return getattr(exc, "status", 0), getattr(exc, "code", "")
    return 200, ""
