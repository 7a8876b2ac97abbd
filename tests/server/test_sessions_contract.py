"""Contract suite for :class:`SessionStore`: every implementation passes the same tests."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator

import pytest

from server.coordination.redis_sessions import RedisSessionStore
from server.coordination.sessions import InProcessSessionStore, SessionStore, Verdict
from server.coordination.tokens import SessionClaims
from tests.services import redis_namespace

NOW = 1_000_000.0


@pytest.fixture(params=["in_process", "redis"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[SessionStore]:
    if request.param == "in_process":
        yield InProcessSessionStore()
        return
    async with redis_namespace() as (client, keys):
        yield RedisSessionStore(client, keys)


def claims(i: int, task: str = "t", deadline: float = 60.0) -> SessionClaims:
    return SessionClaims(f"s{i}", task, f"d{i}", 0, NOW, NOW + deadline)


async def test_admission_stops_at_capacity(store: SessionStore) -> None:
    admitted = [await store.admit(claims(i), 3, NOW) for i in range(5)]
    assert admitted == [True, True, True, False, False]
    assert await store.active_count("t", NOW) == 3


async def test_capacity_is_per_task(store: SessionStore) -> None:
    assert await store.admit(claims(1, "a"), 1, NOW)
    assert await store.admit(claims(2, "b"), 1, NOW)
    assert not await store.admit(claims(3, "a"), 1, NOW)


async def test_a_finished_upload_frees_its_slot(store: SessionStore) -> None:
    first = claims(1)
    assert await store.admit(first, 1, NOW)
    assert (await store.claim_upload(first, NOW)).verdict is Verdict.GRANTED
    await store.complete_upload(first, {"status": "accepted"})
    assert await store.active_count("t", NOW) == 0
    assert await store.admit(claims(2), 1, NOW)


async def test_expired_sessions_free_their_slots(store: SessionStore) -> None:
    assert await store.admit(claims(1, deadline=10), 1, NOW)
    assert not await store.admit(claims(2), 1, NOW + 5)
    assert await store.admit(claims(3), 1, NOW + 11)


async def test_a_retry_of_an_accepted_upload_gets_the_same_ack(store: SessionStore) -> None:
    c = claims(1)
    await store.admit(c, 5, NOW)
    await store.claim_upload(c, NOW)
    await store.complete_upload(c, {"status": "accepted", "position": "7"})
    again = await store.claim_upload(c, NOW + 1)
    assert again.verdict is Verdict.ACCEPTED
    assert again.ack == {"status": "accepted", "position": "7"}


async def test_a_concurrent_second_upload_is_told_one_is_in_progress(store: SessionStore) -> None:
    c = claims(1)
    await store.admit(c, 5, NOW)
    first = await store.claim_upload(c, NOW)
    second = await store.claim_upload(c, NOW)
    assert first.verdict is Verdict.GRANTED
    assert second.verdict is Verdict.IN_PROGRESS


async def test_a_released_upload_can_be_claimed_again(store: SessionStore) -> None:
    c = claims(1)
    await store.admit(c, 5, NOW)
    await store.claim_upload(c, NOW)
    await store.release_upload(c)  # the first attempt failed before anything was durable
    assert (await store.claim_upload(c, NOW)).verdict is Verdict.GRANTED


async def test_a_rejected_upload_uses_the_session_up(store: SessionStore) -> None:
    c = claims(1)
    await store.admit(c, 5, NOW)
    await store.claim_upload(c, NOW)
    await store.reject_upload(c, "non_finite")
    again = await store.claim_upload(c, NOW)
    assert again.verdict is Verdict.REJECTED
    assert again.reason == "non_finite"
    assert await store.active_count("t", NOW) == 0


async def test_an_unknown_session_is_recreated_and_flagged(store: SessionStore) -> None:
    claim = await store.claim_upload(claims(9), NOW)
    assert claim.verdict is Verdict.GRANTED
    assert claim.recreated


async def test_forget_task_drops_its_active_sessions(store: SessionStore) -> None:
    await store.admit(claims(1), 1, NOW)
    await store.forget_task("t")
    assert await store.active_count("t", NOW) == 0


@pytest.mark.parametrize("finish", ["open", "uploading", "accepted", "rejected"])
async def test_held_sessions_add_nothing_for_the_garbage_collector(finish: str) -> None:
    """Full collections walk every tracked object: sessions held by the thousand must
    not be among them, or each collection pauses the event loop (0.8-1.4 s at 300k)."""
    store = InProcessSessionStore()
    held = 20_000
    sessions = [claims(i) for i in range(held)]
    gc.collect()
    before = len(gc.get_objects())
    for c in sessions:
        assert await store.admit(c, held, NOW)
        if finish != "open":
            await store.claim_upload(c, NOW)
        if finish == "accepted":
            await store.complete_upload(
                c, {"status": "accepted", "update_id": c.sid, "staleness": 0}
            )
        elif finish == "rejected":
            await store.reject_upload(c, "too_stale")
    del c
    gc.collect()
    gc.collect()  # nested tuples are untracked inside out, one level per collection
    added = len(gc.get_objects()) - before

    assert added < held // 100, f"{added} tracked objects for {held} held sessions"
    assert (await store.claim_upload(sessions[7], NOW)).verdict is {
        "open": Verdict.GRANTED,
        "uploading": Verdict.IN_PROGRESS,
        "accepted": Verdict.ACCEPTED,
        "rejected": Verdict.REJECTED,
    }[finish]


async def test_the_in_process_store_holds_a_bounded_number_of_finished_sessions() -> None:
    store = InProcessSessionStore(max_retained=100)
    early = [claims(i, deadline=10.0) for i in range(500)]
    late = [claims(i, deadline=15.0) for i in range(500, 1000)]
    for c in early + late:
        assert await store.admit(c, 10_000, NOW)
        await store.claim_upload(c, NOW)
        await store.complete_upload(c, {"status": "accepted", "update_id": c.sid})
    open_ = [claims(i, deadline=3600.0) for i in range(1000, 1050)]
    for c in open_:
        assert await store.admit(c, 10_000, NOW + 20)  # every finished one is past its deadline
    held = len(store._entries)

    newest = [(await store.claim_upload(c, NOW + 20)).verdict for c in late[-100:]]
    oldest = await store.claim_upload(early[0], NOW + 20)
    still_open = [(await store.claim_upload(c, NOW + 20)).verdict for c in open_]

    assert held == 100 + len(open_)
    assert newest == [Verdict.ACCEPTED] * 100  # the latest deadlines are the ones kept
    assert oldest.recreated  # the caller falls back to its ledger
    assert still_open == [Verdict.GRANTED] * len(open_)


async def test_finished_sessions_before_their_deadline_are_never_dropped() -> None:
    store = InProcessSessionStore(max_retained=10)
    sessions = [claims(i, deadline=60.0) for i in range(50)]
    for c in sessions:
        await store.admit(c, 1000, NOW)
        await store.claim_upload(c, NOW)
        await store.complete_upload(c, {"status": "accepted", "update_id": c.sid})
    verdicts = [(await store.claim_upload(c, NOW + 30)).verdict for c in sessions]
    assert verdicts == [Verdict.ACCEPTED] * 50
