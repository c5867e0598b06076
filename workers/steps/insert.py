"""insert: one batch at a time into ClickHouse, one `INSERT ... SELECT` per table.

The insert runs in a thread (clickhouse-connect is synchronous); while it runs, or while a
failed one waits for its retry, new batches are rejected (backpressure). A failure is
retried with the same deduplication token after a growing delay (0.2 s doubling to 30 s),
forever: a batch the gateway acknowledged is never dropped. Nothing sleeps: `poll()` starts
the retry once its time has come.

The engine refusing the input itself (a ClickHouse parse or type error, `REFUSED_CODES`)
is not an outage: it can only come from a message that is not what a gateway writes (a
bug, or a record written to the topic by hand). The table's batch is then stored one
message per insert, each with its own token, and a message the engine refuses alone
becomes a dead letter (`store_refused`); the rest of the batch is stored.
"""

from __future__ import annotations

import asyncio
import functools
import re
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor

import structlog
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError

from millrace import metrics, store
from millrace.config import Settings
from schemas import rows
from schemas.deadletter import DeadLetter
from schemas.record import EVENTS_TABLE, LOGS_TABLE
from workers.steps.base import GiveUp, Message, MessageRejected, Step
from workers.steps.batch import Batch, TableBatch

log = structlog.get_logger()

# (client, table batch, dedup token): the store boundary, one insert.
InsertFn = Callable[[Client, TableBatch, str], None]

FIRST_RETRY_S = 0.2
LAST_RETRY_S = 30.0

# ClickHouse error codes that mean "this input cannot be read as these columns": CANNOT_PARSE_*
# (6, 25, 26, 27, 38, 41, 72), ATTEMPT_TO_READ_AFTER_EOF (32), TYPE_MISMATCH (53),
# CANNOT_CONVERT_TYPE (70), INCORRECT_DATA (117), CANNOT_READ_ARRAY_FROM_TEXT (130),
# VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE (321), CANNOT_PARSE_INPUT_ASSERTION_FAILED (27).
REFUSED_CODES = frozenset({6, 25, 26, 27, 32, 38, 41, 53, 70, 72, 117, 130, 321})
_CODE = re.compile(r"Code: (\d+)\.")


def refused(exc: BaseException) -> bool:
    """Whether the engine refused the input itself (not: the store is out or failing)."""
    if not isinstance(exc, DatabaseError) or isinstance(exc, OperationalError):
        return False
    match = _CODE.search(str(exc))
    return match is not None and int(match.group(1)) in REFUSED_CODES


def insert_table(
    client: Client,
    table: TableBatch,
    token: str,
    *,
    into: str | None = None,
    deferred: Mapping[str, str] | None = None,
) -> None:
    """The batch of one table as one insert: the engine reads the rows from the lines.
    `into`: another table with the same columns (tests keep fuzzed rows apart). `deferred`:
    per table, the skip indexes left to merges (`store.deferrable_indexes`)."""
    names = (deferred or {}).get(table.table)
    store.insert_select(
        client,
        into or table.table,
        rows.COLUMNS[table.table],
        lambda source: rows.select_sql(table.table, source),
        rows.STRUCTURE[table.table],
        table.lines,
        token,
        {**rows.INPUT_SETTINGS, store.DEFER_SETTING: names} if names else rows.INPUT_SETTINGS,
        {},
    )


async def store_insert(settings: Settings, client: Client) -> InsertFn:
    """The store boundary the settings ask for: `insert_table`, leaving the skip indexes to the
    merges when MILLRACE_DEFER_SKIP_INDEXES is on (ConfigError when the store cannot)."""
    if not settings.defer_skip_indexes:
        return insert_table
    deferred = await asyncio.to_thread(store.deferrable_indexes, client, (LOGS_TABLE, EVENTS_TABLE))
    log.info("skip_indexes_deferred_to_merges", indexes=deferred)
    return functools.partial(insert_table, deferred=deferred)


