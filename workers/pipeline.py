"""The worker's chain, wired here and only here:

    consume -> decode (envelope) -> parse (dialect) -> enrich -> batch -> insert -> commit

An envelope the gateway marked `store_parses` skips parse and enrich here: its raw body
is batched as is and the engine parses it inside the insert (`insert_table`), with the
same result (formats/astralog_store.py). Rows built here and such bodies still go
in one insert per table and batch (one part, so the watermarks stay exact).

Offsets travel with the rows: a batch knows, per partition, the next offset to
commit, and commits only after its rows are in ClickHouse. One batch is inserted
while the next is parsed (at most one in flight, so commits stay in order). Redelivery is harmless
twice over: an insert carries a deduplication token built from its offsets and request ids (a
retried identical insert is dropped by the engine), and after a crash between
insert and commit the per-table watermark (highest stored offset, maintained by a
materialized view in the same insert) makes the worker skip what is already stored.

A message that cannot be decoded or parsed is bad input, not an outage: it goes to
the dead-letter topic with the reason and its source position, and its partition
keeps flowing. Anything else (the store is down) is retried with backoff without
committing, so nothing acknowledged is ever lost. If dead letters flood in (a bad
deploy broke a parser), the flood guard (`workers/flood.py`) stops the worker instead:
the batch that tripped it is left uncommitted and every partition paused until a restart.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError
from aiokafka.structs import ConsumerRecord
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import OperationalError

from formats import PARSERS, ParseContext, Parsed, ParseError, astralog_store
from millrace import metrics, store
from millrace.config import Settings
from millrace.kafka.topics import ENVELOPE_OVERHEAD, client_options, envelope_producer
from schemas.deadletter import DeadLetter
from schemas.envelope import Envelope, EnvelopeError, decode
from schemas.record import MAP_COLUMN, PIPELINE_COLUMNS, TABLE_COLUMNS, TABLE_DEFAULTS
from workers.enrich import user_agent
from workers.flood import FLOOD_CODE, FloodGuard

log = structlog.get_logger()

# Dialects whose API promises server-injected `$browser`, `$os`, `$device`, `$ip` fields.
_INJECTS_CLIENT_FIELDS = frozenset({"goodlogs_logs", "goodlogs_events"})

# How many deferred rows weigh one built row in a batch's size (Batch.full).
DEFERRED_SHARE = 4

# (client, table batch, dedup token): the store boundary, one insert.
InsertFn = Callable[[Client, "TableBatch", str], None]


@dataclass(slots=True)
class TableBatch:
    """Columnar rows bound for one table, and the offsets (per partition) they came from."""

    table: str
    columns: dict[str, list[Any]]
    ranges: dict[int, tuple[int, int]] = field(default_factory=dict)
    rows: int = 0
    # Envelopes whose bodies the engine parses in the insert (store_parses), not yet rows.
    deferred: list[tuple[Envelope, ConsumerRecord]] = field(default_factory=list)
    deferred_rows: int = 0  # of `rows`, those in `deferred`
    # Request ids (record keys) per partition, in offset order, for the token: offsets alone
    # repeat once the topic is deleted and re-created, and the engine would drop the new rows
    # as duplicates. Hashed once per insert, not per message.
    requests: dict[int, list[bytes]] = field(default_factory=dict)

    @classmethod
    def empty(cls, table: str) -> TableBatch:
        return cls(table, {name: [] for name in TABLE_COLUMNS[table]})

    def token(self, topic: str) -> str:
        spans = ",".join(f"{p}:{lo}-{hi}" for p, (lo, hi) in sorted(self.ranges.items()))
        digest = hashlib.blake2b(digest_size=8)
        for partition, keys in sorted(self.requests.items()):
            digest.update(b"%d:" % partition)
            digest.update(b"\n".join(keys))
        return f"{self.table}|{topic}|{spans}|{digest.hexdigest()}"

    @property
    def mixed(self) -> bool:
        """Rows built here beside deferred bodies: one insert needs both kinds of input."""
        return bool(self.deferred) and self.rows > self.deferred_rows

    def accepts_deferred(self, dialect: str) -> bool:
        return not self.deferred or self.deferred[0][0].dialect == dialect

    def defer(self, envelope: Envelope, record: ConsumerRecord) -> None:
        self.deferred.append((envelope, record))
        self.rows += envelope.records
        self.deferred_rows += envelope.records
        self._cover(record)

    def materialize(self) -> list[DeadLetter]:
        """Parse the deferred envelopes here instead, into rows; what fails to parse is returned."""
        deferred, self.deferred = self.deferred, []
        requests = {p: list(keys) for p, keys in self.requests.items()}  # enrich_step re-covers
        self.rows -= self.deferred_rows
        self.deferred_rows = 0
        dead = []
        for envelope, record in deferred:
            try:
                parsed = parse_step(envelope)
            except ParseError as exc:  # the gateway validated it: only a bug gets here
                dead.append(_dead_letter(record, str(exc), exc.code))
                continue
            enrich_step(envelope, parsed, record, self)
        self.requests = requests
        return dead

    def _cover(self, record: ConsumerRecord) -> None:
        lo, hi = self.ranges.get(record.partition, (record.offset, record.offset))
        self.ranges[record.partition] = (min(lo, record.offset), max(hi, record.offset))
        keys = self.requests.get(record.partition)
        if keys is None:
            keys = self.requests[record.partition] = []
        keys.append(record.key or b"")


def _dead_letter(record: ConsumerRecord, reason: str, code: str) -> DeadLetter:
    return DeadLetter(
        record.value or b"",
        reason,
        code,
        record.topic,
        record.partition,
        record.offset,
        request_id=(record.key or b"").decode(errors="replace"),
    )


@dataclass(slots=True)
class Batch:
    tables: dict[str, TableBatch] = field(default_factory=dict)
    dead: list[DeadLetter] = field(default_factory=list)
    commit: dict[TopicPartition, int] = field(default_factory=dict)
    rows: int = 0
    messages: int = 0
    started: float = 0.0

    def __bool__(self) -> bool:
        return bool(self.commit)

    def full(self, rows: int) -> bool:
        """At `rows` rows built here; a deferred body's rows count a quarter (held as raw
        bytes, ~350 B a log, a few times less than a built row, and no work for the GC)."""
        deferred = sum(t.deferred_rows for t in self.tables.values())
        return self.rows - deferred + deferred // DEFERRED_SHARE >= rows


def decode_step(record: ConsumerRecord) -> Envelope:
    return decode(record.value)


def parse_step(envelope: Envelope) -> Parsed:
    parser = PARSERS.get(envelope.dialect)
    if parser is None:
        raise ParseError(f"no parser for dialect {envelope.dialect!r}", code="unknown_dialect")
    ctx = ParseContext(
        received_at_ns=envelope.received_at_ns,
        path=envelope.path,
        content_type=envelope.content_type,
        query=envelope.query,
    )
    return parser(envelope.body, ctx)


def enrich_step(envelope: Envelope, parsed: Parsed, record: ConsumerRecord, out: TableBatch) -> None:
    """Append the parsed rows to the columnar batch, adding the request facts and bookkeeping."""
    rows = parsed.rows
    n = len(rows)
    agent = user_agent(envelope.user_agent)
    facts = {
        "project": envelope.project,
        "observed_timestamp": envelope.received_at_ns,
        "ua_browser": agent.browser,
        "ua_os": agent.os,
        "ua_device": agent.device,
        "client_ip": envelope.client_ip,
        "dialect": envelope.dialect,
        "ingest_id": envelope.request_id,
        "kafka_topic": record.topic,
        "kafka_partition": record.partition,
        "kafka_offset": record.offset,
    }
    if envelope.dialect in _INJECTS_CLIENT_FIELDS:
        injected = {
            "$browser": agent.browser,
            "$os": agent.os,
            "$device": agent.device,
            "$ip": envelope.client_ip,
        }
        map_column = MAP_COLUMN[parsed.table]
        rows = [{**row, map_column: {**row.get(map_column, {}), **injected}} for row in rows]
    defaults = TABLE_DEFAULTS[out.table]
    filled = set().union(*rows)  # columns some row sets; the others are all default, in bulk
    for name, values in out.columns.items():
        if name in PIPELINE_COLUMNS:
            values.extend([facts[name]] * n)
        elif name in filled:
            default = defaults[name]
            values.extend([row.get(name, default) for row in rows])
        else:
            values.extend([defaults[name]] * n)
    out.rows += n
    out._cover(record)


# Dialects whose bodies the engine can parse itself, when the gateway found them fit.
STORE_PARSED = {"astralog": astralog_store}


def insert_table(client: Client, table: TableBatch, token: str) -> None:
    """The batch of one table as one insert: rows through clickhouse-connect's columnar
    insert, deferred bodies through an `INSERT ... SELECT` the engine parses itself, and
    both at once (embedded engine) as the rows staged in a Memory table UNION ALL the bodies."""
    if not table.deferred:
        store.insert_columns(client, table.table, table.columns, token)
        return
    if table.mixed and not store.embedded(client):
        raise ValueError("rows and deferred bodies in one insert need the embedded engine")
    sql = STORE_PARSED[table.deferred[0][0].dialect]
    pieces: list[bytes] = []
    for envelope, record in table.deferred:
        agent = user_agent(envelope.user_agent)
        pieces.extend(
            sql.line(
                envelope.body,
                offset=record.offset,
                partition=record.partition,
                observed_ns=envelope.received_at_ns,
                project=envelope.project,
                ingest_id=envelope.request_id,
                browser=agent.browser,
                os=agent.os,
                device=agent.device,
                client_ip=envelope.client_ip,
                dialect=envelope.dialect,
            )
        )
    params = {"topic": table.deferred[0][1].topic}
    if not table.mixed:
        store.insert_select(
            client,
            table.table,
            sql.COLUMNS,
            sql.select_sql,
            sql.STRUCTURE,
            pieces,
            token,
            sql.INPUT_SETTINGS,
            params,
        )
        return
    columns = TABLE_COLUMNS[table.table]
    with store.staged(client, table.table, table.columns) as stage:
        padded = ", ".join(c if c in sql.COLUMNS else store.default_sql(table.table, c) for c in columns)
        store.insert_select(
            client,
            table.table,
            columns,
            lambda source: (
                f"SELECT {', '.join(columns)} FROM {stage} UNION ALL "
                f"SELECT {padded} FROM ({sql.select_sql(source)})"
            ),
            sql.STRUCTURE,
            pieces,
            token,
            sql.INPUT_SETTINGS,
            params,
        )


class _GiveUp(Exception):
    """An insert keeps failing while the worker is asked to stop: leave the batch uncommitted."""


class Pipeline:
    """Turns consumer records into batches and batches into stored rows and commits."""

    def __init__(
        self,
        settings: Settings,
        client: Client,
        consumer: AIOKafkaConsumer,
        dlq: AIOKafkaProducer,
        insert: InsertFn = insert_table,
        flood: FloodGuard | None = None,
    ) -> None:
        self.settings = settings
        self.client = client
        self.consumer = consumer
        self.dlq = dlq
        self._insert = insert
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="insert")
        self._lock = asyncio.Lock()
        self._inflight: asyncio.Task[None] | None = None
        self.batch = Batch()
        self.watermarks: dict[tuple[str, int], int] = {}
        # (table, partition, offset) stored above the watermark (see stored_above_watermarks).
        self.stored_above: set[tuple[str, int, int]] = set()
        # False from a rebalance until the watermarks are read again for the new assignment.
        self.watermarks_loaded = False
        self.stopping = False
        self.stats = {"rows": 0, "batches": 0, "dead_letters": 0, "skipped_stored": 0}
        self.flood = flood if flood is not None else FloodGuard.from_settings(settings)

    # -- stages -----------------------------------------------------------------

    def submit(self, record: ConsumerRecord) -> None:
        if self.flood.tripped:
            return  # halted: left uncommitted for the worker that runs after the fix
        batch = self.batch
        if not batch:
            batch.started = time.monotonic()
        batch.commit[TopicPartition(record.topic, record.partition)] = record.offset + 1
        batch.messages += 1
        try:
            envelope = decode_step(record)
            deferrable = envelope.store_parses and envelope.dialect in STORE_PARSED
            parsed = None if deferrable else parse_step(envelope)
        except (EnvelopeError, ParseError) as exc:
            code = exc.code if isinstance(exc, ParseError) else "bad_envelope"
            batch.dead.append(_dead_letter(record, str(exc), code))
            return
        if parsed is not None and not parsed.rows:
            return
        name = parsed.table if parsed is not None else STORE_PARSED[envelope.dialect].TABLE
        if (
            self.watermarks.get((name, record.partition), -1) >= record.offset
            or (name, record.partition, record.offset) in self.stored_above
        ):
            self.stats["skipped_stored"] += 1  # stored before a crash, not yet committed
            return
        table = batch.tables.get(name)
        if table is None:
            table = batch.tables[name] = TableBatch.empty(name)
        before = table.rows
        if parsed is None and table.accepts_deferred(envelope.dialect):
            table.defer(envelope, record)
        else:
            if parsed is None:  # a second store-parsed dialect in one batch: not worth a case
                try:
                    parsed = parse_step(envelope)
                except ParseError as exc:  # the gateway validated it: only a bug gets here
                    batch.dead.append(_dead_letter(record, str(exc), exc.code))
                    return
            enrich_step(envelope, parsed, record, table)
        batch.rows += table.rows - before

    def due(self) -> bool:
        batch = self.batch
        if not batch:
            return False
        age_ms = (time.monotonic() - batch.started) * 1000
        return batch.full(self.settings.batch_rows) or age_ms >= self.settings.batch_age_ms

    async def flush(self) -> None:
        """Store and commit everything consumed so far, including a batch still in flight."""
        await self.flush_behind()
        await self.drain()

    async def flush_behind(self) -> None:
        """Hand the current batch to the store and return while it is inserted, so the next
        batch is parsed meanwhile. At most one batch is in flight (its commit precedes the
        next one's), so offsets are still committed in order and only after their rows."""
        async with self._lock:
            batch, self.batch = self.batch, Batch()
            await self.drain()
            if not batch:
                return
            if self.flood.check(batch.messages, len(batch.dead)):
                self._halt(batch)
                return
            self._inflight = asyncio.create_task(self._store(batch))

    async def drain(self) -> None:
        """Wait for the batch in flight to be stored and committed; its failure is ours."""
        task, self._inflight = self._inflight, None
        if task is not None:
            await task

    async def _store(self, batch: Batch) -> None:
        try:
            for table in batch.tables.values():
                await self._insert_with_retry(table, batch)
        except _GiveUp:
            # Stopping while the store is out: nothing of this batch is committed, so
            # the next owner of these partitions reads it again (dedup keeps that exact).
            log.warning("batch_abandoned", code="batch_abandoned", rows=batch.rows, stage="sending")
            return
        for dead in batch.dead:
            await self._dead_letter(dead)
        try:
            await self.consumer.commit(batch.commit)
        except (CommitFailedError, IllegalStateError) as exc:
            # We lost these partitions (evicted or rebalanced mid-batch). The rows are stored,
            # and the new owner skips them by the offset watermark: not an error to die for.
            log.warning("commit_failed", code="commit_failed", error=type(exc).__name__, stage="sending")
        self.stats["rows"] += batch.rows
        self.stats["batches"] += 1
        metrics.BATCH_ROWS.observe(batch.rows)
        log.info(
            "batch_stored",
            rows=batch.rows,
            dead_letters=len(batch.dead),
            partitions=len(batch.commit),
            stage="sending",
        )

    async def _insert_with_retry(self, table: TableBatch, batch: Batch) -> None:
        if table.mixed and not store.embedded(self.client):
            # A server's input() reads one request body, and staging the rows in a table
            # there is not safe behind a load balancer (another replica may answer the
            # next request): a mixed batch is stored as rows.
            batch.dead.extend(table.materialize())
        token = table.token(self.settings.topic)
        delay = 0.2
        loop = asyncio.get_running_loop()
        paused: set[TopicPartition] = set()
        try:
            while True:
                started = time.perf_counter()
                try:
                    await loop.run_in_executor(self._pool, self._insert, self.client, table, token)
                    metrics.inserted(table.table, table.rows, time.perf_counter() - started)
                    return
                except Exception as exc:
                    metrics.INSERT_FAILURES.inc()
                    if table.deferred:
                        # The same token does not dedupe a retry as rows against the engine's
                        # insert (other blocks), so first ask what is stored: one insert is one
                        # part, all of the batch or none of it.
                        try:
                            landed = await loop.run_in_executor(
                                self._pool, _landed, self.client, table, self.settings.topic
                            )
                        except Exception:
                            landed = None  # the store is out: retry the same insert below
                        if landed:  # stored; what failed came after (a view, the stage's drop)
                            _warn_deferred("insert_failed_after_storing", table, exc)
                            metrics.inserted(table.table, table.rows, time.perf_counter() - started)
                            return
                        if landed is False and not isinstance(exc, OperationalError):
                            # Nothing stored and the engine refused the insert (a connection
                            # error could still be running on a server): build the rows here.
                            _warn_deferred("store_parse_failed", table, exc)
                            batch.dead.extend(table.materialize())
                            continue
                    if not paused:
                        # The consume loop waits on this flush anyway; pausing also stops the
                        # background fetcher from buffering more while the store is out.
                        # Membership survives: aiokafka heartbeats from its own task, and
                        # max_poll_interval_ms gives an outage 10 minutes before eviction.
                        paused = set(self.consumer.assignment())
                        self.consumer.pause(*paused)
                    # The store is unavailable or refused the insert: keep the batch, do not
                    # commit, try again. Redelivery and dedup make a late success harmless.
                    log.warning(
                        "insert_failed",
                        code="insert_failed",
                        table=table.table,
                        rows=table.rows,
                        error=str(exc)[:500],
                        retry_in_s=delay,
                        stage="sending",
                    )
                    if self.stopping:
                        raise _GiveUp from exc
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 30.0)
        finally:
            if paused:
                self.consumer.resume(*(paused & self.consumer.assignment()))

    async def _dead_letter(self, dead: DeadLetter) -> None:
        await self.dlq.send_and_wait(self.settings.dlq_topic, dead.value, headers=dead.headers())
        self.stats["dead_letters"] += 1
        metrics.DEAD_LETTERS.labels(dead.code).inc()
        log.warning(
            "dead_lettered",
            code=dead.code,
            request_id=dead.request_id,
            reason=dead.reason[:200],
            partition=dead.source_partition,
            offset=dead.source_offset,
            stage="processing",
        )

    def _halt(self, batch: Batch) -> None:
        """The flood guard tripped: store, dead-letter and commit nothing more; stop reading.

        The batch is dropped uncommitted, so the worker started after the fix re-reads it
        from the last commit (Kafka keeps it meanwhile); health reports the condition.
        """
        self.consumer.pause(*self.consumer.assignment())
        log.error(
            "dlq_flood",
            code=FLOOD_CODE,
            held_messages=batch.messages,
            held_dead_letters=len(batch.dead),
            **{k: v for k, v in (self.flood.tripped or {}).items() if k != "code"},
            action="consumption paused until restart; see README 'Dead letters'",
            stage="processing",
        )

    # -- partition lifecycle ------------------------------------------------------

    async def load_watermarks(self) -> None:
        loop = asyncio.get_running_loop()
        marks, above = await loop.run_in_executor(
            self._pool, _stored_positions, self.client, self.settings.topic
        )
        assigned = [tp for tp in self.consumer.assignment() if tp.topic == self.settings.topic]
        ends = await self.consumer.end_offsets(assigned) if assigned else {}
        stale = {tp.partition for tp, end in ends.items() if _stale(marks, above, tp.partition, end)}
        if stale:
            # A stored offset at or past the end of the log cannot come from this topic: it was
            # deleted and re-created under the same name (or truncated). Trusting those marks
            # would silently skip the new topic's messages; ignoring them risks at most a
            # duplicate of an uncommitted batch. Loud, because an operator should know.
            log.error(
                "stale_watermarks", code="stale_watermarks", partitions=sorted(stale), stage="processing"
            )
            marks = {k: v for k, v in marks.items() if k[1] not in stale}
            above = {k for k in above if k[1] not in stale}
        reborn = await self._reborn(marks)
        if reborn:
            # The log reached the mark again, but with other requests: a re-created topic
            # that has grown past the old marks. Same reasoning as for stale marks.
            log.error(
                "reborn_watermarks", code="reborn_watermarks", partitions=sorted(reborn), stage="processing"
            )
            marks = {k: v for k, v in marks.items() if k[1] not in reborn}
            above = {k for k in above if k[1] not in reborn}
        self.watermarks, self.stored_above = marks, above
        self.watermarks_loaded = True

    async def _reborn(self, marks: dict[tuple[str, int], int]) -> set[int]:
        """Partitions where the message at some table's mark is not one that table stored."""
        if not marks:
            return set()
        keys = await _keys_at(self.settings, marks)
        loop = asyncio.get_running_loop()
        ids = await loop.run_in_executor(
            self._pool, _ingest_ids_at, self.client, self.settings.topic, list(marks.items())
        )
        return {
            p for (t, p), o in marks.items() if (key := keys.get((p, o))) is not None and key not in ids[t, p]
        }

    async def ensure_watermarks(self) -> None:
        """Called before records are batched. The assignment callback loads the watermarks,
        but aiokafka can hand out records of a new assignment while that callback still
        runs, and a store that is down then leaves them unloaded: batching without them
        would store a crashed worker's uncommitted batch a second time."""
        delay = 0.2
        while not self.watermarks_loaded:
            try:
                await self.load_watermarks()
            except Exception as exc:
                log.warning(
                    "watermarks_failed",
                    code="watermarks_failed",
                    error=str(exc)[:500],
                    retry_in_s=delay,
                    stage="processing",
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)

    def close(self) -> None:
        self._pool.shutdown(wait=True)


