"""Millrace's Kafka topics: created if absent (never altered), and a readiness wait.

Brokers run with auto.create.topics.enable=false (the local one does), so the topics
exist only because `ensure_topics` made them, with the partition counts and the
compaction that the pipeline relies on.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError, for_code
from aiokafka.helpers import create_ssl_context

from millrace.config import Settings

log = structlog.get_logger()

CLIENT_ID = "millrace-admin"
REQUEST_TIMEOUT_MS = 15_000
ENVELOPE_OVERHEAD = 64 * 1024  # room for an envelope's metadata on top of the largest body
# The alerts topic carries no records: its partitions are shares of the alert rules that the
# evaluators' Kafka group hands out, one owner each (alerts/owners.py).
ALERT_PARTITIONS = 8


# The local broker's SASL principals (ops.broker writes their passwords at its first start).
LOCAL_CLIENT_USER = "millrace"
LOCAL_MECHANISM = "SCRAM-SHA-512"


def local_credentials_file(settings: Settings) -> Path:
    """Passwords of the local broker's principals: JSON, 0600, under the private home."""
    return settings.home / "kafka" / "credentials.json"


def local_client_password(settings: Settings) -> str | None:
    """The client principal's password for the local broker, or None before its first start."""
    try:
        password = orjson.loads(local_credentials_file(settings).read_bytes()).get(LOCAL_CLIENT_USER)
    except (FileNotFoundError, orjson.JSONDecodeError, AttributeError):
        return None
    return password if isinstance(password, str) and password else None


def client_options(settings: Settings) -> dict[str, Any]:
    """Where and how every Kafka client (producer, consumer, admin) connects: the one place
    that turns the KAFKA_* security settings into aiokafka arguments.

    The local broker (no KAFKA_BOOTSTRAP_SERVERS) requires SASL/SCRAM: its credentials are
    read from the home here, at each client's creation, since the broker writes them at its
    first start, after the settings were read."""
    options: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap,
        "security_protocol": settings.kafka_security_protocol,
    }
    if settings.local_broker and (password := local_client_password(settings)) is not None:
        options["security_protocol"] = "SASL_PLAINTEXT"  # loopback only
        options["sasl_mechanism"] = LOCAL_MECHANISM
        options["sasl_plain_username"] = LOCAL_CLIENT_USER
        options["sasl_plain_password"] = password
        return options
    if settings.kafka_security_protocol.startswith("SASL_"):
        options["sasl_mechanism"] = settings.kafka_sasl_mechanism
        options["sasl_plain_username"] = settings.kafka_sasl_username
        options["sasl_plain_password"] = settings.kafka_sasl_password
    if settings.kafka_security_protocol.endswith("SSL"):
        options["ssl_context"] = create_ssl_context(
            cafile=settings.kafka_ssl_cafile or None,
            certfile=settings.kafka_ssl_certfile or None,
            keyfile=settings.kafka_ssl_keyfile or None,
        )
    return options


def envelope_producer(settings: Settings, **options: Any) -> AIOKafkaProducer:
    """A producer for whole envelopes (gateway, dead letters, replay): acknowledged by every
    in-sync replica, idempotent, and large enough for the biggest body the gateway accepts
    (without the size, one envelope over 1 MB would fail to send)."""
    return AIOKafkaProducer(
        **client_options(settings),
        acks="all",
        enable_idempotence=True,
        max_request_size=settings.max_decompressed_bytes + ENVELOPE_OVERHEAD,
        **options,
    )


def wanted_topics(settings: Settings) -> list[NewTopic]:
    rf = settings.replication_factor
    # The local brokers' topics say min.insync.replicas themselves (2 of 3: an acks=all write is
    # on two brokers before it is acknowledged); on a cluster of the operator's, its default rules.
    durable = {"min.insync.replicas": str(local_min_insync(settings))} if settings.local_broker else {}
    # One envelope carries a whole request body: let the largest allowed one through
    # (brokers default to about 1 MB per record batch).
    big = {"max.message.bytes": str(settings.max_decompressed_bytes + ENVELOPE_OVERHEAD), **durable}
    return [
        NewTopic(settings.topic, settings.partitions, rf, topic_configs=big),
        NewTopic(settings.dlq_topic, settings.partitions, rf, topic_configs=big),
        # One partition: every gateway reads the whole key set from the start, in order,
        # and compaction keeps only the latest record per key id.
        NewTopic(settings.keys_topic, 1, rf, topic_configs={"cleanup.policy": "compact", **durable}),
        NewTopic(settings.alerts_topic, ALERT_PARTITIONS, rf, topic_configs=durable),
    ]


