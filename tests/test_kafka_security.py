"""Kafka client security settings: validated at start, and turned into client arguments in one place."""

from __future__ import annotations

import ssl
import subprocess
from pathlib import Path

import pytest

from millrace import keys
from millrace.config import ConfigError, Settings
from millrace.kafka.topics import client_options, local_credentials_file

SASL = {
    "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
    "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
    "KAFKA_SASL_USERNAME": "millrace",
    "KAFKA_SASL_PASSWORD": "s3cret",
}


def test_default_is_plaintext_without_credentials(tmp_path: Path) -> None:
    options = client_options(Settings.from_env({"MILLRACE_HOME": str(tmp_path)}))
    assert options == {"bootstrap_servers": "localhost:9092", "security_protocol": "PLAINTEXT"}


def test_the_local_brokers_credentials_reach_every_client(tmp_path: Path) -> None:
    """Once the local broker wrote its credentials, clients of it use SCRAM as `millrace`;
    a client of an external cluster (KAFKA_BOOTSTRAP_SERVERS) never uses them."""
    local = Settings.from_env({"MILLRACE_HOME": str(tmp_path)})
    keys.write_secret(local_credentials_file(local), '{"admin": "a", "millrace": "m-pass"}')
    assert client_options(local) == {
        "bootstrap_servers": "localhost:9092",
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "millrace",
        "sasl_plain_password": "m-pass",
    }
    external = Settings.from_env({"MILLRACE_HOME": str(tmp_path), "KAFKA_BOOTSTRAP_SERVERS": "k:9092"})
    assert client_options(external) == {"bootstrap_servers": "k:9092", "security_protocol": "PLAINTEXT"}


def test_sasl_settings_reach_the_client(tmp_path: Path) -> None:
    env = {**SASL, "KAFKA_SECURITY_PROTOCOL": "sasl_plaintext", "KAFKA_BOOTSTRAP_SERVERS": "k:9092"}
    options = client_options(Settings.from_env({**env, "MILLRACE_HOME": str(tmp_path)}))
    assert options["security_protocol"] == "SASL_PLAINTEXT"
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert (options["sasl_plain_username"], options["sasl_plain_password"]) == ("millrace", "s3cret")
    assert "ssl_context" not in options


@pytest.mark.parametrize("missing", ["KAFKA_SASL_MECHANISM", "KAFKA_SASL_USERNAME", "KAFKA_SASL_PASSWORD"])
def test_sasl_without_a_credential_is_refused(missing: str) -> None:
    env = {k: v for k, v in SASL.items() if k != missing}
    with pytest.raises(ConfigError, match=missing):
        Settings.from_env(env)


def test_credentials_without_sasl_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"KAFKA_SASL_USERNAME.*uses no SASL"):
        Settings.from_env({"KAFKA_SASL_USERNAME": "millrace"})


def test_unknown_protocol_and_mechanism_are_refused() -> None:
    with pytest.raises(ConfigError, match="KAFKA_SECURITY_PROTOCOL"):
        Settings.from_env({"KAFKA_SECURITY_PROTOCOL": "TLS"})
    with pytest.raises(ConfigError, match="KAFKA_SASL_MECHANISM"):
        Settings.from_env({**SASL, "KAFKA_SASL_MECHANISM": "GSSAPI"})


def test_tls_files_without_tls_are_refused(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    with pytest.raises(ConfigError, match=r"KAFKA_SSL_CAFILE.*uses no TLS"):
        Settings.from_env({**SASL, "KAFKA_SSL_CAFILE": str(ca)})


def test_tls_cert_needs_its_key_and_files_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="KAFKA_SSL_KEYFILE go together"):
        Settings.from_env({"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CERTFILE": str(tmp_path / "c.pem")})
    with pytest.raises(ConfigError, match=r"KAFKA_SSL_CAFILE.*not a readable file"):
        Settings.from_env({"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CAFILE": str(tmp_path / "none.pem")})


def test_tls_builds_a_verifying_context_from_the_ca(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
         "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    env = {
        "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "KAFKA_BOOTSTRAP_SERVERS": "k:9093",
        **{k: v for k, v in SASL.items() if k != "KAFKA_SECURITY_PROTOCOL"},
    }
    env |= {"KAFKA_SSL_CAFILE": str(cert), "KAFKA_SSL_CERTFILE": str(cert), "KAFKA_SSL_KEYFILE": str(key)}
    context = client_options(Settings.from_env(env))["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert [c["subject"] for c in context.get_ca_certs()] == [((("commonName", "localhost"),),)]


def test_clickhouse_ca_needs_https_and_a_file(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    with pytest.raises(ConfigError, match="MILLRACE_CLICKHOUSE_CA is set but"):
        Settings.from_env({"MILLRACE_CLICKHOUSE_CA": str(ca)})
    dsn = "https://u:p@ch.example:8443"
    with pytest.raises(ConfigError, match="not a readable file"):
        Settings.from_env({"MILLRACE_CLICKHOUSE_DSN": dsn, "MILLRACE_CLICKHOUSE_CA": str(tmp_path / "no")})
    assert Settings.from_env(
        {"MILLRACE_CLICKHOUSE_DSN": dsn, "MILLRACE_CLICKHOUSE_CA": str(ca)}
    ).clickhouse_ca == str(ca)
