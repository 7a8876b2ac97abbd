"""The fleet repository and the rollup cache on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from server.fleet import CostModel, tier_table, version_docs
from server.monitor.meter import CpuMeter
from server.monitor.rollups import EVAL_TAIL, RollupCache
from server.settings import Settings
from server.storage.database import create_engine, upgrade
from server.storage.devices import DeviceRepository
from server.storage.fleet import FleetRepository
from server.storage.ledger import LedgerRepository
from server.storage.reader import FleetReader
from server.storage.records import (
    DeviceRecord,
    EvaluationRecord,
    LedgerEntry,
    TaskRecord,
    VersionRecord,
)
from server.storage.tasks import TaskRepository


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    eng = create_engine(database_url)
    await upgrade(eng, Settings().migrations_dir)
    tasks = TaskRepository(eng)
    await tasks.create(
        TaskRecord("t1", 1000.0, "active", "async", {}, "m", {}, None, 0, 0),
        VersionRecord("t1", 0, 1000.0, "p0", "s0", "0", 0, 0),
    )
    devices = DeviceRepository(eng)
    for device, info in [("a", {"tier": "low"}), ("b", {"device_class": "high"}), ("c", {})]:
        await devices.create(DeviceRecord(device, 1000.0, info))
    yield eng
    await eng.dispose()


def _applied(uid: str, device: str, version: int, **cost: float) -> LedgerEntry:
    return LedgerEntry(
        uid,
        "t1",
        device,
        1000.0 + version,
        "applied",
        base_version=version - 1,
        num_examples=10,
        staleness=1,
        applied_version=version,
        **cost,
    )


async def _commit(engine: AsyncEngine, version: int, entries: list[LedgerEntry]) -> None:
    record = VersionRecord(
        "t1", version, 1000.0 + version, f"p{version}", None, str(version), 0, len(entries), 1.0
    )
    await TaskRepository(engine).commit_versions([(record, [])])
    await LedgerRepository(engine).record(entries)


async def test_applied_updates_group_by_version_and_reported_tier(engine: AsyncEngine) -> None:
    await _commit(
        engine, 1, [_applied("u1", "a", 1, train_s=2.0), _applied("u2", "b", 1, energy_j=3.0)]
    )
    await _commit(engine, 2, [_applied("u3", "a", 2, train_s=1.0), _applied("u4", "zz", 2)])
    repo = FleetRepository(engine)

    groups = {(g.version, g.tier): g for g in await repo.applied("t1", 0, 2)}
    only_new = await repo.applied("t1", 1, 2)
    devices = set(await repo.applied_devices("t1", -1, 2))

    assert set(groups) == {(1, "low"), (1, "high"), (2, "low"), (2, None)}
    assert groups[(1, "low")].unmetered_train_s == 2.0 and groups[(1, "low")].unmetered_timed == 1
    assert groups[(1, "high")].metered_j == 3.0 and groups[(1, "high")].metered == 1
    assert {g.version for g in only_new} == {2}
    assert all(type(g.bytes_up) is int and type(g.train_s) is float for g in groups.values())
    assert devices == {("a", "low"), ("b", "high"), ("zz", None)}
    assert sorted(await repo.arrivals("t1", -1, 2, 10)) == [(1, 1000, 4)]


async def test_check_in_counts_from_several_processes_add_up(engine: AsyncEngine) -> None:
    repo = FleetRepository(engine)
    await repo.add_checkins([("t1", 1000, "admitted", 3), ("t1", 1000, "no_slot", 1)])
    await repo.add_checkins([("t1", 1000, "admitted", 2), ("t1", 1010, "admitted", 1)])

    rows = {(r.bucket, r.result): r.count for r in await repo.checkins("t1", 0)}
    before = {r.result: r.count for r in await repo.checkins_before("t1", 1010)}

    assert rows == {(1000, "admitted"): 5, (1000, "no_slot"): 1, (1010, "admitted"): 1}
    assert before == {"admitted": 5, "no_slot": 1}


async def test_refusals_fall_into_the_bucket_they_arrived_in(engine: AsyncEngine) -> None:
    entries = [
        LedgerEntry(f"r{i}", "t1", "a", at, "rejected", reason="too_stale")
        for i, at in enumerate([1005.5, 1009.99, 1010.0, 1019.2])
    ]
    await LedgerRepository(engine).record(entries)

    buckets = await FleetRepository(engine).refusals("t1", 1000.0, 10)

    assert sorted((b.bucket, b.count) for b in buckets) == [(1000, 2), (1010, 2)]


async def test_an_incremental_rollup_equals_a_fresh_one(engine: AsyncEngine) -> None:
    repo = FleetRepository(engine)
    now = [2000.0]
    cache = RollupCache(repo, CostModel(), meter=CpuMeter(), min_age_s=0.0, clock=lambda: now[0])
    await _commit(engine, 1, [_applied("u1", "a", 1, train_s=2.0)])
    await repo.record_evaluations([EvaluationRecord("e1", "t1", "a", 1, 1001.0, 10, 0.5, 0.8)])
    await cache.get("t1", 1, 1000.0)
    await _commit(engine, 2, [_applied("u2", "b", 2, train_s=1.0), _applied("u3", "a", 2)])
    await repo.record_evaluations([EvaluationRecord("e2", "t1", "b", 1, 1002.0, 10, 0.5, 0.6)])
    now[0] += 1
    grown = await cache.get("t1", 2, 1000.0)
    fresh = await RollupCache(repo, CostModel(), meter=CpuMeter(), clock=lambda: now[0]).get(
        "t1", 2, 1000.0
    )

    assert tier_table(grown, {}) == tier_table(fresh, {})
    assert version_docs(grown) == version_docs(fresh)
    assert [d["version"] for d in version_docs(grown)] == [0, 1, 2]
    assert version_docs(grown)[1]["federated"]["devices"] == 2


async def test_evaluations_are_read_however_far_the_head_moved(engine: AsyncEngine) -> None:
    repo = FleetRepository(engine)
    now = [2000.0]
    cache = RollupCache(repo, CostModel(), meter=CpuMeter(), min_age_s=0.0, clock=lambda: now[0])
    await _commit(engine, 1, [_applied("u1", "a", 1)])
    await cache.get("t1", 1, 1000.0)
    for version in range(2, 4 + EVAL_TAIL * 2):
        await _commit(engine, version, [_applied(f"u{version}", "b", version)])
    await repo.record_evaluations([EvaluationRecord("e5", "t1", "b", 5, 1005.0, 10, 0.5, 0.6)])
    now[0] += 1
    rollup = await cache.get("t1", 3 + EVAL_TAIL * 2, 1000.0)

    assert "high" in rollup.versions[5].evals


async def test_a_refresh_on_the_reader_thread_folds_the_same_and_counts_its_cpu(
    engine: AsyncEngine, database_url: str
) -> None:
    repo = FleetRepository(engine)
    await _commit(engine, 1, [_applied("u1", "a", 1, train_s=2.0), _applied("u2", "b", 1)])
    reader = FleetReader(database_url).start()
    meter = CpuMeter()
    try:
        threaded = await RollupCache(
            repo, CostModel(), meter=meter, clock=lambda: 2000.0, reader=reader
        ).get("t1", 1, 1000.0)
    finally:
        await reader.close()
    inline = await RollupCache(repo, CostModel(), meter=CpuMeter(), clock=lambda: 2000.0).get(
        "t1", 1, 1000.0
    )

    assert tier_table(threaded, {}) == tier_table(inline, {})
    assert version_docs(threaded) == version_docs(inline)
    assert meter.parts["refresh"] > 0


async def test_recent_updates_grouped_here_equal_the_groups_the_database_makes(
    engine: AsyncEngine,
) -> None:
    await _commit(
        engine,
        1,
        [
            _applied("u1", "a", 1, train_s=2.0, bytes_up=10, bytes_down=5),
            _applied("u2", "b", 1, energy_j=3.0, train_s=1.5),
            _applied("u3", "c", 1),
        ],
    )
    await _commit(engine, 2, [_applied("u4", "a", 2, train_s=1.0, energy_j=0.5)])
    repo = FleetRepository(engine)

    groups, devices, arrivals = await repo.applied_recent("t1", 0, 2, 10)

    key = lambda g: (g.version, str(g.tier))  # noqa: E731
    assert sorted(groups, key=key) == sorted(await repo.applied("t1", 0, 2), key=key)
    assert sorted(devices, key=str) == sorted(await repo.applied_devices("t1", 0, 2), key=str)
    assert sorted(arrivals, key=str) == sorted(await repo.arrivals("t1", 0, 2, 10), key=str)
