"""Each step of the worker's chain alone, with a fake next step; then one behaviour suite
that every step must pass (what it takes reaches the next step with its offsets; poll,
join and close reach the next step; a rejecting next step loses nothing)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from aiokafka import TopicPartition
from clickhouse_connect.driver.client import Client

from schemas.deadletter import DeadLetter
from schemas.envelope import encode
from tests.workers.rows_helpers import envelope_for, record
from workers.flood import FloodGuard, HaltOnFlood
from workers.steps import (
    Batch,
    BatchLines,
    Commit,
    Decode,
    Decoded,
    Enrich,
    GiveUp,
    Insert,
    Line,
    Message,
    MessageRejected,
    SendDeadLetters,
    SkipStored,
    TableBatch,
)
from workers.watermarks import Watermarks

BODY = (
    b'{"logs":[{"project_id":"p","timestamp":"2024-05-31T15:30:45Z","level":"info",'
    b'"service":"s","message":"m"}]}'
)
TP = TopicPartition("raw", 3)


@dataclass
class Next:
    """A next step that records what it is handed; `reject` makes it refuse."""

    reject: bool = False
    got: list[Message[Any]] = field(default_factory=list)
    polls: int = 0
    joins: int = 0
    closed: bool = False

    def submit(self, message: Message[Any]) -> None:
        if self.reject:
            raise MessageRejected
        self.got.append(message)

    async def poll(self) -> None:
        self.polls += 1

    async def join(self) -> None:
        self.joins += 1

    def close(self) -> None:
        self.closed = True


@dataclass
class Clock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


def decoded(offset: int = 7) -> Decoded:
    envelope = envelope_for(BODY)
    return Decoded(envelope, record("raw", encode(envelope), offset, key=b"req-%d" % offset))


def line(offset: int = 7, rows: int = 1) -> Line:
    return Line("logs", (b"{}\n",), rows, 3, offset, b"req-%d" % offset, b"value")


def batch_of(*lines: Line, dead: int = 0) -> Batch:
    batch = Batch()
    for item in lines:
        batch.tables.setdefault(item.table, TableBatch(item.table)).add(item)
        batch.rows += item.rows
        batch.messages += 1
    batch.dead.extend(DeadLetter(b"x", "bad", "bad_envelope", "raw", 3, i) for i in range(dead))
    batch.messages += dead
    return batch


class Marks(Watermarks):
    def __init__(self, stored: set[tuple[str, int, int]]) -> None:
        self.above, self.marks, self.loaded = stored, {}, True


@dataclass
class Producer:
    sent: list[tuple[str, bytes]] = field(default_factory=list)

    async def send_and_wait(self, topic: str, value: bytes, headers: Any = None) -> None:
        self.sent.append((topic, value))


@dataclass
class Consumer:
    commits: list[dict[TopicPartition, int]] = field(default_factory=list)

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.commits.append(dict(offsets))


@dataclass
class Store:
    """The insert boundary: fails `fail` times, records every token it was given."""

    fail: int = 0
    tokens: list[str] = field(default_factory=list)

    def __call__(self, client: Client, table: TableBatch, token: str) -> None:
        self.tokens.append(token)
        if self.fail > 0:
            self.fail -= 1
            raise ConnectionError("injected")


async def settle(step: Any, until: Callable[[], bool], clock: Clock | None = None) -> None:
    """Poll until `until()` (each poll lets a threaded insert finish); moves a fake clock on."""
    deadline = time.monotonic() + 10
    while not until():
        assert time.monotonic() < deadline, "the step never got there"
        if clock is not None:
            clock.now += 60
        await step.poll()
        await asyncio.sleep(0.01)


# -- decode -------------------------------------------------------------------------------------


def test_decode_turns_unreadable_bytes_into_a_dead_letter_with_its_position() -> None:
    out = Next()
    Decode(out).submit(Message(record("raw", b"not an envelope", 11), {TP: 12}))
    (message,) = out.got
    dead = message.payload
    assert isinstance(dead, DeadLetter)
    assert (dead.code, dead.source_partition, dead.source_offset, message.committable) == (
        "bad_envelope",
        3,
        11,
        {TP: 12},
    )


def test_decode_parses_a_version_1_envelope_into_rows() -> None:
    out = Next()
    Decode(out).submit(Message(record("raw", encode(envelope_for(BODY, raw=True)))))
    item = out.got[0].payload
    assert isinstance(item, Decoded) and item.envelope.rows == 1
    assert orjson.loads(item.envelope.body)[0]["message"] == "m"


def test_decode_inflates_the_rows_of_a_version_3_envelope_and_dead_letters_a_broken_frame() -> None:
    out = Next()
    good = encode(envelope_for(BODY))
    meta_end = 7 + int.from_bytes(good[3:7], "big")
    Decode(out).submit(Message(record("raw", good, 11), {TP: 12}))
    Decode(out).submit(Message(record("raw", good[:meta_end] + b"\x28\xb5\x2f\xfd broken", 12), {TP: 13}))
    item, dead = (m.payload for m in out.got)
    assert isinstance(item, Decoded) and orjson.loads(item.envelope.body)[0]["message"] == "m"
    assert isinstance(dead, DeadLetter) and (dead.code, dead.source_offset) == ("bad_envelope", 12)
    assert "zstd" in dead.reason


# -- skip stored --------------------------------------------------------------------------------


def test_skip_stored_passes_only_the_offset_of_a_stored_message() -> None:
    out, stats = Next(), {"skipped_stored": 0}
    step = SkipStored(out, Marks({("logs", 3, 7)}), stats)
    step.submit(Message(decoded(7), {TP: 8}))
    step.submit(Message(decoded(8), {TP: 9}))
    assert [m.payload is None for m in out.got] == [True, False]
    assert [m.committable for m in out.got] == [{TP: 8}, {TP: 9}]
    assert stats["skipped_stored"] == 1


# -- enrich -------------------------------------------------------------------------------------


def test_enrich_writes_the_request_facts_beside_the_rows_as_they_came() -> None:
    out = Next()
    item = decoded(7)
    Enrich(out).submit(Message(item, {TP: 8}))
    result = out.got[0].payload
    assert isinstance(result, Line)
    doc = orjson.loads(b"".join(result.pieces))
    assert doc["r"] == orjson.loads(item.envelope.body)
    assert (doc["f"]["project"], doc["f"]["kafka_offset"], doc["f"]["ua_browser"]) == (
        "rows-test",
        7,
        "Chrome 125",
    )
    assert (result.rows, result.offset, result.key) == (1, 7, b"req-7")


# -- batch --------------------------------------------------------------------------------------


async def test_batch_flushes_at_its_row_count_before_appending_more() -> None:
    out = Next()
    step = BatchLines(out, rows=2, age_s=60, clock=Clock())
    for offset in range(5):
        step.submit(Message(line(offset), {TP: offset + 1}))
    assert [m.payload.rows for m in out.got] == [2, 2]
    assert [m.committable for m in out.got] == [{TP: 2}, {TP: 4}]


async def test_batch_flushes_when_old_enough() -> None:
    out, clock = Next(), Clock()
    step = BatchLines(out, rows=100, age_s=2, clock=clock)
    step.submit(Message(line(0), {TP: 1}))
    await step.poll()
    assert out.got == []
    clock.now += 2
    await step.poll()
    assert [m.committable for m in out.got] == [{TP: 1}]


async def test_batch_held_by_a_rejecting_next_step_rejects_new_lines_and_loses_none() -> None:
    out, clock = Next(reject=True), Clock()
    step = BatchLines(out, rows=1, age_s=60, clock=clock)
    step.submit(Message(line(0), {TP: 1}))
    with pytest.raises(MessageRejected):
        step.submit(Message(line(1), {TP: 2}))
    out.reject = False
    await step.poll()
    step.submit(Message(line(1), {TP: 2}))
    await step.join()
    assert [m.committable for m in out.got] == [{TP: 1}, {TP: 2}]


async def test_batch_keeps_dead_letters_and_skipped_offsets_with_its_rows() -> None:
    out = Next()
    step = BatchLines(out, rows=100, age_s=60, clock=Clock())
    step.submit(Message(line(0), {TP: 1}))
    step.submit(Message(DeadLetter(b"x", "r", "c", "raw", 3, 1), {TP: 2}))
    step.submit(Message(None, {TP: 3}))
    await step.join()
    (message,) = out.got
    assert (message.payload.rows, len(message.payload.dead), message.payload.messages) == (1, 1, 3)
    assert message.committable == {TP: 3}


# -- halt on flood ------------------------------------------------------------------------------


def test_a_flood_halts_and_drops_the_batch_counting_a_re_offered_batch_once() -> None:
    out, halted = Next(), list[bool]()
    guard = FloodGuard(threshold=2, ratio=0.5, window_s=60)
    step = HaltOnFlood(out, guard, lambda: halted.append(True))
    ok = Message(batch_of(line(0)), {TP: 1})
    step.submit(ok)
    step.submit(ok)  # the same batch again (after a rejection): not counted twice
    assert len(guard._seen) == 1 and len(out.got) == 2
    step.submit(Message(batch_of(dead=3), {TP: 5}))
    step.submit(Message(batch_of(line(9)), {TP: 10}))
    assert len(out.got) == 2 and len(halted) == 1 and guard.tripped is not None


# -- insert -------------------------------------------------------------------------------------


async def test_insert_retries_the_same_token_with_growing_delays_and_rejects_meanwhile() -> None:
    out, clock, store = Next(), Clock(), Store(fail=3)
    step = Insert(out, None, "raw", insert=store, clock=clock)  # type: ignore[arg-type]
    step.submit(Message(batch_of(line(0), line(1)), {TP: 2}))
    with pytest.raises(MessageRejected):
        step.submit(Message(batch_of(line(2)), {TP: 3}))
    delays = []
    while not out.got:
        await asyncio.sleep(0.01)
        before = step._retry_at
        await step.poll()
        if step._retry_at is not None and step._retry_at != before:
            delays.append(step._retry_at - clock.now)
            clock.now = step._retry_at
    assert len(set(store.tokens)) == 1 and len(store.tokens) == 4
    assert [round(d, 6) for d in delays] == [0.2, 0.4, 0.8]
    assert [m.committable for m in out.got] == [{TP: 2}]


async def test_insert_join_while_stopping_gives_up_after_one_failure() -> None:
    step = Insert(Next(), None, "raw", insert=Store(fail=99), clock=Clock())  # type: ignore[arg-type]
    step.stopping = True
    step.submit(Message(batch_of(line(0)), {TP: 1}))
    with pytest.raises(GiveUp):
        await step.join()
    step.close()


# -- send dead letters, commit ------------------------------------------------------------------


async def test_dead_letters_are_written_before_the_batch_goes_on() -> None:
    out, producer = Next(), Producer()
    step = SendDeadLetters(out, producer, "dlq", {"dead_letters": 0})
    step.submit(Message(batch_of(line(0), dead=2), {TP: 4}))
    assert out.got == []
    await step.poll()
    assert len(producer.sent) == 2 and [m.committable for m in out.got] == [{TP: 4}]


async def test_commit_commits_each_batchs_offsets_and_counts_it() -> None:
    consumer, stats = Consumer(), {"rows": 0, "batches": 0}
    step = Commit(consumer, stats)
    step.submit(Message(batch_of(line(0), line(1)), {TP: 2}))
    await step.join()
    assert consumer.commits == [{TP: 2}] and stats == {"rows": 2, "batches": 1}


# -- one behaviour suite over every step that has a next one ------------------------------------

Factory = Callable[[Next], Any]
CASES: dict[str, tuple[Factory, Callable[[], Message[Any]]]] = {
    "decode": (Decode, lambda: Message(record("raw", encode(envelope_for(BODY)), 7), {TP: 8})),
    "skip_stored": (
        lambda n: SkipStored(n, Marks(set()), {"skipped_stored": 0}),
        lambda: Message(decoded(7), {TP: 8}),
    ),
    "enrich": (Enrich, lambda: Message(decoded(7), {TP: 8})),
    "batch": (lambda n: BatchLines(n, rows=1, age_s=0, clock=Clock()), lambda: Message(line(7), {TP: 8})),
    "halt_on_flood": (
        lambda n: HaltOnFlood(n, FloodGuard(100, 0.5, 60), lambda: None),
        lambda: Message(batch_of(line(7)), {TP: 8}),
    ),
    "insert": (
        lambda n: Insert(n, None, "raw", insert=Store(), clock=Clock()),  # type: ignore[arg-type]
        lambda: Message(batch_of(line(7)), {TP: 8}),
    ),
    "send_dead_letters": (
        lambda n: SendDeadLetters(n, Producer(), "dlq", {"dead_letters": 0}),
        lambda: Message(batch_of(line(7), dead=1), {TP: 8}),
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
async def test_what_a_step_takes_reaches_the_next_with_its_offsets_after_join(name: str) -> None:
    factory, sample = CASES[name]
    out = Next()
    step = factory(out)
    step.submit(sample())
    await step.join()
    assert [m.committable for m in out.got] == [{TP: 8}]
    assert out.joins >= 1


@pytest.mark.parametrize("name", sorted(CASES))
async def test_poll_and_close_reach_the_next_step(name: str) -> None:
    factory, _ = CASES[name]
    out = Next()
    step = factory(out)
    await step.poll()
    step.close()
    assert out.polls >= 1 and out.closed


@pytest.mark.parametrize("name", sorted(CASES))
async def test_a_rejecting_next_step_loses_nothing(name: str) -> None:
    """The step either refuses the message itself or holds it until the next step takes it."""
    factory, sample = CASES[name]
    out = Next(reject=True)
    step = factory(out)
    try:
        step.submit(sample())
        refused = False
    except MessageRejected:
        refused = True
    for _ in range(3):
        with contextlib.suppress(MessageRejected):
            await step.poll()
        await asyncio.sleep(0.01)
    out.reject = False
    if refused:
        step.submit(sample())
    await settle(step, lambda: bool(out.got))
    await step.join()
    assert [m.committable for m in out.got] == [{TP: 8}]
