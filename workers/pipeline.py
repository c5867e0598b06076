"""The worker's chain, wired here and only here:

    consume -> decode (envelope) -> enrich -> batch -> insert -> commit

The gateway parsed each request once; its envelope carries normalized rows the engine
reads as they are (`schemas/rows.py`). The worker adds each message's request facts and
position, and the engine builds the table rows in one `INSERT ... SELECT` per table and
batch (one part, so the watermarks stay exact): no Python runs per row here.

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
from dataclasses import dataclass, field, replace
from typing import Any

import orjson
import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError
from aiokafka.structs import ConsumerRecord
from clickhouse_connect.driver.client import Client

from formats import PARSERS, ParseContext, ParseError
from formats.useragent import user_agent
from millrace import metrics, store
from millrace.config import Settings
from millrace.kafka.topics import ENVELOPE_OVERHEAD, client_options, envelope_producer
from schemas import rows
from schemas.deadletter import DeadLetter
from schemas.envelope import RAW_BODY_VERSION, VERSION, Envelope, EnvelopeError, decode
from schemas.record import TABLE_COLUMNS
from workers.flood import FLOOD_CODE, FloodGuard

log = structlog.get_logger()

# (client, table batch, dedup token): the store boundary, one insert.
InsertFn = Callable[[Client, "TableBatch", str], None]


@dataclass(slots=True)
class TableBatch:
    """The input lines bound for one table (`schemas.rows.line`, one per message), and the
    offsets (per partition) they came from."""

    table: str
    lines: list[bytes] = field(default_factory=list)
    ranges: dict[int, tuple[int, int]] = field(default_factory=dict)
    rows: int = 0
    # Request ids (record keys) per partition, in offset order, for the token: offsets alone
    # repeat once the topic is deleted and re-created, and the engine would drop the new rows
    # as duplicates. Hashed once per insert, not per message.
    requests: dict[int, list[bytes]] = field(default_factory=dict)

    @classmethod
    def empty(cls, table: str) -> TableBatch:
        return cls(table)

    def token(self, topic: str) -> str:
        spans = ",".join(f"{p}:{lo}-{hi}" for p, (lo, hi) in sorted(self.ranges.items()))
        digest = hashlib.blake2b(digest_size=8)
        for partition, keys in sorted(self.requests.items()):
            digest.update(b"%d:" % partition)
            digest.update(b"\n".join(keys))
        return f"{self.table}|{topic}|{spans}|{digest.hexdigest()}"

    def add(self, envelope: Envelope, record: ConsumerRecord) -> None:
        """Append one message's rows with its request facts and position (enrich)."""
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
        self.lines.extend(rows.line(facts, envelope.body))
        self.rows += envelope.rows
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
        return self.rows >= rows


def decode_step(record: ConsumerRecord) -> Envelope:
    """The envelope, its rows ready for the engine. A version 1 envelope (the raw request
    body, written before rows travelled in envelopes) is parsed here, once, as the gateway
    parses a request today."""
    envelope = decode(record.value)
    if envelope.version != RAW_BODY_VERSION:
        return envelope
    parser = PARSERS.get(envelope.dialect)
    if parser is None:
        raise ParseError(f"no parser for dialect {envelope.dialect!r}", code="unknown_dialect")
    ctx = ParseContext(
        received_at_ns=envelope.received_at_ns,
        path=envelope.path,
        content_type=envelope.content_type,
        query=envelope.query,
        user_agent=envelope.user_agent,
        client_ip=envelope.client_ip,
    )
    parsed = parser(envelope.body, ctx)
    try:
        body = rows.encode(parsed.rows)
    except orjson.JSONEncodeError as exc:
        raise ParseError(f"a value cannot be stored: {exc}", code="unstorable_value") from None
    return replace(envelope, body=body, table=parsed.table, rows=len(parsed.rows), version=VERSION)


def insert_table(client: Client, table: TableBatch, token: str, *, into: str | None = None) -> None:
    """The batch of one table as one insert: the engine reads the rows from the lines.
    `into`: another table with the same columns (tests keep fuzzed rows apart)."""
    store.insert_select(
        client,
        into or table.table,
        rows.COLUMNS[table.table],
        lambda source: rows.select_sql(table.table, source),
        rows.STRUCTURE[table.table],
        table.lines,
        token,
        rows.INPUT_SETTINGS,
        {},
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
        except (EnvelopeError, ParseError) as exc:
            code = exc.code if isinstance(exc, ParseError) else "bad_envelope"
            batch.dead.append(_dead_letter(record, str(exc), code))
            return
        if not envelope.rows:
            return
        name = envelope.table
        if (
            self.watermarks.get((name, record.partition), -1) >= record.offset
            or (name, record.partition, record.offset) in self.stored_above
        ):
            self.stats["skipped_stored"] += 1  # stored before a crash, not yet committed
            return
        table = batch.tables.get(name)
        if table is None:
            table = batch.tables[name] = TableBatch.empty(name)
        table.add(envelope, record)
        batch.rows += envelope.rows

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
                await self._insert_with_retry(table)
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

    async def _insert_with_retry(self, table: TableBatch) -> None:
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
                    if not paused:
                        # The consume loop waits on this flush anyway; pausing also stops the
                        # background fetcher from buffering more while the store is out.
                        # Membership survives: aiokafka heartbeats from its own task, and
                        # max_poll_interval_ms gives an outage 10 minutes before eviction.
                        paused = set(self.consumer.assignment())
                        self.consumer.pause(*paused)
                    # The store is unavailable or refused the insert: keep the batch, do not
                    # commit, try again. The same token makes a late success harmless.
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
        bootstrap_servers=settings.bootstrap,
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
