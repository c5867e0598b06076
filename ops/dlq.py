"""Dead letters: the `millrace dlq` chores (list, replay).

A dead letter is the raw-topic message exactly as the worker read it, with its reason
and source position in headers (the format: `schemas/deadletter.py`). Listing and
replaying read the dead-letter topic with a consumer that has no group and assigns
partitions by hand, so they never move anyone's committed offsets and can be run any
number of times.

Replay re-produces the original bytes onto the raw topic, so a fixed worker processes
them like any new request, and records each replayed dead letter in a small compacted
marker topic (`<dead-letter topic>.replayed`, one record keyed `partition:offset`).
Why markers and not a committed consumer group: a group keeps one position per
partition, which cannot say "the `unknown_dialect` ones were replayed but the
`bad_envelope` ones in between were not" (`--code`), nor survive a `--from-offset`
that skips ahead; a marker per dead letter can, compaction keeps the topic as small
as the number of replayed dead letters, and `dlq list` can show what was replayed and
where it went. Each marker is written right after the raw topic acknowledged its
message: a replay killed between the two may send that one message again on the
next run (at-least-once). Run one replay at a time.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import NewTopic
from aiokafka.errors import TopicAlreadyExistsError, for_code
from aiokafka.structs import ConsumerRecord

from millrace.config import Settings
from millrace.kafka.topics import (
    ENVELOPE_OVERHEAD,
    REQUEST_TIMEOUT_MS,
    admin_client,
    client_options,
    envelope_producer,
)
from schemas.deadletter import DeadLetter
from schemas.envelope import Envelope, EnvelopeError, decode

log = structlog.get_logger()

REPLAYED_HEADER = "replayed_from"
_STALL_S = 30.0  # no progress this long while reading up to a known end offset: give up


def marker_topic(settings: Settings) -> str:
    return f"{settings.dlq_topic}.replayed"


@dataclass(frozen=True, slots=True)
class StoredDeadLetter:
    """One record of the dead-letter topic: where it sits there, the letter, its envelope if it decodes."""

    partition: int
    offset: int
    timestamp_ms: int
    letter: DeadLetter
    envelope: Envelope | None

    @classmethod
    def from_record(cls, record: ConsumerRecord) -> StoredDeadLetter:
        letter = DeadLetter.from_headers(record.value or b"", record.headers or ())
        try:
            envelope: Envelope | None = decode(letter.value)
        except EnvelopeError:
            envelope = None
        return cls(record.partition, record.offset, record.timestamp, letter, envelope)

    @property
    def marker_key(self) -> str:
        return f"{self.partition}:{self.offset}"


@dataclass(frozen=True, slots=True)
class Replayed:
    """Where a replayed dead letter went on the raw topic (None in a dry run)."""

    dead: StoredDeadLetter
    raw_partition: int | None
    raw_offset: int | None


@dataclass(slots=True)
class ReplayResult:
    replayed: list[Replayed] = field(default_factory=list)
    already_replayed: int = 0


def _consumer(settings: Settings) -> AIOKafkaConsumer:
    # No group: reading commits nothing and takes nothing away from anyone else.
    return AIOKafkaConsumer(
        **client_options(settings),
        group_id=None,
        enable_auto_commit=False,
        max_partition_fetch_bytes=settings.max_decompressed_bytes + ENVELOPE_OVERHEAD,
        fetch_max_bytes=max(52_428_800, settings.max_decompressed_bytes * 2),
    )


async def read_topic(
    settings: Settings, topic: str, *, from_offset: int = 0, partition: int | None = None
) -> AsyncGenerator[ConsumerRecord, None]:
    """Every record of `topic` from `from_offset` (in each partition) up to its end when called.

    Partitions are read one after another, so records come in (partition, offset) order.
    A topic that does not exist reads as empty.
    """
    numbers = await _partition_numbers(settings, topic)
    tps = [TopicPartition(topic, p) for p in numbers if partition is None or p == partition]
    if not tps:
        return
    consumer = _consumer(settings)
    await consumer.start()
    try:
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        starts = await consumer.beginning_offsets(tps)
        for tp in tps:
            position = max(starts[tp], from_offset)
            if position >= ends[tp]:
                continue
            consumer.seek(tp, position)
            stalled_since = time.monotonic()
            while position < ends[tp]:
                fetched = await consumer.getmany(tp, timeout_ms=500, max_records=500)
                for record in fetched.get(tp, ()):
                    if record.offset < ends[tp]:
                        yield record
                # Compaction leaves gaps in offsets: ask the consumer where it stands.
                now_at = await consumer.position(tp)
                if now_at > position:
                    position, stalled_since = now_at, time.monotonic()
                elif time.monotonic() - stalled_since > _STALL_S:
                    raise TimeoutError(f"reading {topic}[{tp.partition}] stalled at offset {position}")
    finally:
        await consumer.stop()


async def _partition_numbers(settings: Settings, topic: str) -> list[int]:
    # The consumer's own metadata knows only topics it subscribed to; ask the cluster.
    async with admin_client(settings) as admin:
        described: list[dict[str, Any]] = await admin.describe_topics([topic])
    # An absent topic comes back with an error code (UNKNOWN_TOPIC_OR_PARTITION), not missing.
    return sorted(p["partition"] for t in described if t["error_code"] == 0 for p in t["partitions"])


async def dead_letters(
    settings: Settings, *, from_offset: int = 0, partition: int | None = None, code: str | None = None
) -> AsyncGenerator[StoredDeadLetter, None]:
    reader = read_topic(settings, settings.dlq_topic, from_offset=from_offset, partition=partition)
    async with contextlib.aclosing(reader):
        async for record in reader:
            dead = StoredDeadLetter.from_record(record)
            if code is None or dead.letter.code == code:
                yield dead


async def replay_markers(settings: Settings) -> dict[str, dict[str, Any]]:
    """What was replayed so far: marker key (`partition:offset` in the DLQ) -> where it went."""
    markers: dict[str, dict[str, Any]] = {}
    reader = read_topic(settings, marker_topic(settings))
    async with contextlib.aclosing(reader):
        async for record in reader:
            key = (record.key or b"").decode()
            if record.value is None:
                markers.pop(key, None)  # a tombstone: an operator un-marked it
            else:
                markers[key] = orjson.loads(record.value)
    return markers


async def list_dead_letters(
    settings: Settings,
    *,
    limit: int = 100,
    code: str | None = None,
    from_offset: int = 0,
    partition: int | None = None,
) -> tuple[list[StoredDeadLetter], dict[str, dict[str, Any]]]:
    """Up to `limit` dead letters, oldest first per partition, and the replay markers."""
    found: list[StoredDeadLetter] = []
    reader = dead_letters(settings, from_offset=from_offset, partition=partition, code=code)
    async with contextlib.aclosing(reader):
        async for dead in reader:
            if len(found) >= limit:
                break
            found.append(dead)
    return found, await replay_markers(settings)


async def _ensure_marker_topic(settings: Settings) -> None:
    # Created on first replay rather than with the pipeline's topics: only this chore uses it.
    wanted = NewTopic(
        marker_topic(settings),
        1,
        settings.replication_factor,
        topic_configs={"cleanup.policy": "compact"},
    )
    async with admin_client(settings) as admin:
        response = await admin.create_topics([wanted], timeout_ms=REQUEST_TIMEOUT_MS)
        for name, code, *rest in response.topic_errors:
            error = for_code(code)
            if code != 0 and error is not TopicAlreadyExistsError:
                raise error(f"creating Kafka topic {name!r} failed: {rest[0] if rest else error.__name__}")


async def replay(
    settings: Settings,
    *,
    code: str | None = None,
    from_offset: int = 0,
    partition: int | None = None,
    dry_run: bool = False,
    on_replayed: Callable[[Replayed], None] | None = None,
) -> ReplayResult:
    """Re-produce not-yet-replayed dead letters onto the raw topic, marking each one replayed."""
    result = ReplayResult()
    if not dry_run:
        await _ensure_marker_topic(settings)
    done = await replay_markers(settings)
    producer = None
    if not dry_run:
        producer = envelope_producer(settings)
        await producer.start()
    try:
        reader = dead_letters(settings, from_offset=from_offset, partition=partition, code=code)
        async with contextlib.aclosing(reader):
            async for dead in reader:
                if dead.marker_key in done:
                    result.already_replayed += 1
                    continue
                item = Replayed(dead, None, None)
                if producer is not None:
                    item = await _replay_one(settings, producer, dead)
                result.replayed.append(item)
                if on_replayed is not None:
                    on_replayed(item)
    finally:
        if producer is not None:
            await producer.stop()
    return result


async def _replay_one(settings: Settings, producer: AIOKafkaProducer, dead: StoredDeadLetter) -> Replayed:
    # Keyed like the gateway keys it (request id) when the envelope is readable.
    key = dead.envelope.request_id.encode() if dead.envelope is not None else None
    origin = f"{settings.dlq_topic}:{dead.partition}:{dead.offset}".encode()
    sent = await producer.send_and_wait(
        settings.topic, dead.letter.value, key=key, headers=[(REPLAYED_HEADER, origin)]
    )
    marker = {
        "raw_topic": settings.topic,
        "raw_partition": sent.partition,
        "raw_offset": sent.offset,
        "replayed_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    await producer.send_and_wait(marker_topic(settings), orjson.dumps(marker), key=dead.marker_key.encode())
    log.debug("dead_letter_replayed", dlq=dead.marker_key, partition=sent.partition, offset=sent.offset)
    return Replayed(dead, sent.partition, sent.offset)


# -- presentation -------------------------------------------------------------------


def format_time(timestamp_ms: int) -> str:
    return datetime.fromtimestamp(timestamp_ms / 1000, UTC).isoformat(timespec="seconds")


def format_row(dead: StoredDeadLetter, marker: dict[str, Any] | None = None) -> str:
    source = f"{dead.letter.source_partition}:{dead.letter.source_offset}"
    dialect = dead.envelope.dialect if dead.envelope else "-"
    project = dead.envelope.project if dead.envelope else "-"
    replayed = f"{marker['raw_partition']}:{marker['raw_offset']}" if marker else "-"
    reason = " ".join(dead.letter.reason.split())[:160]
    return (
        f"{dead.marker_key:<10} {format_time(dead.timestamp_ms):<25} {dead.letter.code:<20} {source:<12} "
        f"{dialect:<16} {project:<20} {replayed:<10} {reason}"
    )


def format_replayed(item: Replayed) -> str:
    where = f"{item.raw_partition}:{item.raw_offset}" if item.raw_partition is not None else "(dry run)"
    return f"{item.dead.marker_key:<10} {item.dead.letter.code:<20} -> raw {where}"


HEADER_ROW = (
    f"{'dlq p:off':<10} {'time (UTC)':<25} {'code':<20} {'source p:off':<12} "
    f"{'dialect':<16} {'project':<20} {'replayed':<10} reason"
)
