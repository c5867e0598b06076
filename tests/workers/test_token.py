"""The insert's dedup token (audit F4): offsets repeat when the raw topic is re-created."""

from __future__ import annotations

from aiokafka.structs import ConsumerRecord

from tests.workers.rows_helpers import envelope_for, record
from workers.steps import Decoded, TableBatch
from workers.steps.enrich import line_of

BODY = (
    b'{"logs":[{"project_id":"p","timestamp":"2024-05-31T15:30:45Z","level":"info",'
    b'"service":"s","message":"m"}]}'
)


def keyed(offset: int, key: bytes, partition: int = 3) -> ConsumerRecord:
    return ConsumerRecord("raw", partition, offset, 0, 0, key, BODY, None, len(key), len(BODY), [])


def token(records: list[ConsumerRecord]) -> str:
    batch = TableBatch("logs")
    envelope = envelope_for(BODY)
    for r in records:
        batch.add(line_of(Decoded(envelope, r)))
    return batch.token("raw")


def test_same_offsets_from_other_requests_get_another_token() -> None:
    old = [keyed(o, f"old-{o}".encode()) for o in range(10)]
    new = [keyed(o, f"new-{o}".encode()) for o in range(10)]
    assert token(old) != token(new)


def test_a_redelivery_builds_the_same_token_whatever_the_partition_interleaving() -> None:
    a = [keyed(o, f"a-{o}".encode(), 0) for o in range(5)]
    b = [keyed(o, f"b-{o}".encode(), 1) for o in range(5)]
    assert token(a + b) == token([x for pair in zip(b, a, strict=True) for x in pair])


def test_one_request_split_over_messages_does_not_cancel_out() -> None:
    same = [keyed(o, b"one-request") for o in range(2)]
    assert token(same) != token([keyed(o, b"other") for o in range(2)])


def test_an_unkeyed_record_still_tokens() -> None:
    assert token([record("raw", BODY)]).startswith("logs|raw|3:7-7|")
