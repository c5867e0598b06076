"""A thread pool for reads that no one project can fill.

Reads run blocking engine calls in a few threads. Without a bound, one tenant's slow
queries could take every thread and stall every other tenant's reads. Here a project
runs at most `per_project` reads at once (half the threads, at least one), a few more
wait for the project's own slot, and past that it is refused with `ReadsBusy` (a 429
in the read API's format), so the other threads stay free for other projects.

A slot is given back when the engine call ends, not when its caller stops waiting:
a read abandoned by its client still occupies its thread until it finishes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

MAX_WAITING = 4  # reads of one project that may queue for its slot before it is refused
RETRY_AFTER_S = 1


class ReadsBusy(Exception):
    """The project already has as many reads running and waiting as it may."""

    retry_after = RETRY_AFTER_S


@dataclass
class _Slot:
    free: asyncio.Semaphore
    running: int = 0
    waiting: int = 0


class ProjectPool:
    def __init__(self, threads: int, max_waiting: int = MAX_WAITING) -> None:
        self.per_project = max(1, threads // 2)
        self.max_waiting = max_waiting
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="read")
        self._slots: dict[str, _Slot] = {}

    async def run(self, project: str, fn: Callable[..., Any], *args: Any) -> Any:
        """`fn(*args)` in a thread once `project` has a free slot; ReadsBusy when too many wait."""
        slot = self._slots.get(project)
        if slot is None:
            slot = self._slots[project] = _Slot(asyncio.Semaphore(self.per_project))
        if slot.running >= self.per_project and slot.waiting >= self.max_waiting:
            raise ReadsBusy(
                f"this project already has {slot.running + slot.waiting} reads in flight; "
                f"retry in {RETRY_AFTER_S} s"
            )
        slot.waiting += 1
        try:
            await slot.free.acquire()
        finally:
            slot.waiting -= 1
        slot.running += 1
        loop = asyncio.get_running_loop()
        try:
            future = self._pool.submit(fn, *args)
        except BaseException:
            self._release(project, slot)
            raise

        def ended(_: Future[Any]) -> None:
            # RuntimeError: the loop is closed, so nothing is left to wait for the slot.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._release, project, slot)

        future.add_done_callback(ended)
        return await asyncio.wrap_future(future)

    def _release(self, project: str, slot: _Slot) -> None:
        slot.running -= 1
        slot.free.release()
        if slot.running == 0 and slot.waiting == 0 and self._slots.get(project) is slot:
            del self._slots[project]  # idle projects cost no memory

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False)
