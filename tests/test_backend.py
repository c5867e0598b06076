"""The test backend switch: MILLRACE_TEST_BACKEND=containers runs the suite against Kafka and
ClickHouse server containers (testcontainers); without Docker that path is skipped, with the
reason, and the local processes serve the whole suite."""

from __future__ import annotations

import pytest

from tests import backends
from tests.conftest import Stack

pytestmark = pytest.mark.integration


async def test_the_suite_runs_on_the_requested_backend(stack: Stack) -> None:
    reason = backends.skip_reason()
    settings = stack.settings
    if reason is None:
        assert not settings.local_broker and not settings.embedded_store
        assert settings.clickhouse_dsn.startswith("http://")
    else:
        assert settings.local_broker and settings.embedded_store
    ((one,),) = stack.query("SELECT 1")
    assert one == 1
    if reason is not None and backends.requested() == "containers":
        pytest.skip(f"containers backend skipped, the local processes ran the suite: {reason}")


def test_an_unknown_backend_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(backends.ENV, "kubernetes")
    with pytest.raises(pytest.UsageError, match="local or containers"):
        backends.requested()
