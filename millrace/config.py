"""Settings: every knob is one environment variable, read and validated once at start-up.

The table of settings in the README is checked against `SETTINGS` by a test, so the
docs cannot drift from the code.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """A setting has a value Millrace cannot use; the message names the variable and the fix."""


# A process's exit status on a ConfigError: `millrace run` does not restart it (it would only
# fail the same way again).
CONFIG_ERROR_EXIT = 2


def _int(name: str, raw: str, lo: int, hi: int) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not an integer; set it to a whole number") from None
    if not lo <= value <= hi:
        raise ConfigError(f"{name}={value} is out of range; set it between {lo} and {hi}")
    return value


def _setting(env: str, default: str, doc: str) -> Any:
    return field(default=None, metadata={"env": env, "default": default, "doc": doc})


@dataclass(frozen=True)
class Settings:
    home: Path = _setting(
        "MILLRACE_HOME", ".millrace", "State directory: broker data, embedded ClickHouse, pids"
    )
    host: str = _setting("MILLRACE_HOST", "127.0.0.1", "Address the gateway listens on")
    port: int = _setting("MILLRACE_PORT", "8080", "Port the gateway listens on")
    gateway_processes: int = _setting(
        "MILLRACE_GATEWAY_PROCESSES", "1", "Gateway processes `millrace run` starts; they share the port"
    )
    kafka_bootstrap_servers: str = _setting(
        "KAFKA_BOOTSTRAP_SERVERS", "", "An existing Kafka cluster; empty runs the project's local broker"
    )
    kafka_port: int = _setting("MILLRACE_KAFKA_PORT", "9092", "Port of the local broker (when it is used)")
    kafka_brokers: int = _setting(
        "MILLRACE_KAFKA_BROKERS",
        "1",
        "Local KRaft brokers: 1, or 3 (ports MILLRACE_KAFKA_PORT to +5; replication 3, min.insync 2)",
    )
    kafka_security_protocol: str = _setting(
        "KAFKA_SECURITY_PROTOCOL",
        "PLAINTEXT",
        "PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL (KAFKA_BOOTSTRAP_SERVERS; the local broker: SCRAM)",
    )
    kafka_sasl_mechanism: str = _setting(
        "KAFKA_SASL_MECHANISM", "", "SASL mechanism (SASL_* protocols): PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512"
    )
    kafka_sasl_username: str = _setting("KAFKA_SASL_USERNAME", "", "SASL user name (SASL_* protocols)")
    kafka_sasl_password: str = _setting("KAFKA_SASL_PASSWORD", "", "SASL password (SASL_* protocols)")
    kafka_ssl_cafile: str = _setting(
        "KAFKA_SSL_CAFILE", "", "CA bundle that signs the brokers' certificates (SSL, SASL_SSL)"
    )
    kafka_ssl_certfile: str = _setting(
        "KAFKA_SSL_CERTFILE", "", "Client certificate for mutual TLS (SSL, SASL_SSL)"
    )
    kafka_ssl_keyfile: str = _setting("KAFKA_SSL_KEYFILE", "", "Key of KAFKA_SSL_CERTFILE")
    topic: str = _setting("MILLRACE_TOPIC", "millrace.raw", "Topic of raw request envelopes")
    dlq_topic: str = _setting("MILLRACE_DLQ_TOPIC", "millrace.dlq", "Dead-letter topic")
    keys_topic: str = _setting(
        "MILLRACE_KEYS_TOPIC", "millrace.keys", "Compacted topic holding hashed API keys"
    )
    partitions: int = _setting(
        "MILLRACE_PARTITIONS", "4", "Partitions of the raw topic when Millrace creates it"
    )
    replication_factor: int = _setting(
        "MILLRACE_REPLICATION_FACTOR",
        "1",
        "Replication factor of the topics Millrace creates (local brokers: MILLRACE_KAFKA_BROKERS)",
    )
    consumer_group: str = _setting(
        "MILLRACE_CONSUMER_GROUP", "millrace-workers", "Kafka group of the workers"
    )
    # 0: the records that arrive while a produce request is in flight already share the next
    # one, so lingering only delays an ack (measured: bench/README.md, scale knobs).
    linger_ms: int = _setting("MILLRACE_KAFKA_LINGER_MS", "0", "Producer linger: how long to gather a batch")
    # Room for several envelopes (6-40 KB compressed) in one record batch: fewer batches for the
    # producer to build and the broker to validate and append. Under the broker's default
    # message.max.bytes (1,048,588), so a cluster's own topics take it unchanged.
    kafka_batch_bytes: int = _setting(
        "MILLRACE_KAFKA_BATCH_BYTES",
        "1000000",
        "Producer record batch size: envelopes sent to one partition together share a batch",
    )
    kafka_compression: str = _setting(
        "MILLRACE_KAFKA_COMPRESSION",
        # The envelope's rows are zstd-compressed by the gateway itself (schemas/envelope.py):
        # a codec here would compress them a second time for nothing.
        "none",
        "Producer compression of record batches: none, gzip, lz4, zstd or snappy",
    )
    produce_timeout_s: float = _setting(
        "MILLRACE_PRODUCE_TIMEOUT_S", "5", "Seconds the gateway waits for Kafka's ack before answering 503"
    )
    clickhouse_dsn: str = _setting(
        "MILLRACE_CLICKHOUSE_DSN",
        "chdb://<MILLRACE_HOME>/clickhouse",
        "Store: chdb://<dir> (embedded, in the worker) or http(s)://user:pass@host:port",
    )
    clickhouse_ca: str = _setting(
        "MILLRACE_CLICKHOUSE_CA", "", "CA bundle that signs an https:// ClickHouse server's certificate"
    )
    database: str = _setting("MILLRACE_CLICKHOUSE_DATABASE", "millrace", "ClickHouse database")
    clickhouse_cluster: str = _setting(
        "MILLRACE_CLICKHOUSE_CLUSTER",
        "",
        "ClickHouse cluster (remote_servers name): migrations run ON CLUSTER with Replicated* engines",
    )
    worker_query_port: int = _setting(
        "MILLRACE_WORKER_QUERY_PORT",
        "8091",
        "Worker's internal port: /internal/health, /metrics, and the gateway's reads in embedded mode",
    )
    worker_host: str = _setting(
        "MILLRACE_WORKER_HOST",
        "127.0.0.1",
        "Address the worker's internal port listens on; 0.0.0.0 lets Prometheus scrape it (server DSN only)",
    )
    # 300k, not 400k: the closed loop fills the cap since the producer batches envelopes, and
    # 400k-row inserts took the worker's peak RSS to 2.4 GB for no CPU saved (bench/README.md).
    batch_rows: int = _setting(
        "MILLRACE_BATCH_ROWS",
        "300000",
        "Worker flushes an insert at this many rows",
    )
    batch_age_ms: int = _setting(
        "MILLRACE_BATCH_AGE_MS", "2000", "...or when the oldest buffered row is this old"
    )
    # Off by default: an unmerged part is searched without these indexes (docs/operations.md).
    defer_skip_indexes: bool = _setting(
        "MILLRACE_DEFER_SKIP_INDEXES",
        "0",
        "1: the token and bloom-filter indexes are built by background merges, not by each insert",
    )
    dlq_flood_threshold: int = _setting(
        "MILLRACE_DLQ_FLOOD_THRESHOLD",
        "100",
        "Flood guard: the worker stops once this many dead letters fall in the window (0: never stops)",
    )
    dlq_flood_ratio: float = _setting(
        "MILLRACE_DLQ_FLOOD_RATIO", "0.5", "...and they are at least this share (0-1] of messages read"
    )
    dlq_flood_window_s: int = _setting(
        "MILLRACE_DLQ_FLOOD_WINDOW_S", "60", "...counted over this many seconds"
    )
    max_body_bytes: int = _setting(
        "MILLRACE_MAX_BODY_BYTES", "10485760", "Largest request body accepted on the wire (413 above)"
    )
    max_decompressed_bytes: int = _setting(
        "MILLRACE_MAX_DECOMPRESSED_BYTES", "20971520", "Largest body after decompression (413 above)"
    )
    max_records_per_request: int = _setting(
        "MILLRACE_MAX_RECORDS_PER_REQUEST",
        "50000",
        "Most records (logs or events) one request may carry (413 above)",
    )
    rate_requests_per_s: float = _setting(
        "MILLRACE_RATE_REQUESTS_PER_S", "1000", "Default requests/s per key and gateway process (0: no limit)"
    )
    rate_logs_per_s: float = _setting(
        "MILLRACE_RATE_LOGS_PER_S", "200000", "Default records/s per key and gateway process (0: no limit)"
    )
    rate_burst_s: float = _setting(
        "MILLRACE_RATE_BURST_S", "2", "Burst: a key's buckets hold this many seconds of its rates"
    )
    body_timeout_s: float = _setting(
        "MILLRACE_BODY_TIMEOUT_S", "30", "Seconds a client gets to send a whole request body (408 after)"
    )
    idle_timeout_s: float = _setting(
        "MILLRACE_IDLE_TIMEOUT_S",
        "75",
        "Idle keep-alive connections close after this; also the deadline for request headers",
    )
    otlp_key_header: str = _setting(
        "MILLRACE_OTLP_KEY_HEADER",
        "",
        "A header OTLP clients may carry the key in (e.g. x-api-key), besides Authorization: Bearer",
    )
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = _setting(
        "MILLRACE_TRUSTED_PROXIES", "", "CIDRs whose X-Forwarded-For is believed (comma separated)"
    )
    alerts_topic: str = _setting(
        "MILLRACE_ALERTS_TOPIC",
        "millrace.alerts",
        "Topic whose partitions the alert evaluators share (Kafka group): each rule has one owner",
    )
    alerts_port: int = _setting(
        "MILLRACE_ALERTS_PORT",
        "0",
        "Alert evaluator's /internal/health and /metrics port, on MILLRACE_WORKER_HOST (0: none)",
    )
    alert_allow_private_targets: bool = _setting(
        "MILLRACE_ALERT_ALLOW_PRIVATE_TARGETS",
        "false",
        "true lets webhooks reach loopback, private and link-local addresses (never the worker's port)",
    )
    restart_limit: int = _setting(
        "MILLRACE_RESTART_LIMIT",
        "5",
        "Crashes of one process in the window that `millrace run` restarts; one more stops all (0: none)",
    )
    restart_window_s: int = _setting("MILLRACE_RESTART_WINDOW_S", "300", "...counted over this many seconds")
    log_level: str = _setting("MILLRACE_LOG_LEVEL", "info", "debug, info, warning or error")
    log_format: str = _setting("MILLRACE_LOG_FORMAT", "json", "json (one object per line) or console")

    @property
    def embedded_store(self) -> bool:
        return self.clickhouse_dsn.startswith("chdb:")

    @property
    def local_broker(self) -> bool:
        return not self.kafka_bootstrap_servers

    def local_ports(self, node: int) -> tuple[int, int]:
        """Client and controller port of local broker `node` (1-based): two per node from kafka_port."""
        first = self.kafka_port + 2 * (node - 1)
        return first, first + 1

    @property
    def bootstrap(self) -> str:
        if self.kafka_bootstrap_servers:
            return self.kafka_bootstrap_servers
        nodes = range(1, self.kafka_brokers + 1)
        return ",".join(f"localhost:{self.local_ports(n)[0]}" for n in nodes)

    @property
    def worker_query_url(self) -> str:
        return f"http://127.0.0.1:{self.worker_query_port}"

    @property
    def run_dir(self) -> Path:
        return self.home / "run"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        raw = {f.name: env.get(f.metadata["env"], f.metadata["default"]) for f in fields(cls)}
        home = Path(raw["home"]).resolve()
        dsn = raw["clickhouse_dsn"]
        if dsn == "chdb://<MILLRACE_HOME>/clickhouse":
            dsn = f"chdb://{home / 'clickhouse'}"
        if not dsn.startswith(("chdb://", "http://", "https://")):
            raise ConfigError(
                f"MILLRACE_CLICKHOUSE_DSN={dsn!r} has an unknown scheme; use chdb://<dir> or http(s)://host:port"
            )
        parsers: dict[str, Callable[[str, str], Any]] = {
            "port": lambda n, v: _int(n, v, 1, 65535),
            "kafka_port": lambda n, v: _int(n, v, 1, 65535),
            "kafka_brokers": lambda n, v: int(_choice(n, v.strip(), ("1", "3"))),
            "worker_query_port": lambda n, v: _int(n, v, 1, 65535),
            "alerts_port": lambda n, v: _int(n, v, 0, 65535),
            "partitions": lambda n, v: _int(n, v, 1, 10000),
            "gateway_processes": lambda n, v: _int(n, v, 1, 64),
            "replication_factor": lambda n, v: _int(n, v, 1, 32),
            "linger_ms": lambda n, v: _int(n, v, 0, 10000),
            "kafka_batch_bytes": lambda n, v: _int(n, v, 1024, 64 * 1024 * 1024),
            "batch_rows": lambda n, v: _int(n, v, 1, 10_000_000),
            "batch_age_ms": lambda n, v: _int(n, v, 10, 600_000),
            "dlq_flood_threshold": lambda n, v: _int(n, v, 0, 1_000_000_000),
            "dlq_flood_ratio": _fraction,
            "dlq_flood_window_s": lambda n, v: _int(n, v, 1, 86_400),
            "restart_limit": lambda n, v: _int(n, v, 0, 1000),
            "restart_window_s": lambda n, v: _int(n, v, 1, 86_400),
            "max_body_bytes": lambda n, v: _int(n, v, 1024, 1 << 31),
            "max_decompressed_bytes": lambda n, v: _int(n, v, 1024, 1 << 32),
            "produce_timeout_s": _positive_float,
            "max_records_per_request": lambda n, v: _int(n, v, 1, 10_000_000),
            "rate_requests_per_s": _rate,
            "rate_logs_per_s": _rate,
            "rate_burst_s": _positive_float,
            "body_timeout_s": _positive_float,
            "idle_timeout_s": _positive_float,
            "trusted_proxies": _networks,
            "alert_allow_private_targets": _bool,
            "defer_skip_indexes": _bool,
            "otlp_key_header": _header_name,
            "log_level": lambda n, v: _choice(n, v.lower(), ("debug", "info", "warning", "error")),
            "log_format": lambda n, v: _choice(n, v.lower(), ("json", "console")),
            "kafka_compression": lambda n, v: _choice(
                n, v.lower(), ("none", "gzip", "lz4", "zstd", "snappy")
            ),
            "kafka_security_protocol": lambda n, v: _choice(n, v.upper(), SECURITY_PROTOCOLS),
            "kafka_sasl_mechanism": lambda n, v: _choice(n, v.upper(), ("", *SASL_MECHANISMS)),
        }
        values: dict[str, Any] = {}
        for f in fields(cls):
            parse = parsers.get(f.name)
            values[f.name] = parse(f.metadata["env"], raw[f.name]) if parse else raw[f.name]
        values["home"] = home
        values["clickhouse_dsn"] = dsn
        if dsn.startswith("chdb:") and values["clickhouse_cluster"]:
            raise ConfigError(
                "MILLRACE_CLICKHOUSE_CLUSTER is set but the store is embedded (chdb://); "
                "unset it, or point MILLRACE_CLICKHOUSE_DSN at a server of that cluster (http(s)://)"
            )
        if dsn.startswith("chdb:") and values["worker_host"] != "127.0.0.1":
            # That port answers the gateway's (already authorized) reads without a key of its own.
            raise ConfigError(
                f"MILLRACE_WORKER_HOST={values['worker_host']!r} would expose the embedded store's read "
                "port; with a chdb:// DSN leave it at 127.0.0.1, or use an http(s):// ClickHouse DSN"
            )
        _check_kafka_security(values)
        if not values["kafka_bootstrap_servers"]:
            _check_local_brokers(values, explicit_rf="MILLRACE_REPLICATION_FACTOR" in env)
        if values["clickhouse_ca"] and not dsn.startswith("https://"):
            raise ConfigError(
                "MILLRACE_CLICKHOUSE_CA is set but MILLRACE_CLICKHOUSE_DSN is not https://; unset one"
            )
        if values["clickhouse_ca"] and not Path(values["clickhouse_ca"]).is_file():
            raise ConfigError(f"MILLRACE_CLICKHOUSE_CA={values['clickhouse_ca']!r} is not a readable file")
        return cls(**values)


SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


def _check_local_brokers(values: dict[str, Any], *, explicit_rf: bool) -> None:
    """The local brokers' topics are replicated to every one of them (3: min.insync.replicas=2)."""
    brokers = values["kafka_brokers"]
    if explicit_rf and values["replication_factor"] != brokers:
        raise ConfigError(
            f"MILLRACE_REPLICATION_FACTOR={values['replication_factor']} does not fit "
            f"MILLRACE_KAFKA_BROKERS={brokers}: the local brokers' topics are replicated to all of "
            "them; unset MILLRACE_REPLICATION_FACTOR (it is for KAFKA_BOOTSTRAP_SERVERS)"
        )
    if values["kafka_port"] + 2 * brokers - 1 > 65535:
        raise ConfigError(
            f"MILLRACE_KAFKA_PORT={values['kafka_port']} leaves no room for {brokers} local brokers "
            f"(ports up to +{2 * brokers - 1}); set a lower port"
        )
    values["replication_factor"] = brokers


