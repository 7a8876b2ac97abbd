from __future__ import annotations

from server.privacy.participation import InProcessParticipation


async def test_a_device_checks_in_at_most_once_every_separation_versions() -> None:
    limits = InProcessParticipation()

    first = await limits.admit("t", "d", 3, 4)
    again = [await limits.admit("t", "d", v, 4) for v in (3, 4, 6)]
    other = await limits.admit("t", "e", 3, 4)
    later = await limits.admit("t", "d", 7, 4)

    assert first and other and later
    assert again == [False, False, False]
    assert not await limits.allowed("t", "d", 10, 4) and await limits.allowed("t", "d", 11, 4)