def local_min_insync(settings: Settings) -> int:
    """min.insync.replicas on the local brokers: 2 of 3 (one may fail without losing an
    acknowledged write or refusing new ones), 1 of 1."""
    return 2 if settings.kafka_brokers >= 3 else 1


@contextlib.asynccontextmanager
async def admin_client(settings: Settings) -> AsyncIterator[Any]:
    admin = AIOKafkaAdminClient(
        **client_options(settings), client_id=CLIENT_ID, request_timeout_ms=REQUEST_TIMEOUT_MS
    )
    try:
        await admin.start()
        yield admin
    finally:
        await admin.close()


async def wait_for_kafka(settings: Settings, timeout_s: float, node_id: int | None = None) -> None:
    """Retry until the cluster at `settings.bootstrap` answers a metadata request with at least one
    broker (with `node_id`: with that broker among them, i.e. registered and unfenced)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    last: BaseException | None = None
    while True:
        try:
            async with admin_client(settings) as admin:
                cluster = await admin.describe_cluster()
            brokers = {b["node_id"] for b in cluster.get("brokers") or ()}
            if brokers and (node_id is None or node_id in brokers):
                return
            missing = f"broker {node_id} is" if brokers else "no broker is"
            last = RuntimeError(f"{missing} registered yet")
        except (TimeoutError, KafkaError, OSError) as exc:
            last = exc
        if loop.time() >= deadline:
            raise TimeoutError(
                f"Kafka at {settings.bootstrap} served no metadata within {timeout_s:.0f}s: {last!r}"
            )
        await asyncio.sleep(0.5)


async def ensure_topics(settings: Settings) -> None:
    """Create the raw, dead-letter, keys and alerts topics if absent; return once all have leaders."""
    wanted = wanted_topics(settings)
    async with admin_client(settings) as admin:
        existing = await _partitions(admin, [t.name for t in wanted])
        missing = [t for t in wanted if t.name not in existing]
        for t in wanted:
            have = existing.get(t.name)
            if have is not None and have != t.num_partitions:
                # Kafka cannot shrink a topic, and growing one moves keys between
                # partitions: changing it is an operator's decision, not start-up's.
                log.warning("kafka_topic_partitions_differ", topic=t.name, has=have, wanted=t.num_partitions)
        if missing:
            response = await admin.create_topics(missing, timeout_ms=REQUEST_TIMEOUT_MS)
            for name, code, *rest in response.topic_errors:
                error = for_code(code)
                if code == 0:
                    log.info("kafka_topic_created", topic=name)
                elif error is TopicAlreadyExistsError:
                    pass  # another process created it between our look and our request
                else:
                    message = rest[0] if rest and rest[0] else error.__name__
                    raise error(f"creating Kafka topic {name!r} failed: {message}")
        await _wait_for_leaders(admin, [t.name for t in wanted])


async def describe(settings: Settings) -> dict[str, int]:
    """Partition count of each of Millrace's topics that exists, by name."""
    names = [t.name for t in wanted_topics(settings)]
    async with admin_client(settings) as admin:
        return await _partitions(admin, names)


async def _partitions(admin: Any, names: list[str]) -> dict[str, int]:
    topics: list[dict[str, Any]] = await admin.describe_topics(names)
    # An absent topic comes back with error UNKNOWN_TOPIC_OR_PARTITION (3), not missing.
    return {t["topic"]: len(t["partitions"]) for t in topics if t["error_code"] == 0}


async def _wait_for_leaders(admin: Any, names: list[str], timeout_s: float = 15) -> None:
    """Creation returns once the controller committed it; producers need a leader per partition."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        topics: list[dict[str, Any]] = await admin.describe_topics(names)
        pending = [
            t["topic"]
            for t in topics
            if t["error_code"] != 0 or not t["partitions"] or any(p["leader"] < 0 for p in t["partitions"])
        ]
        if not pending:
            return
        if loop.time() >= deadline:
            raise TimeoutError(f"Kafka topics {pending} have no leader after {timeout_s:.0f}s")
        await asyncio.sleep(0.1)