def _warn_deferred(code: str, table: TableBatch, exc: Exception) -> None:
    log.warning(code, code=code, table=table.table, error=str(exc)[:500], stage="sending")


def _landed(client: Client, table: TableBatch, topic: str) -> bool:
    """Whether the rows of `table`'s messages are in the store (any of them means all)."""
    positions = {(record.partition, record.offset) for _, record in table.deferred}
    columns = table.columns
    positions.update(zip(columns["kafka_partition"], columns["kafka_offset"], strict=True))
    found = client.query(
        f"SELECT 1 FROM {table.table} WHERE kafka_topic = {{topic:String}} "
        "AND (kafka_partition, kafka_offset) IN {positions:Array(Tuple(UInt32, UInt64))} LIMIT 1",
        parameters={"topic": topic, "positions": sorted(positions)},
    )
    return bool(found.result_rows)


def _stale(
    marks: dict[tuple[str, int], int], above: set[tuple[str, int, int]], partition: int, end: int
) -> bool:
    """True when some table claims an offset of `partition` that the log has not reached yet."""
    return any(o >= end for (_, p), o in marks.items() if p == partition) or any(
        o >= end for _, p, o in above if p == partition
    )


async def _keys_at(settings: Settings, marks: dict[tuple[str, int], int]) -> dict[tuple[int, int], str]:
    """The request id (record key) of the message at each (partition, offset) the log still
    holds; a position it does not (retention, a control record) is left out: trusted."""
    reader = AIOKafkaConsumer(
        **client_options(settings),
        group_id=None,
        enable_auto_commit=False,
        max_partition_fetch_bytes=settings.max_decompressed_bytes + ENVELOPE_OVERHEAD,
        fetch_max_wait_ms=50,
    )
    found: dict[tuple[int, int], str] = {}
    await reader.start()
    try:
        for partition, offset in sorted(set((p, o) for (_, p), o in marks.items())):
            tp = TopicPartition(settings.topic, partition)
            reader.assign([tp])
            reader.seek(tp, offset)
            got = await reader.getmany(tp, timeout_ms=5_000, max_records=1)
            for r in got.get(tp, []):
                if r.offset == offset:
                    found[partition, offset] = (r.key or b"").decode(errors="replace")
    finally:
        await reader.stop()
    return found


