"""Where the test session's Kafka and ClickHouse come from: local processes, or containers.

`MILLRACE_TEST_BACKEND=local` (the default) runs the project's own Kafka broker (Maven
jars) and the embedded engine (chDB). `MILLRACE_TEST_BACKEND=containers` runs Apache
Kafka and a ClickHouse server in Docker through testcontainers, so the same suite runs
against a real server DSN and a broker the project does not manage. Without a
reachable Docker engine that path is skipped, with the reason, and the local path runs
everything.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from functools import cache

import pytest

from ops.runner import wait_http_ok

ENV = "MILLRACE_TEST_BACKEND"
KAFKA_IMAGE = "apache/kafka:4.1.1"  # the image deploy/compose uses: Apache Kafka, KRaft
CLICKHOUSE_IMAGE = "clickhouse/clickhouse-server:25.8"
CLICKHOUSE_USER = "millrace"
CLICKHOUSE_PASSWORD = "millrace"  # a throwaway container, reachable only from this machine


def requested() -> str:
    value = os.environ.get(ENV, "local").strip().lower() or "local"
    if value not in ("local", "containers"):
        raise pytest.UsageError(f"{ENV}={value!r}: set it to local or containers")
    return value


@cache
def skip_reason() -> str | None:
    """Why the containers backend is not used this session (None: it is)."""
    if requested() != "containers":
        return f"{ENV} is not 'containers'"
    return docker_unreachable()


def header() -> str:
    reason = skip_reason()
    if reason is None:
        return f"millrace backend: containers ({KAFKA_IMAGE}, {CLICKHOUSE_IMAGE}) via testcontainers"
    if requested() == "containers":
        return f"millrace backend: local processes; containers requested but skipped: {reason}"
    return "millrace backend: local processes (Kafka broker from Maven jars, chDB)"


def docker_unreachable() -> str | None:
    """None when a Docker engine answers; otherwise why not, in one line."""
    try:
        import docker

        docker.from_env(timeout=5).ping()
    except Exception as exc:
        return f"no Docker engine reachable ({type(exc).__name__}: {str(exc)[:160]})"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def containers() -> Iterator[dict[str, str]]:
    """Start Kafka and ClickHouse; yield the settings (environment) that point Millrace at them."""
    from testcontainers.community.clickhouse import ClickHouseContainer
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.docker_client import DockerClient
    from testcontainers.core.waiting_utils import wait_for_logs

    host = DockerClient().host()
    # Kafka advertises the address clients must use, which must be known before it starts:
    # bind a chosen host port instead of a random mapped one.
    kafka_port = _free_port()
    kafka = (
        DockerContainer(KAFKA_IMAGE)
        .with_bind_ports(9092, kafka_port)
        .with_envs(
            CLUSTER_ID="MkU3OEVBNTcwNTJENDM2Qk",
            KAFKA_NODE_ID="1",
            KAFKA_PROCESS_ROLES="broker,controller",
            KAFKA_LISTENERS="PLAINTEXT://:9092,CONTROLLER://:9093",
            KAFKA_ADVERTISED_LISTENERS=f"PLAINTEXT://{host}:{kafka_port}",
            KAFKA_LISTENER_SECURITY_PROTOCOL_MAP="CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            KAFKA_CONTROLLER_LISTENER_NAMES="CONTROLLER",
            KAFKA_CONTROLLER_QUORUM_VOTERS="1@localhost:9093",
            KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR="1",
            KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR="1",
            KAFKA_TRANSACTION_STATE_LOG_MIN_ISR="1",
            KAFKA_SHARE_COORDINATOR_STATE_TOPIC_REPLICATION_FACTOR="1",
            KAFKA_SHARE_COORDINATOR_STATE_TOPIC_MIN_ISR="1",
            KAFKA_AUTO_CREATE_TOPICS_ENABLE="false",
            KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS="0",
        )
    )
    clickhouse = ClickHouseContainer(
        CLICKHOUSE_IMAGE, username=CLICKHOUSE_USER, password=CLICKHOUSE_PASSWORD, dbname="default"
    )
    with ExitStack() as stack:
        stack.enter_context(kafka)
        stack.enter_context(clickhouse)
        wait_for_logs(kafka, "Kafka Server started", timeout=120)
        ch_host = clickhouse.get_container_host_ip()
        ch_port = clickhouse.get_exposed_port(8123)
        wait_http_ok(f"http://{ch_host}:{ch_port}/ping", timeout_s=60)
        yield {
            "KAFKA_BOOTSTRAP_SERVERS": f"{host}:{kafka_port}",
            "MILLRACE_CLICKHOUSE_DSN": f"http://{CLICKHOUSE_USER}:{CLICKHOUSE_PASSWORD}@{ch_host}:{ch_port}",
        }
