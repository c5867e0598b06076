"""`millrace`: one command for every process and chore. `millrace <command> --help` for each."""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from millrace import keys, log
from millrace.config import CONFIG_ERROR_EXIT, ConfigError, Settings, describe


def _gateway(settings: Settings, args: argparse.Namespace) -> int:
    from gateway.server import serve

    serve(settings)
    return 0


def _worker(settings: Settings, args: argparse.Namespace) -> int:
    from workers.server import serve

    try:
        serve(settings)
    except ConfigError as exc:  # a setting the store cannot honour (MILLRACE_DEFER_SKIP_INDEXES)
        print(f"configuration error: {exc}", file=sys.stderr)
        return CONFIG_ERROR_EXIT
    return 0


def _alerts(settings: Settings, args: argparse.Namespace) -> int:
    from alerts.evaluator import serve

    serve(settings)
    return 0


def _migrate(settings: Settings, args: argparse.Namespace) -> int:
    from millrace import store

    client = store.connect(settings)
    applied = store.migrate(client, settings.clickhouse_cluster)
    print(f"applied {len(applied)} migration(s)" + (f": {', '.join(applied)}" if applied else ""))
    return 0


def _run(settings: Settings, args: argparse.Namespace) -> int:
    from ops import runner

    return runner.run(settings)


def _up(settings: Settings, args: argparse.Namespace) -> int:
    from ops import runner

    return runner.up(settings)


def _down(settings: Settings, args: argparse.Namespace) -> int:
    from ops import runner

    return runner.down(settings)


def _status(settings: Settings, args: argparse.Namespace) -> int:
    from ops import status

    found = status.collect(settings)
    if args.json:
        sys.stdout.buffer.write(status.to_json(found) + b"\n")
    else:
        print(status.render(found, settings))
    return found.exit_code


def _keys_create(settings: Settings, args: argparse.Namespace) -> int:
    try:
        # Absent: every scope; given but blank ("," or " "): an error, never every scope.
        scopes = keys.parse_scopes(args.scopes) if args.scopes is not None else frozenset(keys.ALL_SCOPES)
        limits = {
            keys.LIMIT_REQUESTS_PER_S: args.requests_per_s,
            keys.LIMIT_LOGS_PER_S: args.logs_per_s,
            keys.LIMIT_BURST_S: args.burst_s,
        }
        record, token = asyncio.run(keys.create(settings, args.project, scopes, args.name, limits))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    scopes_text = ",".join(sorted(record.scopes))
    print(f"created key {record.key_id} for project {record.project} with scopes {scopes_text}")
    if record.limits:
        print("rate limits: " + ", ".join(f"{k}={v:g}" for k, v in sorted(record.limits.items())))
    print("store it now: it is shown only once")
    print(token)
    return 0


def _keys_list(settings: Settings, args: argparse.Namespace) -> int:
    ring = asyncio.run(keys.load(settings))
    print(f"{'key id':<14} {'project':<24} {'scopes':<36} {'state':<8} name")
    for k in ring.all():
        state = "revoked" if k.revoked else "active"
        print(f"{k.key_id:<14} {k.project:<24} {','.join(sorted(k.scopes)):<36} {state:<8} {k.name}")
    return 0


def _keys_revoke(settings: Settings, args: argparse.Namespace) -> int:
    try:
        record = asyncio.run(keys.revoke(settings, args.key_id))
    except KeyError:
        print(f"error: no key with id {args.key_id}", file=sys.stderr)
        return 1
    print(f"revoked key {record.key_id} of project {record.project}")
    return 0


def _topics(settings: Settings, args: argparse.Namespace) -> int:
    from millrace.kafka import topics

    asyncio.run(topics.ensure_topics(settings))
    for name, partitions in asyncio.run(topics.describe(settings)).items():
        print(f"{name}: {partitions} partition(s)")
    return 0


def _broker(settings: Settings, args: argparse.Namespace) -> int:
    from ops.broker import LocalCluster

    cluster = LocalCluster(settings)
    if args.action == "fetch":
        cluster.fetch()
    elif args.action == "start":
        cluster.fetch()
        cluster.start()
    elif args.action == "stop":
        cluster.stop()
    print(f"broker {'running' if cluster.is_running() else 'stopped'} on {settings.bootstrap}")
    return 0


