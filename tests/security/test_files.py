"""Files holding secrets or tenant data: the internal token is trusted only when it is ours and
private; an embedded insert stages tenant rows in a private directory, cleared at start."""

from __future__ import annotations

import stat
import tempfile
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from millrace import internal, store
from millrace.config import Settings
from tests.conftest import Stack
from tests.test_limits import WIRES, post


def test_an_internal_token_file_others_may_read_is_refused(tmp_path: Path, base_settings: Settings) -> None:
    settings = replace(base_settings, home=tmp_path)
    token = internal.ensure_token(settings)
    assert token == internal.ensure_token(settings)  # ours and 0600: trusted
    internal.token_path(settings).chmod(0o640)
    with pytest.raises(RuntimeError, match="mode 640"):
        internal.ensure_token(settings)


def test_an_internal_token_file_owned_by_another_user_is_refused(
    tmp_path: Path, base_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = replace(base_settings, home=tmp_path)
    internal.ensure_token(settings)
    real_uid = internal.os.getuid()
    monkeypatch.setattr(internal.os, "getuid", lambda: real_uid + 1)
    with pytest.raises(RuntimeError, match="owned by uid"):
        internal.ensure_token(settings)


@pytest.mark.integration
async def test_inserted_rows_are_staged_privately_and_leftovers_cleared(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    staging = store.staging_dir(stack.client)
    assert staging.is_relative_to(stack.settings.home)
    assert stat.S_IMODE(staging.stat().st_mode) == 0o700

    used: list[Path] = []
    real = tempfile.NamedTemporaryFile

    def recording(*args: Any, **kwargs: Any) -> Any:
        f = real(*args, **kwargs)
        used.append(Path(f.name))
        return f

    monkeypatch.setattr(store.tempfile, "NamedTemporaryFile", recording)
    tenant = await stack.tenant(f"staging-{uuid.uuid4().hex[:6]}")
    wire = WIRES["astralog"]
    assert (await post(stack, stack.url, wire.path, wire.body("staged", 3), wire.headers(tenant.key)))[
        0
    ] == 200
    assert await stack.wait_rows(tenant.project, 3) == 3
    assert used and all(p.parent == staging and not p.exists() for p in used)

    leftover = staging / "insert-crashed.jsonl"  # as a worker killed mid-insert leaves it
    leftover.write_text('{"body": "tenant data"}\n')
    store.clear_staging(stack.client)
    assert list(staging.iterdir()) == []
    assert stat.S_IMODE(staging.stat().st_mode) == 0o700


@pytest.mark.integration
def test_a_large_insert_is_one_part(stack: Stack) -> None:
    """More rows than one insert block (1,048,576 by default) still land as one part, so a crash
    can never store half a message."""
    table = f"one_part_{uuid.uuid4().hex[:8]}"
    stack.client.command(f"CREATE TABLE {table} (n UInt64) ENGINE = MergeTree ORDER BY n")
    try:
        stack.client.command(f"SYSTEM STOP MERGES {table}")
        rows = 1_300_000
        data = [
            b"".join(b'{"n":%d}\n' % i for i in range(start, min(start + 100_000, rows)))
            for start in range(0, rows, 100_000)
        ]
        store.insert_select(
            stack.client,
            table,
            ["n"],
            lambda source: f"SELECT n FROM {source}",
            "n UInt64",
            data,
            f"one-part-{table}",
            {},
            {},
        )
        parts = stack.query(
            "SELECT count(), sum(rows) FROM system.parts WHERE table = {t:String} AND active", t=table
        )
        assert parts == [(1, rows)]
    finally:
        stack.client.command(f"DROP TABLE IF EXISTS {table}")
