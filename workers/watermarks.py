"""What is already stored: the per-table watermarks (highest stored offset per partition)
and the few messages stored above them, read from the store at each assignment.

After a crash between insert and commit, the next owner of a partition re-reads messages
whose rows are in the store; these marks let the skip-stored step drop them. Marks that
cannot come from the topic now in Kafka (deleted and re-created under the same name) are
dropped, loudly: trusting them would skip new messages.
"""

from __future__ import annotations

import asyncio
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from clickhouse_connect.driver.client import Client

from millrace import store
from millrace.config import Settings
from millrace.kafka.topics import ENVELOPE_OVERHEAD, client_options
from schemas.record import TABLE_COLUMNS

log = structlog.get_logger()


class Watermarks:
    def __init__(self, settings: Settings, client: Client) -> None:
        self.settings = settings
        self.client = client
        self.topic = settings.topic
        self.marks: dict[tuple[str, int], int] = {}
        # (table, partition, offset) stored above the watermark (see _stored_positions).
        self.above: set[tuple[str, int, int]] = set()
        # False from a rebalance until the marks are read again for the new assignment.
        self.loaded = False

    def stored(self, table: str, partition: int, offset: int) -> bool:
        return self.marks.get((table, partition), -1) >= offset or (table, partition, offset) in self.above

    async def load(self, consumer: AIOKafkaConsumer) -> None:
        marks, above = await asyncio.to_thread(_stored_positions, self.client, self.topic)
        assigned = [tp for tp in consumer.assignment() if tp.topic == self.topic]
        ends = await consumer.end_offsets(assigned) if assigned else {}
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
        self.marks, self.above = marks, above
        self.loaded = True

    async def _reborn(self, marks: dict[tuple[str, int], int]) -> set[int]:
        """Partitions where the message at some table's mark is not one that table stored."""
        if not marks:
            return set()
        keys = await _keys_at(self.settings, marks)
        ids = await asyncio.to_thread(_ingest_ids_at, self.client, self.topic, list(marks.items()))
        return {
            p for (t, p), o in marks.items() if (key := keys.get((p, o))) is not None and key not in ids[t, p]
        }

    async def ensure(self, consumer: AIOKafkaConsumer) -> None:
        """Called before records are batched. The assignment callback loads the watermarks,
        but aiokafka can hand out records of a new assignment while that callback still
        runs, and a store that is down then leaves them unloaded: batching without them
        would store a crashed worker's uncommitted batch a second time."""
        delay = 0.2
        while not self.loaded:
            try:
                await self.load(consumer)
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
