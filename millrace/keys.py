"""API keys: hashed, scoped, one project each, kept in a compacted Kafka topic.

Why Kafka: every gateway replica needs the same keys, and Kafka is the one shared
component Millrace already depends on (as Schema Registry and Kafka Connect keep
their state). The topic holds one record per key id with the SHA-256 of the key,
never the key itself; a gateway reads it to the end at start and then follows it,
so a key created or revoked anywhere reaches every replica within a poll.

A key reads `mr_<key id>_<secret>`: the id finds the record in O(1), the hash
comparison is constant-time. The secret is 256 random bits, so a plain SHA-256 is
the right hash (slow password hashes exist for low-entropy secrets).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import os
import secrets
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import orjson
import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition

from millrace.config import Settings
from millrace.kafka.topics import client_options

log = structlog.get_logger()

SCOPE_LOGS = "logs:write"
SCOPE_EVENTS = "events:write"
SCOPE_READ = "data:read"
SCOPE_ALERTS_READ = "alerts:read"  # GoodLogs: list and show alert rules
SCOPE_ALERTS_WRITE = "alerts:write"  # GoodLogs: create, update and delete them
ALL_SCOPES = (SCOPE_LOGS, SCOPE_EVENTS, SCOPE_READ, SCOPE_ALERTS_READ, SCOPE_ALERTS_WRITE)

# Names a key's `limits` may carry (see gateway/limits.py).
LIMIT_REQUESTS_PER_S = "requests_per_s"
LIMIT_LOGS_PER_S = "logs_per_s"
LIMIT_BURST_S = "burst_s"
LIMIT_NAMES = (LIMIT_REQUESTS_PER_S, LIMIT_LOGS_PER_S, LIMIT_BURST_S)

_PREFIX = "mr_"

# The keys topic's record format; readers ignore fields they do not know, so a newer writer's
# additions never stop an older gateway from following.
RECORD_VERSION = 1


class BadKeyRecord(ValueError):
    """A keys-topic record that is not a key: logged with its offset and skipped."""


def parse_scopes(text: str) -> frozenset[str]:
    """A comma-separated scope list; blank entries are dropped, and a list of none is an error
    (it must never mean "every scope")."""
    scopes = frozenset(s.strip() for s in text.split(",") if s.strip())
    if not scopes:
        raise ValueError(f"no scopes given; choose from {', '.join(ALL_SCOPES)}")
    return scopes


@dataclass(frozen=True, slots=True)
class ApiKey:
    key_id: str
    project: str
    scopes: frozenset[str]
    key_hash: str
    created_at: float
    name: str = ""
    revoked: bool = False
    # Per-key overrides of the default rate limits (absent: the default; a rate of 0: no limit).
    limits: dict[str, float] = field(default_factory=dict)
    version: int = RECORD_VERSION

    def to_json(self) -> bytes:
        data = asdict(self)
        data["scopes"] = sorted(self.scopes)
        return orjson.dumps(data)

    @classmethod
    def from_json(cls, raw: bytes) -> ApiKey:
        """The record in `raw`, ignoring unknown fields; BadKeyRecord if it is not a key."""
        try:
            data = orjson.loads(raw)
            if not isinstance(data, dict):
                raise TypeError("not an object")
            known = {k: v for k, v in data.items() if k in _FIELDS}
            known["scopes"] = frozenset(known["scopes"])
            record = cls(**known)
        except (orjson.JSONDecodeError, TypeError, KeyError) as exc:
            raise BadKeyRecord(f"{type(exc).__name__}: {exc}") from exc
        if not all(isinstance(getattr(record, f), str) for f in ("key_id", "project", "key_hash")):
            raise BadKeyRecord("key_id, project and key_hash must be strings")
        return record


_FIELDS = frozenset(ApiKey.__dataclass_fields__)


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def key_id_of(token: str) -> str | None:
    """The id part of a well-formed key, or None (so junk never reaches the table)."""
    # Keys are ASCII: anything else (an undecodable header byte arrives as a surrogate) is junk, not a 500.
    if not token.isascii() or not token.startswith(_PREFIX):
        return None
    key_id, sep, secret = token[len(_PREFIX) :].partition("_")
    if not sep or len(key_id) != 12 or len(secret) < 32:
        return None
    return key_id


def new_key(
    project: str, scopes: frozenset[str], name: str = "", limits: dict[str, float] | None = None
) -> tuple[ApiKey, str]:
    """A fresh key: the record to store and the plaintext to show once."""
    if not scopes:
        raise ValueError(f"a key needs at least one scope; choose from {', '.join(ALL_SCOPES)}")
    unknown = scopes - set(ALL_SCOPES)
    if unknown:
        raise ValueError(f"unknown scope(s) {', '.join(sorted(unknown))}; known: {', '.join(ALL_SCOPES)}")
    # Absent: the gateway's default. A rate of 0: no limit for this key; a burst must be positive.
    limits = {k: float(v) for k, v in (limits or {}).items() if v is not None}
    bad = [
        k
        for k, v in limits.items()
        if k not in LIMIT_NAMES or not (v > 0 if k == LIMIT_BURST_S else v >= 0) or v == float("inf")
    ]
    if bad:
        raise ValueError(
            f"limit {bad[0]!r} must be one of {', '.join(LIMIT_NAMES)}: a rate of 0 or more, a positive burst"
        )
    if not project or len(project) > 100 or not project.replace("-", "").replace("_", "").isalnum():
        raise ValueError("project names are 1-100 letters, digits, '-' or '_'")
    token = f"{_PREFIX}{secrets.token_hex(6)}_{secrets.token_urlsafe(32)}"
    key_id = key_id_of(token)
    assert key_id is not None
    record = ApiKey(key_id, project, scopes, _hash(token), time.time(), name=name, limits=limits)
    return record, token


def write_secret(path: Path, text: str) -> None:
    """Write a plaintext key to `path`, mode 0600 from its first byte, replacing it atomically
    (a file written first and chmod-ed after is readable by others in between)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class KeyRing:
    """The in-memory view of the keys topic that a gateway authenticates against."""

    def __init__(self) -> None:
        self._keys: dict[str, ApiKey] = {}

    def apply(self, key_id: str, value: bytes | None) -> None:
        if value is None:
            self._keys.pop(key_id, None)
        else:
            self._keys[key_id] = ApiKey.from_json(value)

    def authenticate(self, token: str) -> ApiKey | None:
        key_id = key_id_of(token)
        if key_id is None:
            return None
        record = self._keys.get(key_id)
        # Compare even for an unknown id, so timing does not tell which ids exist.
        expected = record.key_hash if record else "0" * 64
        if not hmac.compare_digest(expected, _hash(token)) or record is None or record.revoked:
            return None
        return record

    def all(self) -> list[ApiKey]:
        return sorted(self._keys.values(), key=lambda k: (k.project, k.created_at))

    def __len__(self) -> int:
        return len(self._keys)


