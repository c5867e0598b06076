"""Audit F2: the local broker lets in only Millrace's own principals. Without credentials, with
a wrong password, or on the controller's port a client is refused (before, any local process
could read every tenant's envelopes and write key records); the client principal `millrace`
works on topics and groups but holds no rights on the cluster itself; its password sits in a
0600 file in the private home, where every Millrace client finds it."""

from __future__ import annotations

import asyncio
import json
import stat
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaConnectionError

from millrace.config import Settings
from millrace.kafka.topics import admin_client, client_options, local_credentials_file

pytestmark = pytest.mark.integration


@pytest.fixture
def local(kafka: Settings) -> Settings:
    if not kafka.local_broker:
        pytest.skip("the containers backend brings its own broker")
    return kafka


async def _refused(client: Any) -> None:
    with pytest.raises(KafkaConnectionError):
        await asyncio.wait_for(client.start(), 30)
    await client.stop()


async def test_a_client_without_credentials_is_refused(local: Settings) -> None:
    await _refused(AIOKafkaConsumer(local.topic, bootstrap_servers=local.bootstrap, request_timeout_ms=5000))
    await _refused(AIOKafkaProducer(bootstrap_servers=local.bootstrap, request_timeout_ms=5000))


async def test_a_wrong_password_is_refused(local: Settings) -> None:
    options = client_options(local) | {"sasl_plain_password": "guess"}
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    await _refused(AIOKafkaConsumer(local.keys_topic, **options, request_timeout_ms=5000))


async def test_the_controller_port_refuses_clients(local: Settings) -> None:
    controller = f"localhost:{local.kafka_port + 1}"
    await _refused(AIOKafkaProducer(bootstrap_servers=controller, request_timeout_ms=5000))


async def test_the_client_principal_uses_topics_but_not_the_cluster(local: Settings) -> None:
    async with admin_client(local) as admin:
        described = await admin.describe_topics([local.keys_topic])
        assert described[0]["error_code"] == 0
        (broker_configs,) = await admin.describe_configs([ConfigResource(ConfigResourceType.BROKER, "1")])
    # 31: CLUSTER_AUTHORIZATION_FAILED. The ACLs give `millrace` topics, groups and
    # transactional ids; only the broker's own principal is a super user.
    assert broker_configs.to_object()["resources"][0]["error_code"] == 31


def test_the_credentials_are_private_and_hold_both_principals(local: Settings) -> None:
    path = local_credentials_file(local)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(local.home.stat().st_mode) == 0o700
    passwords = json.loads(path.read_text())
    assert set(passwords) == {"admin", "millrace"} and all(len(p) >= 32 for p in passwords.values())
    assert client_options(local)["sasl_plain_password"] == passwords["millrace"]
