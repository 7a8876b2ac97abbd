"""The C heap as the process' RSS sees it: in use, held free, and handed back.

A server that reads 400 KB upload bodies keeps glibc's heap large (see
``cli_serve._tune_malloc``: freed bodies stay in the heap for the next upload), so RSS
is the heap's high-water mark, not what is live. ``HeapCollector`` exports glibc's own
figures (``mallinfo2``) on ``/metrics``, so an operator can tell a leak (in use grows)
from a burst the allocator kept (free grows). ``trim()`` hands free pages back to the
kernel (``malloc_trim``); the server runs it every ``heap_trim_s`` seconds. Where glibc
is not the C library both do nothing.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import GaugeMetricFamily

logger = logging.getLogger(__name__)


class _MallInfo2(ctypes.Structure):
    # glibc >= 2.33, malloc.h: every field a size_t
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",  # bytes from the kernel by sbrk, all arenas
            "ordblks",  # free chunks
            "smblks",
            "hblks",  # mmapped chunks
            "hblkhd",  # bytes in mmapped chunks
            "usmblks",
            "fsmblks",
            "uordblks",  # bytes in use (not mmapped)
            "fordblks",  # bytes free in the arenas
            "keepcost",
        )
    ]


def _libc() -> Any | None:
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = _MallInfo2
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
        libc.malloc_trim.restype = ctypes.c_int
    except (OSError, AttributeError):
        return None
    return libc


_LIBC = _libc()


def heap_bytes() -> dict[str, int] | None:
    """``{"in_use", "free", "mapped"}`` bytes of the C heap, or None without glibc."""
    if _LIBC is None:
        return None
    info = _LIBC.mallinfo2()
    return {"in_use": int(info.uordblks), "free": int(info.fordblks), "mapped": int(info.hblkhd)}


def trim() -> bool:
    """Give the heap's free pages back to the kernel; True if any were."""
    return bool(_LIBC is not None and _LIBC.malloc_trim(0))


class HeapCollector:
    """``asyncfl_heap_bytes{state=in_use|free|mapped}`` from glibc, read per scrape."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        figures = heap_bytes()
        if figures is None:
            return
        family = GaugeMetricFamily(
            "asyncfl_heap_bytes",
            "C heap bytes (glibc mallinfo2): in use, free but held, mapped for large blocks",
            labels=["state"],
        )
        for state, value in figures.items():
            family.add_metric([state], value)
        yield family


async def trim_every(interval_s: float) -> None:
    """Trim the heap every ``interval_s`` seconds, in a thread (ctypes lets the GIL go;
    handing back ~900 MB after a burst took 165 ms here, a quiet minute's ~5 ms)."""
    while True:
        await asyncio.sleep(interval_s)
        await asyncio.to_thread(trim)