def _dlq_list(settings: Settings, args: argparse.Namespace) -> int:
    from aiokafka.errors import KafkaError

    from ops import dlq

    try:
        found, markers = asyncio.run(
            dlq.list_dead_letters(
                settings,
                limit=args.limit,
                code=args.code,
                from_offset=args.from_offset,
                partition=args.partition,
            )
        )
    except (KafkaError, TimeoutError) as exc:
        print(f"error: reading {settings.dlq_topic} failed: {exc!r}", file=sys.stderr)
        return 1
    print(dlq.HEADER_ROW)
    for dead in found:
        print(dlq.format_row(dead, markers.get(dead.marker_key)))
    return 0


def _dlq_replay(settings: Settings, args: argparse.Namespace) -> int:
    from aiokafka.errors import KafkaError

    from ops import dlq

    def show(item: dlq.Replayed) -> None:
        print(dlq.format_replayed(item), flush=True)

    try:
        result = asyncio.run(
            dlq.replay(
                settings,
                code=args.code,
                from_offset=args.from_offset,
                partition=args.partition,
                dry_run=args.dry_run,
                on_replayed=show,
            )
        )
    except (KafkaError, TimeoutError) as exc:
        print(f"error: replay stopped: {exc!r} (what was replayed is marked; run it again)", file=sys.stderr)
        return 1
    verb = "would replay" if args.dry_run else "replayed"
    print(
        f"{verb} {len(result.replayed)} dead letter(s) onto {settings.topic}; "
        f"{result.already_replayed} skipped as replayed before"
    )
    return 0


def _config(settings: Settings, args: argparse.Namespace) -> int:
    for env, default, doc in describe():
        print(f"{env}={default!s:<40} # {doc}")
    return 0


