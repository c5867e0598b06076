"""Prometheus metrics: real traffic through the stack moves the right counters by the right amounts.

The gateway serves `/metrics` on its port, the worker on its internal port. In the test
process both run in one interpreter and so share one registry: each endpoint shows
both sides, which lets one test follow a request from HTTP to the stored row.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterable

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from prometheus_client.parser import text_string_to_metric_families

from millrace import metrics
from millrace.config import Settings
from millrace.kafka.topics import client_options
from tests import bodies
from tests.conftest import Stack
from tests.test_deploy import COUNTERS_AND_GAUGES, HISTOGRAMS

pytestmark = pytest.mark.integration

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> tuple[Samples, dict[str, str]]:
    """(every sample by name and labels, every family's type by its exposed metric name)."""
    samples: Samples = {}
    families: dict[str, str] = {}
    for family in text_string_to_metric_families(text):
        exposed = family.name + "_total" if family.type == "counter" else family.name
        families[exposed] = family.type
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return samples, families


async def scrape(stack: Stack, url: str | None = None) -> Samples:
    async with stack.session.get((url or stack.url) + "/metrics") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return parse((await resp.read()).decode())[0]


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


async def drained(settings: Settings, timeout_s: float = 60) -> None:
    """Wait until the worker group committed every message of the raw topic (nothing in flight)."""
    admin = AIOKafkaAdminClient(**client_options(settings))
    ends = AIOKafkaConsumer(**client_options(settings))
    await admin.start()
    await ends.start()
    try:
        partitions = [TopicPartition(settings.topic, p) for p in range(settings.partitions)]
        deadline = time.monotonic() + timeout_s
        while True:
            end = await ends.end_offsets(partitions)
            offsets = await admin.list_consumer_group_offsets(settings.consumer_group, partitions=partitions)
            # -1 (or absent): the group never committed there.
            committed = {tp: max(0, offsets[tp].offset) if tp in offsets else 0 for tp in partitions}
            behind = {tp.partition: end[tp] - committed[tp] for tp in partitions if end[tp] > committed[tp]}
            if not behind:
                return
            assert time.monotonic() < deadline, f"the group is still behind: {behind}"
            await asyncio.sleep(0.1)
    finally:
        await ends.stop()
        await admin.close()


def drain_body(marker: str, n: int) -> bytes:
    return bodies.drain_body((f"{marker} #{i}" for i in range(n)), project_id="org-xyz", service="metrics")


async def post(stack: Stack, path: str, body: bytes, headers: dict[str, str]) -> int:
    async with stack.session.post(stack.url + path, data=body, headers=headers) as resp:
        await resp.read()
        return resp.status


async def test_traffic_moves_the_counters_by_the_right_amounts(stack: Stack) -> None:
    tenant = await stack.tenant(f"metrics-{uuid.uuid4().hex[:8]}")
    await drained(stack.settings)
    before = await scrape(stack)

    astralog = {"Authorization": tenant.key, "Content-Type": "application/json"}
    bodies = [drain_body(f"m{i}", n) for i, n in enumerate((1, 2, 3))]
    for body in bodies:
        assert await post(stack, "/v1/drain", body, astralog) == 200
    assert await post(stack, "/v1/drain", b"{not json", astralog) == 400
    assert await post(stack, "/v1/drain", bodies[0], {**astralog, "Authorization": "mr_nope"}) == 401
    goodlogs = {"Authorization": f"Bearer {tenant.key}", "Content-Type": "application/json"}
    mixed = orjson.dumps(
        {"batch": [{"severity": "info", "message": "kept"}, {"severity": "loud", "message": "refused"}]}
    )
    assert await post(stack, "/v1/logs", mixed, goodlogs) == 202
    # A message no gateway would write: the worker must dead-letter it and keep going.
    producer = AIOKafkaProducer(**client_options(stack.settings))
    await producer.start()
    try:
        await producer.send_and_wait(stack.settings.topic, b"not an envelope", key=b"metrics-test")
    finally:
        await producer.stop()

    assert await stack.wait_rows(tenant.project, 7) == 7
    await drained(stack.settings)
    await asyncio.sleep(metrics.LAG_INTERVAL_S + 0.3)  # one more lag update after the drain
    after = await scrape(stack)

    # Gateway side: exact, no other traffic ran meanwhile.
    assert delta(before, after, "millrace_requests_total", dialect="astralog", status="200") == 3
    assert delta(before, after, "millrace_requests_total", dialect="astralog", status="400") == 1
    assert delta(before, after, "millrace_requests_total", dialect="astralog", status="401") == 1
    assert delta(before, after, "millrace_requests_total", dialect="goodlogs_logs", status="202") == 1
    assert delta(before, after, "millrace_logs_accepted_total", dialect="astralog") == 6
    assert delta(before, after, "millrace_logs_accepted_total", dialect="goodlogs_logs") == 1
    rejected = "millrace_logs_rejected_total"
    assert delta(before, after, rejected, dialect="goodlogs_logs", reason="invalid_item") == 1
    assert delta(before, after, rejected, dialect="astralog", reason="invalid") == 1
    assert delta(before, after, rejected, dialect="astralog", reason="unauthorized") == 1
    assert delta(before, after, "millrace_request_bytes_total", dialect="astralog") == sum(map(len, bodies))
    assert delta(before, after, "millrace_request_bytes_total", dialect="goodlogs_logs") == len(mixed)
    assert delta(before, after, "millrace_produce_seconds_count") == 4
    assert delta(before, after, "millrace_produce_seconds_sum") > 0
    assert delta(before, after, "millrace_kafka_errors_total", kind="produce_timeout") == 0

    # Worker side: everything sent since `before` is stored and committed, so also exact.
    assert delta(before, after, "millrace_rows_inserted_total", table="logs") == 7
    assert delta(before, after, "millrace_batch_rows_sum") == 7
    assert delta(before, after, "millrace_batch_rows_count") >= 1
    assert delta(before, after, "millrace_insert_seconds_count") >= 1
    assert delta(before, after, "millrace_insert_failures_total") == 0
    assert delta(before, after, "millrace_dead_letters_total", code="bad_envelope") == 1
    lag = {dict(labels)["partition"]: v for (n, labels), v in after.items() if n == "millrace_consumer_lag"}
    # The stack's worker holds every partition and has read all of them. (Other consumers in
    # this process, e.g. tests/test_scale.py's, may report more partitions of their topics.)
    ours = {str(p) for p in range(stack.settings.partitions)}
    assert {p: v for p, v in lag.items() if p in ours} == dict.fromkeys(ours, 0.0), lag


async def test_worker_port_serves_the_same_registry(stack: Stack) -> None:
    gateway = await scrape(stack)
    worker = await scrape(stack, stack.settings.worker_query_url)
    names = {name for name, _ in gateway}
    assert {name for name, _ in worker} == names
    assert "process_cpu_seconds_total" in names  # process metrics come along for free


def exposed_families() -> dict[str, str]:
    return {n: t for n, t in parse(metrics.exposition().decode())[1].items() if n.startswith("millrace_")}


def label_names(samples: Iterable[tuple[str, frozenset[tuple[str, str]]]], family: str) -> set[str]:
    names: set[str] = set()
    for name, labels in samples:
        if name == family or name in (family + s for s in ("_bucket", "_sum", "_count")):
            names |= {k for k, _ in labels if k != "le"}
    return names


async def test_dashboard_metrics_are_exactly_the_exposed_ones(stack: Stack) -> None:
    families = exposed_families()
    assert set(families) == set(COUNTERS_AND_GAUGES) | set(HISTOGRAMS)
    assert {n for n, t in families.items() if t == "histogram"} == set(HISTOGRAMS)
    # Labels as the dashboard expects them (from samples: the previous test made every family speak).
    samples = await scrape(stack)
    for family, labels in {**COUNTERS_AND_GAUGES, **HISTOGRAMS}.items():
        seen = label_names(samples, family)
        assert seen <= labels, f"{family}: unexpected labels {seen - labels}"
        if any(name.startswith(family) for name, _ in samples):
            assert seen == labels or not labels, f"{family}: labels {seen} != {labels}"
