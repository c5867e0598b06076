"""`millrace status`: what `millrace run`/`up` is running, and whether each part is ready.

The processes come from the supervisor's state file (pid, start, restarts, last exit);
readiness is asked of each now: the broker serves metadata, the worker's /internal/health
and the gateway's /ready answer 200. Kafka is asked for the worker group's committed
offsets against each raw partition's end (the lag: logs acknowledged, not yet stored) and
for the number of records in the dead-letter topic.

Exit status: 0 when every process runs and is ready and Kafka answered, 1 when something
is not, 3 when Millrace is not running at all (the LSB convention for `status`).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from millrace.config import Settings
from millrace.kafka.topics import admin_client, client_options
from ops.broker import LocalCluster, process_exited
from ops.runner import http_ok, log_file
from ops.supervisor import STATE_FILE, read_state

NOT_READY, NOT_RUNNING = 1, 3
KAFKA_TIMEOUT_S = 10


@dataclass
class ProcessStatus:
    name: str
    pid: int | None
    running: bool
    ready: bool
    uptime_s: float | None
    restarts: int
    last_exit: str


@dataclass
class KafkaStatus:
    reachable: bool
    error: str = ""
    lag: dict[int, int] = field(default_factory=dict)  # raw-topic partition -> records not committed
    dead_letters: int | None = None


@dataclass
class Status:
    running: bool
    runner_pid: int | None = None
    base_url: str = ""
    log_file: str = ""
    processes: list[ProcessStatus] = field(default_factory=list)
    kafka: KafkaStatus | None = None
    left_behind: dict[str, int] = field(default_factory=dict)  # by a runner that was killed

    @property
    def healthy(self) -> bool:
        return (
            self.running
            and all(p.running and p.ready for p in self.processes)
            and self.kafka is not None
            and self.kafka.reachable
        )

    @property
    def exit_code(self) -> int:
        return 0 if self.healthy else NOT_RUNNING if not self.running else NOT_READY


def _ready(name: str, settings: Settings) -> bool:
    if name.startswith("broker"):
        return LocalCluster(settings).node(name).serves_metadata()
    if name == "worker":
        return http_ok(f"{settings.worker_query_url}/internal/health")
    if name == "alerts":
        # Without a port of its own, running is ready (it retries the store by itself).
        return not settings.alerts_port or http_ok(f"http://127.0.0.1:{settings.alerts_port}/internal/health")
    # Gateways share the port: its /ready answers for whichever the kernel picked.
    return http_ok(f"http://127.0.0.1:{settings.port}/ready")


async def kafka_status(settings: Settings) -> KafkaStatus:
    """Lag per raw partition of the workers' group, and records in the dead-letter topic."""
    try:
        return await asyncio.wait_for(_kafka_status(settings), KAFKA_TIMEOUT_S)
    except Exception as exc:  # any failure to ask is "not reachable", said with its reason
        return KafkaStatus(reachable=False, error=f"{type(exc).__name__}: {exc}".rstrip(": "))