def _check_kafka_security(values: Mapping[str, Any]) -> None:
    """Refuse combinations a Kafka client would silently ignore or fail on at first connect."""
    protocol = values["kafka_security_protocol"]
    sasl = {
        "KAFKA_SASL_MECHANISM": values["kafka_sasl_mechanism"],
        "KAFKA_SASL_USERNAME": values["kafka_sasl_username"],
        "KAFKA_SASL_PASSWORD": values["kafka_sasl_password"],
    }
    tls = {
        "KAFKA_SSL_CAFILE": values["kafka_ssl_cafile"],
        "KAFKA_SSL_CERTFILE": values["kafka_ssl_certfile"],
        "KAFKA_SSL_KEYFILE": values["kafka_ssl_keyfile"],
    }
    if protocol.startswith("SASL_"):
        missing = [name for name, value in sasl.items() if not value]
        if missing:
            raise ConfigError(f"KAFKA_SECURITY_PROTOCOL={protocol} needs {', '.join(missing)}; set them")
    elif any(sasl.values()):
        set_ = [name for name, value in sasl.items() if value]
        raise ConfigError(
            f"{', '.join(set_)} set but KAFKA_SECURITY_PROTOCOL={protocol} uses no SASL; "
            "use SASL_PLAINTEXT or SASL_SSL, or unset them"
        )
    if not protocol.endswith("SSL") and any(tls.values()):
        set_ = [name for name, value in tls.items() if value]
        raise ConfigError(
            f"{', '.join(set_)} set but KAFKA_SECURITY_PROTOCOL={protocol} uses no TLS; "
            "use SSL or SASL_SSL, or unset them"
        )
    if bool(tls["KAFKA_SSL_CERTFILE"]) != bool(tls["KAFKA_SSL_KEYFILE"]):
        raise ConfigError("KAFKA_SSL_CERTFILE and KAFKA_SSL_KEYFILE go together; set both or neither")
    for name, value in tls.items():
        if value and not Path(value).is_file():
            raise ConfigError(f"{name}={value!r} is not a readable file")


