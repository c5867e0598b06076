"""The bench's own arithmetic and its load generator (the bench itself runs with `make bench`)."""

from __future__ import annotations

import asyncio
import base64
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from google.protobuf import json_format
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from bench import load, payloads, peer
from bench.report import again, sweep_rows, sweep_table
from bench.sampling import readable_lag


def test_readable_lag_weights_each_tick_by_the_logs_it_acknowledged() -> None:
    ticks = [
        {"t": 1.0, "acked": 100},
        {"t": 2.0, "acked": 400},  # 300 logs, readable 1.5 s later
        {"t": 3.0, "acked": 400},  # nothing new: no weight
        {"t": 4.0, "acked": 500},
    ]
    stats = [
        {"t": 1.5, "landed": 0},
        {"t": 2.2, "landed": 100},  # tick 1: 1.2 s
        {"t": 3.5, "landed": 400},  # tick 2: 1.5 s
        {"t": 9.0, "landed": 500},  # tick 4: 5 s
    ]
    lag = readable_lag(ticks, stats)
    assert lag["p50"] == 1500.0  # 100 logs at 1.2 s, 300 at 1.5 s, 100 at 5 s
    assert lag["p99"] == 5000.0 and lag["max"] == 5000.0
    assert lag["logs_not_seen_landed"] == 0


def test_readable_lag_counts_what_never_showed_up_and_handles_nothing() -> None:
    ticks = [{"t": 1.0, "acked": 100}, {"t": 2.0, "acked": 300}]
    lag = readable_lag(ticks, [{"t": 1.1, "landed": 150}])
    assert lag["p50"] == 100.0 and lag["logs_not_seen_landed"] == 200
    empty = readable_lag([], [])
    assert (empty["p50"], empty["p99"], empty["max"], empty["logs_not_seen_landed"]) == (None, None, None, 0)


def _run(landed: float, acked: float, **us: float | None) -> dict[str, object]:
    return {
        "millrace": {"landed_per_s": landed, "acked_per_s": acked},
        "processes": {name: {"cpu_us_per_log": v} for name, v in us.items()},
    }


def test_the_sweep_table_shows_whether_all_landed_the_readable_p99_and_the_worker_rss() -> None:
    run: dict[str, Any] = {
        "millrace": {
            "landed_per_s": 90_000.0,
            "acked_per_s": 120_000.0,
            "all_landed": True,
            "readable_lag_ms": {"p50": 3000.0, "p99": 21_171.0},
        },
        "processes": {
            "worker": {"cpu_us_per_log": 9.0, "peak_rss_mb": 2068.6},
            "gateway": {"cpu_us_per_log": 6.0},
            "kafka": {"cpu_us_per_log": 1.0},
        },
    }
    lost: dict[str, Any] = {
        "millrace": {"landed_per_s": 50_000.0, "acked_per_s": 50_000.0, "all_landed": False},
        "processes": {"worker": {"cpu_us_per_log": 9.0}},
    }
    rows = sweep_rows({"astralog": run, "loki": lost})
    assert (rows[0]["all_landed"], rows[0]["readable_p99_ms"], rows[0]["worker_peak_rss_mb"]) == (
        True,
        21_171.0,
        2068.6,
    )
    astra, loki = sweep_table(rows).splitlines()[2:4]
    assert astra.split()[7:10] == ["yes", "21.2", "2,069"]
    assert loki.split()[7:10] == ["NO", "n/a", "n/a"]


def test_sweep_rows_sum_the_pipeline_processes_and_compare_landed_rates_to_astralog() -> None:
    rows = sweep_rows(
        {
            "astralog": _run(100_000.0, 120_000.0, worker=10.0, gateway=4.0, kafka=3.0, **{"load-0": 1.0}),
            "tg2g": _run(50_000.0, 60_000.0, worker=20.0, gateway=2.5, **{"gateway-2": 2.5}, kafka=3.0),
        }
    )
    astra, tg2g = rows
    assert (astra["all_us_per_log"], astra["landed_vs_reference"]) == (17.0, 1.0)
    assert tg2g["gateway_us_per_log"] == 5.0  # both gateway processes
    assert (tg2g["all_us_per_log"], tg2g["landed_vs_reference"]) == (28.0, 0.5)
    assert "tg2g" in sweep_table(rows) and "landed vs astralog" in sweep_table(rows)


def test_a_sweep_that_ran_astralog_twice_compares_to_the_mean_of_both_and_shows_the_drift() -> None:
    rows = sweep_rows(
        {
            "astralog": _run(100_000.0, 110_000.0, worker=9.0, gateway=8.0, kafka=2.0),
            "otlp": _run(72_000.0, 75_000.0, worker=8.0, gateway=10.0, kafka=2.0),
            again("astralog"): _run(80_000.0, 90_000.0, worker=10.0, gateway=9.0, kafka=2.0),
        }
    )
    ratios = {r["dialect"]: r["landed_vs_reference"] for r in rows}
    assert ratios == {"astralog": 1.11, "otlp": 0.8, "astralog (again)": 0.89}  # to 90,000
    table = sweep_table(rows)
    assert "astralog landed 100,000/s first and 80,000/s last (-20%)" in table
    assert "mean of the two" in table