class Console(io.TextIOBase):
    """A stdout/stderr that survives its reader going away.

    `millrace run | tee run.log` and Ctrl-C: tee dies first, and the runner's next write
    (its shutdown log lines) would raise BrokenPipeError half-way through stopping the
    children, leaving the broker behind. Once a write fails, output goes nowhere and the
    shutdown carries on.
    """

    def __init__(self, stream: TextIO) -> None:
        self.stream: TextIO | None = stream

    def write(self, text: str) -> int:
        if self.stream is not None:
            try:
                self.stream.write(text)
                self.stream.flush()
            except (OSError, ValueError):
                self._lose()
        return len(text)

    def flush(self) -> None:
        if self.stream is not None:
            try:
                self.stream.flush()
            except (OSError, ValueError):
                self._lose()

    def isatty(self) -> bool:
        return self.stream is not None and self.stream.isatty()

    def _lose(self) -> None:
        stream, self.stream = self.stream, None
        # The interpreter flushes the real stream at exit: point its fd at /dev/null so that
        # last flush cannot fail (and print a traceback nobody reads) either.
        try:
            fd = stream.fileno() if stream is not None else -1
            devnull = os.open(os.devnull, os.O_WRONLY)
            if fd >= 0:
                os.dup2(devnull, fd)
            os.close(devnull)
        except (OSError, ValueError):
            pass

    @property
    def buffer(self) -> Any:  # structlog's BytesLogger wants one; the console never uses it
        return getattr(self.stream, "buffer", None)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="millrace",
        description="Millrace log ingestion. Settings come from environment variables (`millrace config`).",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="command")

    def add(
        name: str, fn: Callable[[Settings, argparse.Namespace], int], help_: str
    ) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help_, description=help_)
        sp.set_defaults(fn=fn)
        return sp

    add("run", _run, "run broker, worker and gateway in the foreground (Ctrl-C stops all)")
    add("up", _up, "run everything in the background; returns when the gateway is ready")
    add("down", _down, "stop what `millrace up` started")
    status_p = add(
        "status",
        _status,
        "each process of `millrace run`/`up` (pid, uptime, restarts, ready), consumer lag, dead letters; "
        "exit 1 when something is not ready, 3 when Millrace is not running",
    )
    status_p.add_argument("--json", action="store_true", help="print the same as one JSON object")
    add("gateway", _gateway, "run one gateway process")
    add("worker", _worker, "run one worker process (owns the embedded ClickHouse engine in chdb mode)")
    add("alerts", _alerts, "run the alert evaluator (rules at their interval, events, webhooks)")
    add("migrate", _migrate, "apply the ClickHouse migrations in schemas/migrations (idempotent)")
    add("topics", _topics, "create Millrace's Kafka topics if missing and list them")
    add("config", _config, "list every setting with its default")
    broker = add("broker", _broker, "manage the project's local Kafka broker")
    broker.add_argument("action", choices=["fetch", "start", "stop", "status"])

    keys_p = sub.add_parser("keys", help="create, list and revoke API keys", description="API keys")
    keys_sub = keys_p.add_subparsers(dest="keys_command", required=True, metavar="action")
    create_help = "create a key; prints it once, as the last line"
    create = keys_sub.add_parser("create", help=create_help, description=create_help)
    create.add_argument("--project", required=True, help="project the key belongs to")
    create.add_argument(
        "--scopes", default=None, help=f"comma-separated subset of {','.join(keys.ALL_SCOPES)} (default: all)"
    )
    create.add_argument("--name", default="", help="a label for the key")
    for flag, what in (
        ("--requests-per-s", "requests/s (default MILLRACE_RATE_REQUESTS_PER_S)"),
        ("--logs-per-s", "records/s (default MILLRACE_RATE_LOGS_PER_S)"),
        ("--burst-s", "seconds of those rates a burst may use (default MILLRACE_RATE_BURST_S)"),
    ):
        create.add_argument(flag, type=float, default=None, help=f"this key's own limit of {what}")
    create.set_defaults(fn=_keys_create)
    list_help = "list keys (never their secrets)"
    keys_sub.add_parser("list", help=list_help, description=list_help).set_defaults(fn=_keys_list)
    revoke_help = "revoke a key by id; every gateway refuses it within about a second"
    revoke = keys_sub.add_parser("revoke", help=revoke_help, description=revoke_help)
    revoke.add_argument("key_id", help="the key id shown by `keys create` and `keys list`")
    revoke.set_defaults(fn=_keys_revoke)

    dlq_p = sub.add_parser("dlq", help="list and replay dead letters", description="Dead letters")
    dlq_sub = dlq_p.add_subparsers(dest="dlq_command", required=True, metavar="action")
    dlq_list = dlq_sub.add_parser("list", help="show dead letters (reads without a consumer group)")
    dlq_list.add_argument("--limit", type=int, default=100, help="show at most this many (default 100)")
    dlq_list.set_defaults(fn=_dlq_list)
    dlq_replay = dlq_sub.add_parser(
        "replay", help="re-send dead letters not replayed before onto the raw topic, after a fix"
    )
    dlq_replay.add_argument(
        "--dry-run", action="store_true", help="show what would be replayed; send nothing"
    )
    dlq_replay.set_defaults(fn=_dlq_replay)
    for action in (dlq_list, dlq_replay):
        action.add_argument("--code", default=None, help="only dead letters with this code")
        action.add_argument(
            "--from-offset", type=int, default=0, help="start at this offset in each dead-letter partition"
        )
        action.add_argument("--partition", type=int, default=None, help="only this dead-letter partition")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return CONFIG_ERROR_EXIT
    fmt = settings.log_format
    chores = ("run", "up", "down", "status", "keys", "migrate", "topics", "config", "broker", "dlq")
    if args.command in chores:
        fmt = "console"  # chores talk to a person; the long-running services log JSON
    if args.command in ("run", "up", "down"):
        # They stop processes: a console that went away must not stop them half-way.
        sys.stdout, sys.stderr = Console(sys.stdout), Console(sys.stderr)
    log.configure(settings.log_level, fmt, process=args.command)
    if args.command in ("worker", "gateway", "alerts"):
        from ops.noise import quiet_kafka_startup

        quiet_kafka_startup()
    elif args.command == "run":
        from ops.noise import quiet_runner_console

        quiet_runner_console()
    result: int = args.fn(settings, args)
    return result


if __name__ == "__main__":
    sys.exit(main())