def _positive_float(name: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number; set it to seconds, e.g. 5") from None
    if value <= 0:
        raise ConfigError(f"{name}={value} must be positive; set it to a number of seconds above 0, e.g. 5")
    return value


def _rate(name: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(
            f"{name}={raw!r} is not a number; set it per second, e.g. 1000 (0: no limit)"
        ) from None
    if not 0 <= value < float("inf"):
        raise ConfigError(f"{name}={value} must be 0 (no limit) or positive")
    return value


def _bool(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value not in ("true", "false", "1", "0", "yes", "no"):
        raise ConfigError(f"{name}={raw!r} is not a boolean; set it to true or false")
    return value in ("true", "1", "yes")


def _fraction(name: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number; set it to a share such as 0.5") from None
    if not 0 < value <= 1:
        raise ConfigError(f"{name}={value} is out of range; set it above 0 and at most 1, e.g. 0.5")
    return value


def _header_name(name: str, raw: str) -> str:
    value = raw.strip()
    if value and not re.fullmatch(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+", value):
        raise ConfigError(f"{name}={raw!r} is not an HTTP header name; set it to one such as x-api-key")
    if value.lower() in ("authorization", "x-tg2g-api-key"):
        raise ConfigError(
            f"{name}={raw!r} is already another API's key header; choose another, or leave it empty"
        )
    return value


def _choice(name: str, raw: str, allowed: tuple[str, ...]) -> str:
    if raw not in allowed:
        raise ConfigError(f"{name}={raw!r} is not allowed; set it to one of {', '.join(allowed)}")
    return raw


def _networks(name: str, raw: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    nets = []
    for part in filter(None, (p.strip() for p in raw.split(","))):
        try:
            nets.append(ipaddress.ip_network(part, strict=False))
        except ValueError:
            raise ConfigError(
                f"{name} entry {part!r} is not an IP address or CIDR, e.g. 10.0.0.0/8"
            ) from None
    return tuple(nets)


def describe() -> list[tuple[str, str, str]]:
    """(variable, default, meaning) for every setting, in declaration order."""
    return [(f.metadata["env"], f.metadata["default"], f.metadata["doc"]) for f in fields(Settings)]