def test_sweep_rows_leave_what_was_not_measured_unknown() -> None:
    (row,) = sweep_rows({"dynatrace": _run(10.0, 10.0, worker=None, gateway=1.0, kafka=1.0)})
    assert (row["all_us_per_log"], row["landed_vs_reference"]) == (None, None)
    assert "n/a" in sweep_table([row])


def test_the_peer_gets_each_astralog_log_as_one_ndjson_line_with_its_fields_as_sent() -> None:
    body = payloads.bodies(payloads.DIALECTS["astralog"], 3, 1)[0]
    lines = peer.ndjson(body).split(b"\n")
    assert lines[-1] == b"" and len(lines) == 4  # one line per log, each ending in a newline
    assert [orjson.loads(line) for line in lines[:-1]] == orjson.loads(body)["logs"]
    assert peer.DIALECT.path == "/insert/jsonline?_msg_field=message&_time_field=timestamp"


def test_peer_ratios_put_millrace_over_the_peer_and_leave_unknowns_unknown() -> None:
    vl = peer.summary(acked=1_000, landed=800, load_s=1.0, landed_s=2.0, cpu_s=0.004)
    assert (vl["acked_per_s"], vl["landed_per_s"], vl["cpu_us_per_log"]) == (1_000, 400, 5.0)
    assert peer.ratios({"landed_per_s": 200, "all_us_per_log": 20.0}, vl) == {
        "landed_per_s": 0.5,
        "cpu_us_per_log": 4.0,
    }
    assert peer.ratios({"landed_per_s": None, "all_us_per_log": 1.0}, peer.summary(0, 0, 0.0, 0.0, 0.0)) == {
        "landed_per_s": None,
        "cpu_us_per_log": None,
    }


@pytest.mark.parametrize("name", sorted(payloads.DIALECTS))
def test_every_dialects_pool_file_gives_the_load_back_its_bodies_each_accepted_whole(
    name: str, tmp_path: Path
) -> None:
    dialect = payloads.DIALECTS[name]
    bodies = payloads.bodies(dialect, payloads.batch_size(dialect, 20), 3)
    pool = tmp_path / "pool"
    pool.write_bytes(payloads.pool_bytes(dialect, bodies))
    cfg = load.LoadConfig(
        url="http://unused",
        headers={},
        bodies_file=str(pool),
        logs_per_body=20,
        connections=1,
        duration_s=1,
        separator=dialect.separator,
    )
    assert sorted(load._load_bodies(cfg)) == sorted(bodies)
    for body in bodies:
        payloads.check(dialect, body, payloads.batch_size(dialect, 20))  # raises on any refused log