class Insert:
    def __init__(
        self,
        next_step: Step[Batch],
        client: Client,
        topic: str,
        insert: InsertFn = insert_table,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.next = next_step
        self.client = client
        self.topic = topic
        self.insert = insert
        self.clock = clock
        self.stopping = False  # set at shutdown: one failed attempt in join() is then enough
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="insert")
        self._message: Message[Batch] | None = None
        self._running: asyncio.Future[None] | None = None
        self._retry_at: float | None = None
        self._stored = False  # the batch is in the store; handing it on is what is left
        self._delay = FIRST_RETRY_S

    def submit(self, message: Message[Batch]) -> None:
        if self._message is not None:
            raise MessageRejected
        self._message = message
        self._stored = False
        self._delay = FIRST_RETRY_S
        self._start()

    def _start(self) -> None:
        assert self._message is not None
        batch = self._message.payload
        self._retry_at = None
        self._running = asyncio.get_running_loop().run_in_executor(self._pool, self._insert_all, batch)

    def _insert_all(self, batch: Batch) -> None:
        for table in batch.tables.values():
            started = time.perf_counter()
            if not table.split:
                try:
                    self.insert(self.client, table, table.token(self.topic))
                except Exception as exc:
                    if not refused(exc):
                        raise
                    log.warning(
                        "insert_refused", code="insert_refused", error=str(exc)[:500], stage="sending"
                    )
                    table.split = True
            if table.split:
                dead, refused_rows = self._one_by_one(table)
                batch.dead.extend(dead)
                table.rows -= refused_rows
                batch.rows -= refused_rows
            metrics.inserted(table.table, table.rows, time.perf_counter() - started)

    def _one_by_one(self, table: TableBatch) -> tuple[list[DeadLetter], int]:
        """Each message of `table` in an insert of its own; those the engine refuses, as dead
        letters. A retry after an outage repeats the ones already stored: their tokens match."""
        dead, refused_rows = [], 0
        for line in table.items:
            single = TableBatch(table.table)
            single.add(line)
            try:
                self.insert(self.client, single, single.token(self.topic))
            except Exception as exc:
                if not refused(exc):
                    raise
                dead.append(
                    DeadLetter(
                        line.value,
                        str(exc),
                        "store_refused",
                        self.topic,
                        line.partition,
                        line.offset,
                        request_id=line.key.decode(errors="replace"),
                    )
                )
                refused_rows += line.rows
        return dead, refused_rows

    def _settle(self) -> bool:
        """Pick up a finished attempt: True when the batch is stored."""
        running, self._running = self._running, None
        assert running is not None and self._message is not None
        exc = running.exception()
        if exc is None:
            return True
        if not isinstance(exc, Exception):
            raise exc  # the process is going down (SystemExit, KeyboardInterrupt): no retry
        metrics.INSERT_FAILURES.inc()
        batch = self._message.payload
        # The store is unavailable or refused the insert: keep the batch, commit nothing, try
        # again. The same token makes a late success of this attempt harmless.
        log.warning(
            "insert_failed",
            code="insert_failed",
            rows=batch.rows,
            tables=sorted(batch.tables),
            error=str(exc)[:500],
            retry_in_s=self._delay,
            stage="sending",
        )
        self._retry_at = self.clock() + self._delay
        self._delay = min(self._delay * 2, LAST_RETRY_S)
        return False

    def _hand_on(self) -> None:
        assert self._message is not None
        try:
            self.next.submit(self._message)
        except MessageRejected:
            return  # stored: offered again at the next poll, never inserted again
        self._message = None
        self._stored = False

    async def poll(self) -> None:
        if self._running is not None and self._running.done():
            self._stored = self._settle()
        elif self._retry_at is not None and self.clock() >= self._retry_at:
            self._start()
        if self._stored:
            self._hand_on()
        await self.next.poll()

    async def join(self) -> None:
        while self._message is not None:
            if self._stored:
                self._hand_on()
                if self._message is not None:
                    await self.next.join()  # the next step took nothing: let it finish first
                continue
            if self._running is None:
                assert self._retry_at is not None
                await asyncio.sleep(max(0.0, self._retry_at - self.clock()))  # shutdown path only
                self._start()
            assert self._running is not None
            await asyncio.wait([self._running])
            self._stored = self._settle()
            if not self._stored and self.stopping:
                raise GiveUp
        await self.next.join()

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self.next.close()