class KeyStore:
    """Follows the keys topic: `start()` returns once every existing key is loaded."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.ring = KeyRing()
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        # False while the follower is down (crashed, waiting to restart): readiness reads it,
        # because a gateway that stopped following would honour revoked keys.
        self.following = False
        self._next_offset = 0  # past the last record applied: where a restarted follower resumes

    async def start(self) -> None:
        tp = TopicPartition(self.settings.keys_topic, 0)
        consumer = AIOKafkaConsumer(
            **client_options(self.settings),
            enable_auto_commit=False,
            group_id=None,
            auto_offset_reset="earliest",
        )
        await consumer.start()
        try:
            consumer.assign([tp])
            await consumer.seek_to_beginning(tp)
            end = (await consumer.end_offsets([tp]))[tp]
            while await consumer.position(tp) < end:
                for records in (await consumer.getmany(tp, timeout_ms=500)).values():
                    self._apply(records)
        except BaseException:
            await consumer.stop()
            raise
        self._consumer = consumer
        self.following = True
        self._task = asyncio.create_task(self._supervise(tp), name="keys-follow")
        log.info("keys_loaded", count=len(self.ring))

    def _apply(self, records: list[ConsumerRecord[bytes, bytes]]) -> None:
        for rec in records:
            try:
                if rec.key is None:
                    raise BadKeyRecord("no key id")
                self.ring.apply(rec.key.decode(), rec.value)
            except (BadKeyRecord, UnicodeDecodeError) as exc:
                log.error(
                    "key_record_skipped",
                    topic=rec.topic,
                    partition=rec.partition,
                    offset=rec.offset,
                    error=str(exc),
                )
            self._next_offset = rec.offset + 1

    async def _supervise(self, tp: TopicPartition) -> None:
        """Run the follower; if it dies, log it, turn unready, and restart it with backoff."""
        delay = 0.5
        while True:
            try:
                assert self._consumer is not None
                # Resume after the last record applied: a crash mid-batch must not lose the rest.
                self._consumer.seek(tp, self._next_offset)
                self.following = True
                await self._follow(tp)
            except asyncio.CancelledError:
                self.following = False
                raise
            except Exception:
                self.following = False
                log.exception("keys_follow_crashed", retry_in_s=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)

    async def _follow(self, tp: TopicPartition) -> None:
        assert self._consumer is not None
        while True:
            try:
                batch = await self._consumer.getmany(tp, timeout_ms=1000)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the broker may be away; keys already loaded keep working
                log.warning("keys_follow_failed", error=str(exc), stage="receiving")
                await asyncio.sleep(1)
                continue
            for records in batch.values():
                self._apply(records)

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer:
            await self._consumer.stop()


async def _write(settings: Settings, record: ApiKey) -> None:
    producer = AIOKafkaProducer(**client_options(settings), acks="all", enable_idempotence=True)
    await producer.start()
    try:
        await producer.send_and_wait(settings.keys_topic, record.to_json(), key=record.key_id.encode())
    finally:
        await producer.stop()


async def create(
    settings: Settings,
    project: str,
    scopes: frozenset[str],
    name: str = "",
    limits: dict[str, float] | None = None,
) -> tuple[ApiKey, str]:
    record, token = new_key(project, scopes, name, limits)
    await _write(settings, record)
    return record, token


async def load(settings: Settings) -> KeyRing:
    store = KeyStore(settings)
    await store.start()
    await store.stop()
    return store.ring


async def revoke(settings: Settings, key_id: str) -> ApiKey:
    ring = await load(settings)
    record = next((k for k in ring.all() if k.key_id == key_id), None)
    if record is None:
        raise KeyError(key_id)
    revoked = ApiKey(**{**asdict(record), "scopes": record.scopes, "revoked": True})
    await _write(settings, revoked)
    return revoked
