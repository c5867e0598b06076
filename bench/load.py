"""The load generator: one OS process (spawned by bench.run), asyncio on uvloop, answers read by httptools.

It reads the pre-generated bodies (and gzips them if asked) before it reports ready, so
no generation or compression cost is inside the measured loop. Then `connections`
coroutines each keep one request in flight until the deadline; requests already sent
when it passes are awaited and counted. Live counters go to shared memory (the parent
draws acked/s from them every second); the final tally, with a latency histogram,
goes back through a pipe.
"""

from __future__ import annotations

import asyncio
import gzip
import math
import resource
import time
from collections import Counter
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event as EventType
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

import httptools

# Shared counters, one slot per process: [ok requests, acked logs, failed requests, bytes sent].
SLOTS = 4
OK, ACKED, FAILED, SENT = range(SLOTS)

# Latency histogram: log-spaced buckets, 2% wide, so p99 is exact to within 2% at any scale.
_BUCKETS_PER_E = 50


def bucket(seconds: float) -> int:
    return int(math.log(max(seconds, 1e-6) * 1e6) * _BUCKETS_PER_E)


def bucket_ms(index: int) -> float:
    return math.exp((index + 0.5) / _BUCKETS_PER_E) / 1000


def quantile(hist: dict[int, int], q: float) -> float | None:
    """The q-quantile (ms) of a histogram of bucket -> count; None when it is empty."""
    total = sum(hist.values())
    if not total:
        return None
    rank, seen = q * total, 0
    for index in sorted(hist):
        seen += hist[index]
        if seen >= rank:
            return round(bucket_ms(index), 2)
    return round(bucket_ms(max(hist)), 2)


@dataclass(frozen=True, slots=True)
class LoadConfig:
    url: str  # full URL of the ingest endpoint
    headers: dict[str, str]
    bodies_file: str  # bodies split by `separator` (payloads.pool_bytes)
    logs_per_body: int
    connections: int
    duration_s: float
    gzip: bool = False
    index: int = 0  # this process's number: its counter slot and its first body
    rate_rps: float = 0.0  # requests/s this process starts at most (0: as fast as answers come)
    timeout_s: float = 30.0
    separator: bytes = b"\n"  # between bodies in bodies_file (NDJSON bodies hold newlines)


@dataclass(slots=True)
class Tally:
    ok: int = 0
    acked_logs: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    latency: Counter[int] = field(default_factory=Counter)


def _load_bodies(cfg: LoadConfig) -> list[bytes]:
    lines = [line for line in Path(cfg.bodies_file).read_bytes().split(cfg.separator) if line]
    if cfg.gzip:
        lines = [gzip.compress(b, compresslevel=6) for b in lines]
    # Start each process at a different body so several processes do not send in lockstep.
    shift = cfg.index * 7 % len(lines)
    return lines[shift:] + lines[:shift]