def test_otlp_protobuf_bodies_are_the_otlp_json_requests_in_protobuf(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("bench.payloads.time.time", lambda: 1_796_600_000.0)  # both bodies, the same "now"
    json_body, proto_body = (
        payloads.bodies(payloads.DIALECTS[n], 5, 1)[0] for n in ("otlp", "otlp_protobuf")
    )
    request = ExportLogsServiceRequest.FromString(proto_body)
    assert request == json_format.Parse(json_body, ExportLogsServiceRequest())
    assert sum(len(s.log_records) for r in request.resource_logs for s in r.scope_logs) == 5
    assert payloads.DIALECTS["otlp_protobuf"].content_type == "application/x-protobuf"


def test_es_bulk_bodies_are_ndjson_create_actions_with_ecs_documents() -> None:
    dialect = payloads.DIALECTS["es_bulk"]
    (body,) = payloads.bodies(dialect, 2, 1)
    lines = [orjson.loads(line) for line in body.splitlines()]
    assert body.endswith(b"\n") and len(lines) == 4
    assert lines[0] == lines[2] == {"create": {}}
    assert {"@timestamp", "message", "log", "service", "host"} <= lines[1].keys()
    scheme, _, value = payloads.headers(dialect, "mr_k")["Authorization"].partition(" ")
    assert (scheme, base64.b64decode(value)) == ("ApiKey", b"bench:mr_k")  # id:key, as Filebeat sends it


@pytest.mark.parametrize("name", sorted(payloads.DIALECTS))
def test_micro_answers_each_dialect_as_the_gateway_does(name: str) -> None:
    """bench.micro's answer stage runs the gateway dialect a request of `name` gets: a 2xx in
    the request's encoding, naming every log of the body where the API lists them."""
    from bench.micro import _answer
    from formats import PARSERS, ParseContext

    dialect = payloads.DIALECTS[name]
    body = payloads.bodies(dialect, 20, 1)[0]
    ctx = ParseContext(received_at_ns=time.time_ns(), path=dialect.path, content_type=dialect.content_type)
    parsed = PARSERS[dialect.parser](body, ctx)
    answer = _answer(dialect)
    if dialect.path == "/v1/logs":  # four APIs share it: the answer is the one routing picks
        from aiohttp.test_utils import make_mocked_request

        from gateway.dialects.shared_logs import choose

        request = make_mocked_request("POST", dialect.path, headers=payloads.headers(dialect, "mr_k"))
        assert answer == choose(request, body)[0].success
    response = answer(parsed, ctx.received_at_ns)
    assert 200 <= response.status < 300
    wanted = "application/x-protobuf" if "protobuf" in dialect.content_type else "application/json"
    if response.status != 204:
        assert response.content_type == wanted
    if name == "es_bulk":
        assert len(orjson.loads(response.body)["items"]) == 20


async def _drive_against(
    handler: Any, bodies: list[bytes], seconds: float = 0.6, timeout_s: float = 5
) -> load.Tally:
    """The load generator's loop against a real HTTP server answering with `handler`."""
    app = web.Application()
    app.router.add_post("/in", handler)
    server = TestServer(app)
    await server.start_server()
    try:
        cfg = load.LoadConfig(
            url=f"http://127.0.0.1:{server.port}/in?x=1",
            headers={"Content-Type": "application/json", "Authorization": "Bearer k"},
            bodies_file="unused",
            logs_per_body=3,
            connections=2,
            duration_s=seconds,
            timeout_s=timeout_s,
        )
        tally = load.Tally()
        counters = [0] * load.SLOTS
        await load._drive(cfg, bodies, load.prepare(cfg, bodies), counters, 0, tally)
        assert counters[load.OK] == tally.ok and counters[load.ACKED] == tally.acked_logs
        assert counters[load.FAILED] == sum(tally.statuses.values())
        return tally
    finally:
        await server.close()


async def test_the_load_generator_posts_each_body_whole_and_counts_what_was_acknowledged() -> None:
    bodies = [b'{"n":%d}' % i for i in range(5)]
    seen: list[tuple[bytes, str, str, str]] = []

    async def take(request: web.Request) -> web.Response:
        body = await request.read()
        seen.append((body, request.headers["Authorization"], request.content_type, request.query_string))
        return web.json_response({"ok": True})

    tally = await _drive_against(take, bodies)
    assert tally.ok == len(seen) > 10 and not tally.statuses
    assert tally.acked_logs == 3 * len(seen) and sum(tally.latency.values()) == tally.ok
    assert {body for body, *_ in seen} == set(bodies)
    sent = {(auth, ctype, query) for _, auth, ctype, query in seen}
    assert sent == {("Bearer k", "application/json", "x=1")}


async def test_the_load_generator_counts_refusals_apart_and_reconnects_when_the_server_closes() -> None:
    answered = {"n": 0}

    async def every_third_refused_and_closed(request: web.Request) -> web.Response:
        await request.read()
        answered["n"] += 1
        if answered["n"] % 3 == 0:
            return web.json_response({"busy": True}, status=429, headers={"Retry-After": "0"})
        return web.json_response({"ok": True}, headers={"Connection": "close"})

    tally = await _drive_against(every_third_refused_and_closed, [b"{}"])
    assert tally.statuses["429"] >= 1 and set(tally.statuses) == {"429"}
    assert tally.ok + tally.statuses["429"] == answered["n"] and tally.ok >= 2 * tally.statuses["429"] - 1


async def test_the_load_generator_counts_a_late_answer_and_a_dropped_connection_as_failed() -> None:
    calls = {"n": 0}

    async def late_or_dropped(request: web.Request) -> web.Response:
        await request.read()
        calls["n"] += 1
        if calls["n"] % 2:
            await asyncio.sleep(0.5)  # past the generator's timeout
        else:
            assert request.transport is not None
            request.transport.close()  # the connection dropped before any answer
        return web.json_response({"ok": True})

    tally = await _drive_against(late_or_dropped, [b"{}"], seconds=1.0, timeout_s=0.2)
    assert tally.ok == 0 and tally.acked_logs == 0
    assert tally.statuses["TimeoutError"] >= 1 and tally.statuses["ConnectionResetError"] >= 1
    assert set(tally.statuses) == {"TimeoutError", "ConnectionResetError"}


def test_the_load_generator_refuses_what_it_cannot_speak() -> None:
    cfg = load.LoadConfig(
        url="https://example.test/in",
        headers={},
        bodies_file="unused",
        logs_per_body=1,
        connections=1,
        duration_s=1,
    )
    with pytest.raises(ValueError, match="plain http"):
        load.prepare(cfg, [b"{}"])
    (request,) = load.prepare(replace(cfg, url="http://127.0.0.1:9"), [b"{}"])
    assert request.startswith(b"POST / HTTP/1.1\r\nHost: 127.0.0.1:9\r\n")
    assert request.endswith(b"Content-Length: 2\r\n\r\n{}")
