"""Golden files: every seed example request -> the response -> the rows it stored.

Each seed document's ingest examples are sent verbatim (only the key swapped) through the
real gateway, Kafka and worker into the real engine; the status, the response body and every
stored column are compared with `tests/golden/<name>.json`. A change anywhere on the path
(routing, a parser, enrichment, the insert) that alters what a client sees or what is stored
shows up here as a diff of one file.

Values that differ on every run are replaced by a marker before comparing: ingest-time
timestamps (`<received>`), the Kafka position and ingest id, server clocks in responses.
After an intended change, regenerate with `MILLRACE_UPDATE_GOLDEN=1 pytest tests/test_golden.py`
and review the diff like code.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from schemas.record import EVENTS_TABLE, LOGS_TABLE, TABLE_COLUMNS
from tests.conftest import Stack
from tests.seeds import CurlExample, curl_examples, http_examples, json_documents, section, with_key

pytestmark = pytest.mark.integration

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("MILLRACE_UPDATE_GOLDEN") == "1"
# Columns that change from run to run whatever the input: where the message sat in Kafka.
VOLATILE = frozenset({"observed_timestamp", "ingest_id", "kafka_topic", "kafka_partition", "kafka_offset"})


def _dynatrace_model() -> CurlExample:
    """Dynatrace's doc shows its request model as JSON, not as a curl: sent as its client would."""
    return CurlExample(
        "POST",
        "/api/v2/logs/ingest",
        {"Authorization": "Api-Token dt0c01.sample", "Content-Type": "application/json; charset=utf-8"},
        orjson.dumps(json_documents("002")[0]),
    )


def _timberlogs_raw() -> CurlExample:
    """The SDK's `ingestRaw` curl, with the document's CSV body as its `$body`."""
    (raw,) = [e for e in curl_examples("004") if e.body == b"$body"]
    return CurlExample(raw.method, raw.path, raw.headers, section("004", "Body (CSV)", "First row").encode())


def examples() -> dict[str, CurlExample]:
    found: dict[str, CurlExample] = {}
    for i, ex in enumerate(http_examples("000")):
        found[f"tg2g-{i}"] = ex
    for i, ex in enumerate(curl_examples("001")):
        found[f"astralog-{i}"] = ex
    found["dynatrace-model"] = _dynatrace_model()
    ingest = [e for e in curl_examples("003") if e.path in ("/v1/events", "/v1/logs")]
    for i, ex in enumerate(ingest):
        found[f"goodlogs-{i}{ex.path.replace('/', '-')}"] = ex
    for i, ex in enumerate(e for e in curl_examples("004") if e.body != b"$body"):
        found[f"timberlogs-{i}"] = ex
    found["timberlogs-raw-csv"] = _timberlogs_raw()
    return found


EXAMPLES = examples()


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in sorted(value.items())}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def stored(stack: Stack, project: str, table: str) -> list[dict[str, Any]]:
    columns = [c for c in TABLE_COLUMNS[table] if c not in VOLATILE]
    # Whether the record had no time of its own (the worker then stores the receive time).
    at_receive = "toUnixTimestamp64Nano(timestamp) = toUnixTimestamp64Nano(observed_timestamp)"
    # Times as text: all nine digits of DateTime64(9), which a Python datetime would cut to six.
    select = ", ".join([at_receive, *(f"toString({c})" if c == "timestamp" else c for c in columns)])
    found = []
    for row in stack.query(f"SELECT {select} FROM {table} WHERE project = {{p:String}}", p=project):
        record = dict(zip(["at_receive", *columns], row, strict=True))
        if record.pop("at_receive"):
            record["timestamp"] = "<received>"
        record["project"] = "<project>"
        found.append(_plain(record))
    return sorted(found, key=lambda r: orjson.dumps(r, option=orjson.OPT_SORT_KEYS))


def response_body(raw: bytes) -> Any:
    if not raw:
        return None
    body = orjson.loads(raw)
    if isinstance(body, dict) and isinstance(body.get("timestamp"), int):
        body["timestamp"] = "<server clock>"  # Timberlogs answers with its own clock
    return body


async def wait_any_rows(stack: Stack, project: str) -> None:
    for table in (LOGS_TABLE, EVENTS_TABLE):
        if await stack.wait_rows(project, 1, table=table, timeout_s=10 if table == LOGS_TABLE else 2):
            await asyncio.sleep(1)  # let the rest of the request's rows land too
            return


def test_every_seed_example_has_a_golden_file() -> None:
    """No golden file without an example, and (unless regenerating) no example without its file."""
    on_disk = {p.stem for p in GOLDEN.glob("*.json")}
    assert on_disk <= set(EXAMPLES)
    if not UPDATE:
        assert set(EXAMPLES) == on_disk


@pytest.mark.parametrize("name", sorted(EXAMPLES))
async def test_seed_example_matches_its_golden_file(stack: Stack, name: str) -> None:
    tenant = await stack.tenant(f"golden-{uuid.uuid4().hex[:8]}")
    example = with_key(EXAMPLES[name], tenant.key)
    async with stack.session.request(
        example.method, stack.url + example.path, data=example.body, headers=example.headers
    ) as resp:
        answer = {"status": resp.status, "body": response_body(await resp.read())}

    expected_rows = orjson.loads((GOLDEN / f"{name}.json").read_bytes()) if not UPDATE else None
    if expected_rows is None:  # regenerating: every example stores something; wait for it to settle
        await wait_any_rows(stack, tenant.project)
    else:
        for table in (LOGS_TABLE, EVENTS_TABLE):
            await stack.wait_rows(tenant.project, len(expected_rows["stored"][table]), table=table)
    actual = {
        "request": {"method": example.method, "path": example.path},
        "response": answer,
        "stored": {table: stored(stack, tenant.project, table) for table in (LOGS_TABLE, EVENTS_TABLE)},
    }
    path = GOLDEN / f"{name}.json"
    if UPDATE:
        GOLDEN.mkdir(exist_ok=True)
        path.write_bytes(orjson.dumps(actual, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n")
    assert orjson.loads(path.read_bytes()) == orjson.loads(orjson.dumps(actual))