def _ingest_ids_at(
    client: Client, topic: str, marks: list[tuple[tuple[str, int], int]]
) -> dict[tuple[str, int], set[str]]:
    ids: dict[tuple[str, int], set[str]] = {}
    for (table, partition), offset in marks:
        result = client.query(
            f"SELECT DISTINCT ingest_id FROM {table} WHERE kafka_topic = {{t:String}} "
            "AND kafka_partition = {p:UInt32} AND kafka_offset = {o:UInt64}",
            parameters={"t": topic, "p": partition, "o": offset},
        )
        ids[table, partition] = {str(i) for (i,) in result.result_rows}
    return ids


def _stored_positions(
    client: Client, topic: str
) -> tuple[dict[tuple[str, int], int], set[tuple[str, int, int]]]:
    """The watermarks, and the messages stored above them.

    The materialized view writes its part after the table's: a worker killed between the
    two leaves rows stored with no watermark for them (seen under SIGKILL in
    tests/test_delivery.py). The messages above each watermark are therefore read from
    the tables themselves; only the uncommitted tail is found there, so the set is small.
    This scans the offset columns (no index on them): a cost paid once per rebalance.
    """
    marks = store.watermarks(client, topic)
    above: set[tuple[str, int, int]] = set()
    for table in TABLE_COLUMNS:
        known = {p: o for (t, p), o in marks.items() if t == table}
        params: dict[str, Any] = {"topic": topic, "known": list(known)}
        clauses = ["NOT has({known:Array(UInt32)}, kafka_partition)"]
        for i, (partition, offset) in enumerate(sorted(known.items())):
            clauses.append(f"(kafka_partition = {{p{i}:UInt32}} AND kafka_offset > {{o{i}:UInt64}})")
            params[f"p{i}"], params[f"o{i}"] = partition, offset
        result = client.query(
            f"SELECT DISTINCT kafka_partition, kafka_offset FROM {table} "
            f"WHERE kafka_topic = {{topic:String}} AND ({' OR '.join(clauses)})",
            parameters=params,
        )
        above.update((table, int(p), int(o)) for p, o in result.result_rows)
    return marks, above


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        # Store and commit what we hold before another member takes these partitions.
        await self.pipeline.flush()
        self.pipeline.watermarks_loaded = False
        metrics.forget_lag(revoked)

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        self.pipeline.watermarks_loaded = False
        try:
            await self.pipeline.load_watermarks()
        except Exception as exc:
            # aiokafka would swallow it; the consume loop retries (ensure_watermarks).
            log.warning(
                "watermarks_failed", code="watermarks_failed", error=str(exc)[:500], stage="processing"
            )
        log.info("partitions_assigned", partitions=sorted(tp.partition for tp in assigned))