async def _kafka_status(settings: Settings) -> KafkaStatus:
    async with admin_client(settings) as admin:
        described: list[dict[str, Any]] = await admin.describe_topics([settings.topic, settings.dlq_topic])
        committed: dict[TopicPartition, Any] = await admin.list_consumer_group_offsets(
            settings.consumer_group
        )
    partitions = {
        t["topic"]: sorted(p["partition"] for p in t["partitions"]) for t in described if t["error_code"] == 0
    }
    raw = [TopicPartition(settings.topic, p) for p in partitions.get(settings.topic, [])]
    dlq = [TopicPartition(settings.dlq_topic, p) for p in partitions.get(settings.dlq_topic, [])]
    consumer = AIOKafkaConsumer(**client_options(settings), group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        ends = await consumer.end_offsets(raw + dlq) if raw or dlq else {}
        starts = await consumer.beginning_offsets(raw + dlq) if raw or dlq else {}
    finally:
        await consumer.stop()
    lag = {}
    for tp in raw:
        done = committed.get(tp)
        # No commit yet: everything still in the partition is waiting.
        position = done.offset if done is not None and done.offset >= 0 else starts[tp]
        lag[tp.partition] = max(0, ends[tp] - position)
    return KafkaStatus(
        reachable=True, lag=lag, dead_letters=sum(ends[tp] - starts[tp] for tp in dlq) if dlq else 0
    )


def collect(settings: Settings) -> Status:
    state = read_state(settings.run_dir / STATE_FILE)
    runner_pid = state.get("runner_pid") if state else None
    if state is None or not isinstance(runner_pid, int):
        return Status(running=False)
    if process_exited(runner_pid):
        alive = {
            e["name"]: e["pid"]
            for e in state.get("processes", [])
            if isinstance(e.get("pid"), int) and not process_exited(e["pid"])
        }
        return Status(running=False, runner_pid=runner_pid, left_behind=alive)
    now = time.time()
    processes = []
    for entry in state.get("processes", []):
        pid = entry.get("pid")
        running = isinstance(pid, int) and not process_exited(pid)
        processes.append(
            ProcessStatus(
                name=entry["name"],
                pid=pid,
                running=running,
                ready=running and _ready(entry["name"], settings),
                uptime_s=round(now - entry["started_at"], 1) if running else None,
                restarts=int(entry.get("restarts", 0)),
                last_exit=str(entry.get("last_exit", "")),
            )
        )
    return Status(
        running=True,
        runner_pid=runner_pid,
        base_url=str(state.get("base_url", "")),
        log_file=str(state.get("log_file", log_file(settings))),
        processes=processes,
        kafka=asyncio.run(kafka_status(settings)),
    )


def _duration(seconds: float | None) -> str:
    """The two largest units: `3d4h`, `5m12s`, `7s`."""
    if seconds is None:
        return "-"
    s = int(seconds)
    days, s = divmod(s, 86_400)
    hours, s = divmod(s, 3600)
    minutes, s = divmod(s, 60)
    units = [(days, "d"), (hours, "h"), (minutes, "m"), (s, "s")]
    first = next(i for i, (value, _) in enumerate(units) if value or i == len(units) - 1)
    return "".join(f"{value}{unit}" for value, unit in units[first : first + 2])


def render(status: Status, settings: Settings) -> str:
    if not status.running:
        text = f"Millrace is not running (no live runner in {settings.run_dir}); `make up` starts it."
        if status.left_behind:
            left = ", ".join(f"{name} (pid {pid})" for name, pid in status.left_behind.items())
            text += f"\nIts runner (pid {status.runner_pid}) is gone but left {left}: `make down` stops them."
        return text
    lines = [
        f"Millrace: runner pid {status.runner_pid}, {status.base_url}, logs in {status.log_file}",
        f"{'process':<12} {'pid':>8} {'uptime':>8} {'restarts':>8}  {'ready':<6} last exit",
    ]
    for p in status.processes:
        ready = "yes" if p.ready else "no" if p.running else "down"
        pid = str(p.pid) if p.pid is not None else "-"
        uptime = _duration(p.uptime_s)
        lines.append(f"{p.name:<12} {pid:>8} {uptime:>8} {p.restarts:>8}  {ready:<6} {p.last_exit or '-'}")
    kafka = status.kafka
    if kafka is None or not kafka.reachable:
        lines.append(f"kafka: not reachable at {settings.bootstrap} ({kafka.error if kafka else '?'})")
    else:
        per_partition = ", ".join(f"p{p}={n}" for p, n in sorted(kafka.lag.items())) or "no partitions"
        lines.append(
            f"consumer lag ({settings.consumer_group} on {settings.topic}): "
            f"{sum(kafka.lag.values())} ({per_partition})"
        )
        lines.append(f"dead letters ({settings.dlq_topic}): {kafka.dead_letters}")
    lines.append("all ready" if status.healthy else "NOT READY")
    return "\n".join(lines)


def to_json(status: Status) -> bytes:
    out = asdict(status)
    out["healthy"] = status.healthy
    return orjson.dumps(out, option=orjson.OPT_NON_STR_KEYS | orjson.OPT_INDENT_2)
