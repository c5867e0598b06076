"""Settings: validated at start with errors that name the variable, and documented truthfully."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from millrace.config import ConfigError, Settings, describe

ROOT = Path(__file__).resolve().parents[1]
_ROW = re.compile(r"^\| `([A-Z_]+)` \| (?:`([^`]*)`|\(empty\)) \| (.+?) \|$", flags=re.M)


def _documented(path: Path) -> dict[str, str]:
    """Variable -> default, from a settings table (the meaning column may say more than the code)."""
    return {name: default for name, default, _ in _ROW.findall(path.read_text())}


def test_the_settings_page_lists_every_setting_with_its_default() -> None:
    assert {env: default for env, default, _ in describe()} == _documented(ROOT / "docs" / "settings.md")


def test_the_readme_shows_settings_as_the_code_has_them_and_links_the_rest() -> None:
    shown = _documented(ROOT / "README.md")
    assert shown, "the README shows the settings most often set"
    known = {env: default for env, default, _ in describe()}
    assert {env: known.get(env) for env in shown} == shown
    assert "docs/settings.md" in (ROOT / "README.md").read_text()


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"MILLRACE_PORT": "eighty"}, "MILLRACE_PORT"),
        ({"MILLRACE_PORT": "70000"}, "between 1 and 65535"),
        ({"MILLRACE_CLICKHOUSE_DSN": "mysql://x"}, "MILLRACE_CLICKHOUSE_DSN"),
        ({"MILLRACE_TRUSTED_PROXIES": "10.0.0.0/8,not-an-ip"}, "not-an-ip"),
        ({"MILLRACE_KAFKA_COMPRESSION": "brotli"}, "MILLRACE_KAFKA_COMPRESSION"),
        ({"MILLRACE_PRODUCE_TIMEOUT_S": "-1"}, "MILLRACE_PRODUCE_TIMEOUT_S"),
        ({"MILLRACE_KAFKA_BATCH_BYTES": "100"}, "MILLRACE_KAFKA_BATCH_BYTES"),
        ({"MILLRACE_KAFKA_BROKERS": "2"}, "one of 1, 3"),
        (
            {"MILLRACE_KAFKA_BROKERS": "3", "MILLRACE_REPLICATION_FACTOR": "1"},
            "MILLRACE_REPLICATION_FACTOR=1",
        ),
        ({"MILLRACE_KAFKA_BROKERS": "3", "MILLRACE_KAFKA_PORT": "65531"}, "no room for 3 local brokers"),
    ],
)
def test_invalid_setting_is_refused_naming_it(env: dict[str, str], needle: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(needle)):
        Settings.from_env(env)


def test_three_local_brokers_take_two_ports_each_and_replicate_to_all(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {"MILLRACE_HOME": str(tmp_path), "MILLRACE_KAFKA_BROKERS": "3", "MILLRACE_KAFKA_PORT": "19000"}
    )
    assert settings.bootstrap == "localhost:19000,localhost:19002,localhost:19004"
    assert [settings.local_ports(n) for n in (1, 2, 3)] == [(19000, 19001), (19002, 19003), (19004, 19005)]
    assert settings.replication_factor == 3
    # An existing cluster's topics follow MILLRACE_REPLICATION_FACTOR, not the local count.
    external = Settings.from_env(
        {
            "KAFKA_BOOTSTRAP_SERVERS": "k:9092",
            "MILLRACE_KAFKA_BROKERS": "3",
            "MILLRACE_REPLICATION_FACTOR": "2",
        }
    )
    assert (external.bootstrap, external.replication_factor) == ("k:9092", 2)


def test_defaults_run_embedded_with_a_local_broker(tmp_path: Path) -> None:
    settings = Settings.from_env({"MILLRACE_HOME": str(tmp_path)})
    assert settings.embedded_store and settings.local_broker
    assert f"chdb://{tmp_path / 'clickhouse'}" == settings.clickhouse_dsn
    assert settings.bootstrap == "localhost:9092"
    remote = Settings.from_env(
        {"KAFKA_BOOTSTRAP_SERVERS": "k1:9092,k2:9092", "MILLRACE_CLICKHOUSE_DSN": "https://ch:8443"}
    )
    assert not remote.local_broker and not remote.embedded_store
    assert remote.bootstrap == "k1:9092,k2:9092"