class _Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection with one request in flight at a time.

    The requests are written as prepared bytes and the answers read with httptools (the
    llhttp parser uvicorn uses): the load process costs a fraction of an aiohttp client's
    CPU per request, CPU the pipeline it measures shares on a small machine."""

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.answer: asyncio.Future[tuple[int, bytes]] | None = None
        self.retry_after = b""
        self.open = True

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's: not a subclass, the same API

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self.close(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        # An answer that only ends with the connection (no length, not chunked) is counted as
        # failed: Millrace and the peer always send a length.
        self.open = False
        self._settle(exc)

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"retry-after":
            self.retry_after = value

    def on_message_complete(self) -> None:
        answer, self.answer = self.answer, None
        if answer is not None and not answer.done():
            answer.set_result((self.parser.get_status_code(), self.retry_after))
        if not self.parser.should_keep_alive():
            self.close()

    def send(self, request: bytes) -> asyncio.Future[tuple[int, bytes]]:
        """(status, Retry-After) of the answer to `request`, the whole of one HTTP request."""
        assert self.transport is not None
        self.retry_after = b""
        self.answer = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        return self.answer

    def close(self, exc: Exception | None = None) -> None:
        self.open = False
        if self.transport is not None:
            self.transport.close()
        self._settle(exc)

    def _settle(self, exc: Exception | None) -> None:
        """Fail the answer awaited, if any: with `exc`, or as a connection the server closed."""
        answer, self.answer = self.answer, None
        if answer is not None and not answer.done():
            answer.set_exception(exc or ConnectionResetError("the server closed the connection"))


def plain_http(address: str) -> None:
    """ValueError unless `address` is a plain http:// URL: the load generator never speaks TLS
    (the bench measures loopback)."""
    url = urlsplit(address)
    if url.scheme != "http" or not url.netloc:
        raise ValueError(f"the load generator speaks plain http://host:port, not {address!r}")


def prepare(cfg: LoadConfig, bodies: list[bytes]) -> list[bytes]:
    """Each body as the whole HTTP/1.1 request that posts it, prepared before the load starts
    (`plain_http` URLs only)."""
    plain_http(cfg.url)
    url = urlsplit(cfg.url)
    target = (url.path or "/") + ("?" + url.query if url.query else "")
    head = f"POST {target} HTTP/1.1\r\nHost: {url.netloc}\r\n" + "".join(
        f"{name}: {value}\r\n" for name, value in cfg.headers.items()
    )
    return [b"%sContent-Length: %d\r\n\r\n%s" % (head.encode(), len(body), body) for body in bodies]


async def _drive(
    cfg: LoadConfig, bodies: list[bytes], prepared: list[bytes], counters: Any, base: int, tally: Tally
) -> float:
    """`prepared`: each of `bodies` as its whole request (`prepare`)."""
    loop = asyncio.get_running_loop()
    url = urlsplit(cfg.url)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    started = loop.time()
    deadline = started + cfg.duration_s
    # Paced load (--rate): one schedule shared by all connections, so a sustainable rate
    # can be measured with a bounded backlog instead of always overdriving the worker.
    # The schedule never slips, and every request due before the deadline is sent: one the
    # connections were too busy to send on time goes out as soon as one is free, and its
    # latency counts from when it was due, so a stalled gateway shows in p99 instead of
    # silently lowering the offered rate. (perf_counter: uvloop's loop.time() is in whole ms.)
    interval = 1 / cfg.rate_rps if cfg.rate_rps > 0 else 0.0
    pc_deadline = time.perf_counter() + cfg.duration_s
    schedule = [pc_deadline - cfg.duration_s]

    def failed(name: str) -> None:
        tally.statuses[name] += 1
        counters[base + FAILED] += 1

    async def connection(slot: int) -> None:
        i = slot
        conn: _Connection | None = None
        while interval or loop.time() < deadline:
            if interval:
                at = schedule[0]
                schedule[0] = at + interval
                if at >= pc_deadline:
                    break
                now = time.perf_counter()
                if at > now:
                    # On time: timed from when it leaves (the load process's own timer
                    # wake-up is not the pipeline's latency).
                    await asyncio.sleep(at - now)
                    t0 = time.perf_counter()
                else:
                    t0 = at  # was due while every connection was busy
            else:
                t0 = time.perf_counter()
            n = i % len(prepared)
            i += cfg.connections
            try:
                if conn is None or not conn.open:
                    connecting = loop.create_connection(_Connection, host, port)
                    _, opened = await asyncio.wait_for(connecting, cfg.timeout_s)
                    conn = opened
                status, retry = await asyncio.wait_for(conn.send(prepared[n]), cfg.timeout_s)
            except (OSError, TimeoutError, httptools.HttpParserError) as exc:
                failed(type(exc).__name__)
                if conn is not None:
                    conn.close()
                await asyncio.sleep(0.05)
                continue
            elapsed = time.perf_counter() - t0
            counters[base + SENT] += len(bodies[n])
            if 200 <= status < 300:
                tally.ok += 1
                tally.acked_logs += cfg.logs_per_body
                tally.latency[bucket(elapsed)] += 1
                counters[base + OK] += 1
                counters[base + ACKED] += cfg.logs_per_body
            else:
                failed(str(status))
                # 429/503 ask for a pause; a load generator that ignores it only measures its own retries.
                await asyncio.sleep(min(float(retry), 1.0) if retry.isdigit() else 0.05)
        if conn is not None:
            conn.close()

    await asyncio.gather(*(connection(s) for s in range(cfg.connections)))
    return loop.time() - started


def main(cfg: LoadConfig, counters: Any, ready: EventType, go: EventType, out: Connection) -> None:
    """Process entry point: prepare, signal ready, wait for go, drive, send the tally back."""
    import uvloop

    from millrace.gc_tuning import tune_gc

    bodies = _load_bodies(cfg)
    prepared = prepare(cfg, bodies)
    tune_gc()  # the load shares the machine: as light as the gateway it drives
    ready.set()
    go.wait()
    usage0 = resource.getrusage(resource.RUSAGE_SELF)
    tally = Tally()
    elapsed = uvloop.run(_drive(cfg, bodies, prepared, counters, cfg.index * SLOTS, tally))
    usage1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (usage1.ru_utime - usage0.ru_utime) + (usage1.ru_stime - usage0.ru_stime)
    out.send(
        {
            "index": cfg.index,
            "elapsed_s": elapsed,
            "ok_requests": tally.ok,
            "acked_logs": tally.acked_logs,
            "failed": dict(tally.statuses),
            "latency_hist": dict(tally.latency),
            "cpu_s": cpu,
            "peak_rss_mb": usage1.ru_maxrss / 1024,
        }
    )
    out.close()
