"""Keys: a record the gateway cannot read is skipped (logged with its offset), never the end of
key following; the follower is supervised and readiness can see it down; a key always has at
least one scope; the dev key's plaintext is never readable by others, not even for a moment."""

from __future__ import annotations

import asyncio
import stat
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from millrace import keys
from millrace.config import Settings
from millrace.kafka.topics import client_options, local_credentials_file
from ops import cli, runner
from tests.conftest import Stack
from tests.security.test_isolation import read
from tests.test_limits import WIRES, post


async def _produce(stack: Stack, key: bytes, value: bytes) -> None:
    producer = AIOKafkaProducer(**client_options(stack.settings), acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(stack.settings.keys_topic, value, key=key)
    finally:
        await producer.stop()


async def _until(check: Any, what: str, timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        await asyncio.sleep(0.05)


@pytest.mark.integration
async def test_odd_key_records_are_skipped_and_keys_keep_working(stack: Stack) -> None:
    """Garbage and a record from a newer writer (an unknown field) on the keys topic: keys created
    afterwards authenticate, revocation still reaches the gateway, `keys.revoke` still works."""
    project = f"oddkeys-{uuid.uuid4().hex[:6]}"
    await _produce(stack, b"garbage00000", b"\xff not json {")
    await _produce(stack, b"listrecord00", b"[1, 2, 3]")
    future, future_token = keys.new_key(project, frozenset(keys.ALL_SCOPES))
    data = orjson.loads(future.to_json())
    data["from_the_future"] = {"x": 1}
    await _produce(stack, future.key_id.encode(), orjson.dumps(data))
    await stack.wait_for_key(future_token)  # unknown field ignored, the key honoured

    record, token = await keys.create(stack.settings, project, frozenset(keys.ALL_SCOPES))
    await stack.wait_for_key(token)
    wire = WIRES["astralog"]
    assert (await post(stack, stack.url, wire.path, wire.body("odd", 1), wire.headers(token)))[0] == 200
    assert (await read(stack, token, {}))[0] == 200

    await keys.revoke(stack.settings, record.key_id)  # reads the whole topic, odd records included
    await _until(lambda: stack.gateway_keys.authenticate(token) is None, "revocation not seen")
    assert (await post(stack, stack.url, wire.path, wire.body("odd", 1), wire.headers(token)))[0] == 401
    assert (await read(stack, token, {}))[0] == 401
    assert {future.key_id, record.key_id} <= {k.key_id for k in (await keys.load(stack.settings)).all()}


@pytest.mark.integration
async def test_a_crashed_follower_turns_unready_and_is_restarted(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = keys.KeyStore(stack.settings)
    await store.start()
    try:
        assert store.following
        crashes = []
        real_apply = store.ring.apply

        def apply_once_broken(key_id: str, value: bytes | None) -> None:
            if not crashes:
                crashes.append(key_id)
                raise RuntimeError("a bug in the follower")
            real_apply(key_id, value)

        monkeypatch.setattr(store.ring, "apply", apply_once_broken)
        _, first = await keys.create(
            stack.settings, f"crash-{uuid.uuid4().hex[:6]}", frozenset(keys.ALL_SCOPES)
        )
        await _until(lambda: not store.following, "the follower's crash was not visible")
        await _until(lambda: store.following, "the follower was not restarted")
        _, later = await keys.create(
            stack.settings, f"crash-{uuid.uuid4().hex[:6]}", frozenset(keys.ALL_SCOPES)
        )
        await _until(
            lambda: store.ring.authenticate(later) is not None, "keys stopped arriving after a crash"
        )
        assert crashes
        assert store.ring.authenticate(first) is not None  # the record it crashed on is not lost
    finally:
        await store.stop()
    assert not store.following


def test_a_key_record_ignores_unknown_fields_and_carries_a_version() -> None:
    record, _ = keys.new_key("p", frozenset({keys.SCOPE_READ}))
    data = orjson.loads(record.to_json())
    assert data["version"] == keys.RECORD_VERSION
    assert record == keys.ApiKey.from_json(orjson.dumps({**data, "new_field": [1]}))


@pytest.mark.parametrize(
    "raw", [b"", b"\xff", b"[]", b"null", b'{"key_id": "x"}', b'{"key_id": 1, "project": 2, "scopes": []}']
)
def test_a_record_that_is_not_a_key_is_one_error_type(raw: bytes) -> None:
    with pytest.raises(keys.BadKeyRecord):
        keys.ApiKey.from_json(raw)


@pytest.mark.parametrize("text", ["", ",", " ", " , ,"])
def test_a_blank_scope_list_is_an_error_never_every_scope(text: str) -> None:
    with pytest.raises(ValueError, match="scope"):
        keys.parse_scopes(text)
    with pytest.raises(ValueError, match="scope"):
        keys.new_key("p", frozenset())


@pytest.mark.parametrize("text", [",", " "])
def test_keys_create_refuses_blank_scopes(
    text: str, base_settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    args = cli.parser().parse_args(["keys", "create", "--project", "p", "--scopes", text])
    # Refused before any broker is contacted. (Not through cli.main: it reconfigures logging.)
    assert args.fn(base_settings, args) == 2
    assert "scope" in capsys.readouterr().err


def test_a_secret_file_is_private_from_its_first_byte(tmp_path: Path) -> None:
    path = tmp_path / "state" / "dev-key"
    keys.write_secret(path, "mr_x\n")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    path.chmod(0o644)
    keys.write_secret(path, "mr_y\n")  # replaced, not rewritten in place: the new file is 0600
    assert (stat.S_IMODE(path.stat().st_mode), path.read_text()) == (0o600, "mr_y\n")
    assert [path] == list(path.parent.iterdir())


async def test_the_dev_key_file_is_private_without_a_later_chmod(
    kafka: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`millrace run` writes the dev key 0600 from its first byte: with every chmod a no-op, the
    file (an old one left 0644 with a stale key) still ends up private."""
    settings = replace(kafka, home=tmp_path)
    if kafka.local_broker:  # this home has no broker of its own: use the session broker's credentials
        keys.write_secret(local_credentials_file(settings), local_credentials_file(kafka).read_text())
    path = runner.dev_key_file(settings)
    path.write_text("mr_stale_key\n")
    path.chmod(0o644)
    monkeypatch.setattr(Path, "chmod", lambda self, mode, **_: None)
    token = await runner._prepare(settings)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text() == token + "\n"