def make_consumer(settings: Settings) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        **client_options(settings),
        group_id=settings.consumer_group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=settings.max_decompressed_bytes + ENVELOPE_OVERHEAD,
        fetch_max_bytes=max(52_428_800, settings.max_decompressed_bytes * 2),
        # Let the broker gather a fetch instead of answering every new message on its own:
        # far fewer fetch round trips for the broker and the event loop, at most 100 ms later.
        fetch_min_bytes=1_048_576,
        fetch_max_wait_ms=100,
        # A store outage holds a batch for a while; do not get evicted from the group for it.
        max_poll_interval_ms=600_000,
    )


async def run(
    settings: Settings,
    client: Client,
    stop: asyncio.Event,
    flood: FloodGuard | None = None,
    *,
    insert: InsertFn = insert_table,
    on_start: Callable[[Pipeline], None] | None = None,
) -> Pipeline:
    """Consume until `stop` is set. `insert` is the store boundary (tests inject failures
    there); `on_start` sees the pipeline once it runs (tests watch its consumer)."""
    consumer = make_consumer(settings)
    dlq = envelope_producer(settings)  # a dead letter is a whole envelope
    pipeline = Pipeline(settings, client, consumer, dlq, insert=insert, flood=flood)
    await dlq.start()
    consumer.subscribe([settings.topic], listener=_Rebalance(pipeline))
    await consumer.start()
    log.info("worker_started", topic=settings.topic, group=settings.consumer_group)
    if on_start is not None:
        on_start(pipeline)
    try:
        while not stop.is_set():
            if pipeline.flood.tripped:
                # Halted: keep polling (to stay in the group) with every partition paused,
                # including any a rebalance hands over.
                consumer.pause(*consumer.assignment())
            records = await consumer.getmany(timeout_ms=100, max_records=1000)
            await metrics.observe_lag(consumer)
            if records:
                await pipeline.ensure_watermarks()
            for batch in records.values():
                for record in batch:
                    pipeline.submit(record)
                    # Bounded by rows, not by what one fetch returned (up to 1000 envelopes of
                    # 500 logs): big batches cost memory and make the GC rescan live rows.
                    if pipeline.batch.full(settings.batch_rows):
                        await pipeline.flush_behind()
            if pipeline.due():
                await pipeline.flush_behind()
        # Graceful stop: store and commit what was consumed before leaving the group. If the
        # store is out, one failed attempt is enough: the batch stays uncommitted (redelivered).
        pipeline.stopping = True
        await pipeline.flush()
    finally:
        await consumer.stop()
        await dlq.stop()
        pipeline.close()
        log.info("worker_stopped", **pipeline.stats)
    return pipeline
