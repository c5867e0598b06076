"""The project-managed local Kafka brokers: KRaft nodes, each broker and controller in one JVM.

One node by default; MILLRACE_KAFKA_BROKERS=3 starts three (a combined-mode quorum of three
voters: every node is a controller too, so any one of them may fail; docs/operations.md says
why not dedicated controllers). Node n listens for clients on MILLRACE_KAFKA_PORT + 2(n-1) and
for its controller on the port above.

The jars come from Maven Central through deploy/kafka/pom.xml, which pins the version;
everything else lives under <MILLRACE_HOME>/kafka:

    lib/      the broker's runtime jars, plus a marker recording which POM fetched them
    config/   server.properties and log4j2.yaml, rewritten on every start
    data/     the KRaft metadata log and the topic partitions (formatted once)
    logs/     broker.log: the JVM's stdout and stderr
    cluster.id
    credentials.json  the SASL passwords, generated at the first start (0600)

Three nodes live apart from the single one (another quorum, other replicas), in
cluster-3/ (its cluster.id and ACL marker) with config/, data/ and logs/ under
cluster-3/node-<n>/; lib/ and credentials.json are shared.

Only authenticated clients get in (audit F2): the client listener takes SASL/SCRAM-SHA-512
only, the controller listener SASL/PLAIN with a password in the (private) config, and the
StandardAuthorizer lets nobody without an ACL do anything. Two principals: `admin` (the
broker and controller themselves, a super user) and `millrace` (every Millrace client,
through `millrace.kafka.topics.client_options`, with ACLs on topics, groups and
transactional ids). Their SCRAM credentials are written into the metadata log when the
storage is formatted; the ACLs are added once, at the first start, with Kafka's AclCommand.

The JVM runs in its own session, so a terminal's Ctrl-C reaches only whoever started it,
which then stops the broker last (after the workers have committed), with `stop()`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import fcntl
import hashlib
import json
import os
import secrets
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import structlog

from millrace.config import Settings
from millrace.kafka.topics import (
    LOCAL_CLIENT_USER,
    LOCAL_MECHANISM,
    local_credentials_file,
    local_min_insync,
    wait_for_kafka,
)
from millrace.keys import write_secret

log = structlog.get_logger()

DEPLOY_DIR = Path(__file__).resolve().parents[1] / "deploy" / "kafka"
POM = DEPLOY_DIR / "pom.xml"
LOG4J_CONFIG = DEPLOY_DIR / "log4j2.yaml"

MAIN_CLASS = "kafka.Kafka"
STORAGE_TOOL = "kafka.tools.StorageTool"  # what bin/kafka-storage.sh runs; lives in kafka_2.13
ACL_TOOL = "org.apache.kafka.tools.AclCommand"  # bin/kafka-acls.sh; in kafka-tools
ADMIN_USER = "admin"  # the broker's own principal (inter-broker and controller): a super user
ACLS_MARKER = "acls.added"  # beside data/, removed whenever data/ is formatted afresh
# A node of three gets a smaller heap: three JVMs share the machine with the pipeline itself.
HEAP_OPTS = {1: ("-Xms256m", "-Xmx768m"), 3: ("-Xms128m", "-Xmx384m")}
JVM_OPTS = (
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    # The quick JIT (C1) only. On a 2-core box shared with the pipeline, C2's compiler thread
    # took half the broker's CPU for minutes after each start (4.5 of 8.9 CPU s in a 40 s
    # bench) while C1's code moves the bytes as cheaply: broker 2.1 -> 1.1 us/log, +5% landed
    # (docs/performance.md, "The broker's JIT").
    "-XX:TieredStopAtLevel=1",
    # A broker that ran out of heap should die and say so, not limp on.
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
)
FETCH_MARKER = ".millrace-fetched"
PRIVATE_UMASK = 0o077  # files the broker creates (log segments, metadata) are its user's alone
LOG_ROTATE_BYTES = 10 * 1024 * 1024
TAIL_LINES = 40


class BrokerError(RuntimeError):
    """The local broker could not be fetched, started or stopped; the message says why."""


def pinned_kafka_version(pom: Path = POM) -> str:
    """The `kafka.version` property of the POM: the version the broker is pinned to."""
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    node = ET.parse(pom).getroot().find("m:properties/m:kafka.version", ns)
    if node is None or not (node.text or "").strip():
        raise BrokerError(f"{pom} has no <kafka.version> property")
    return (node.text or "").strip()


def answers_api_versions(host: str, port: int, timeout_s: float = 2.0) -> bool:
    """The broker at host:port answers an ApiVersions request without error.

    ApiVersions is the one request a SASL listener serves before authentication, so this
    probe needs no credentials. A raw request over a blocking socket rather than aiokafka:
    `start()` is synchronous and may be called from code that already runs an event loop.
    The broker processes requests on its client listener only once it has caught up with
    the metadata log and been unfenced, so an answer means clients can use it.
    """
    client_id = b"millrace-probe"
    # Header v1: api_key=18 (ApiVersions), api_version=0, correlation_id, client_id; no body.
    request = struct.pack(">hhih", 18, 0, 1, len(client_id)) + client_id
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as sock:
            sock.settimeout(timeout_s)
            sock.sendall(struct.pack(">i", len(request)) + request)
            (size,) = struct.unpack(">i", _recv_exact(sock, 4))
            if not 6 <= size <= 1 << 20:
                return False
            payload = _recv_exact(sock, size)
        correlation_id, error_code = struct.unpack_from(">ih", payload)
        return bool(correlation_id == 1 and error_code == 0)
    except (OSError, struct.error):
        return False


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("connection closed mid-response")
        buf += chunk
    return bytes(buf)


def port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # Like the JVM's server sockets, so a port in TIME_WAIT after our own stop counts as free.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def _cmdline(pid: int) -> list[str] | None:
    """The process's argv, [] for a zombie, None where /proc is not available."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return [] if Path("/proc/self").exists() else None
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def process_exited(pid: int) -> bool:
    """The process is gone or a zombie. An empty argv alone does not say so: a process on its
    way out releases its memory (and argv) before it can be reaped, and may still hold ports."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        if Path("/proc/self").exists():
            return True
        try:  # no /proc here: all we can ask is whether the pid exists
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            pass
        return False
    except OSError:
        return False
    state = stat.rpartition(")")[2].split()[:1]  # the field after the (command name)
    if state != ["Z"]:
        return state == ["X"]
    # A zombie main thread alone is not the end: the JVM's other threads may still be tearing
    # down (holding its ports), and until they are gone the process cannot be reaped.
    try:
        return os.listdir(f"/proc/{pid}/task") in ([], [str(pid)])
    except FileNotFoundError:
        return True
    except OSError:
        return False


def _new_cluster_id() -> str:
    """A Kafka cluster id: a random UUID in URL-safe base64, as `kafka-storage random-uuid` prints."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cid.startswith("-"):  # Kafka avoids these too: they read as a CLI flag
            return cid


def broker_name(node: int) -> str:
    """The supervisor's name for local node `node`: broker, broker-2, broker-3."""
    return "broker" if node == 1 else f"broker-{node}"


class LocalBroker:
    """Local KRaft node `node` (1-based) of MILLRACE_KAFKA_BROKERS: broker on
    localhost:kafka_port + 2(node-1), its controller on the port above."""

    def __init__(self, settings: Settings, node: int = 1) -> None:
        if not 1 <= node <= settings.kafka_brokers:
            raise ValueError(f"node {node} is not one of the {settings.kafka_brokers} local brokers")
        self.settings = settings
        self.node, self.count = node, settings.kafka_brokers
        self.name = broker_name(node)
        self.root = settings.home / "kafka"
        self.lib_dir = self.root / "lib"
        self.cluster_dir = self.root if self.count == 1 else self.root / f"cluster-{self.count}"
        node_dir = self.cluster_dir if self.count == 1 else self.cluster_dir / f"node-{node}"
        self.data_dir = node_dir / "data"
        self.config_dir = node_dir / "config"
        self.logs_dir = node_dir / "logs"
        self.log_file = self.logs_dir / "broker.log"
        self.server_properties = self.config_dir / "server.properties"
        self.pid_file = settings.run_dir / ("kafka.pid" if node == 1 else f"kafka-{node}.pid")
        self.port, self.controller_port = settings.local_ports(node)
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_offset = 0

    # -- fetch -------------------------------------------------------------------------------

    def _expected_marker(self) -> str:
        digest = hashlib.sha256(POM.read_bytes()).hexdigest()
        return f"kafka {pinned_kafka_version()}\npom-sha256 {digest}\n"

    def is_fetched(self) -> bool:
        marker = self.lib_dir / FETCH_MARKER
        return marker.is_file() and marker.read_text() == self._expected_marker()

    def fetch(self) -> None:
        """Copy the pinned broker's runtime jars into lib/; a no-op (no Maven) once done."""
        if not POM.is_file():
            raise BrokerError(f"{POM} is missing: the local broker is fetched from that Maven POM")
        if self.is_fetched():
            return
        mvn = shutil.which("mvn")
        if mvn is None:
            raise BrokerError("Maven (mvn) is needed to fetch the local Kafka broker; install it")
        self.root.mkdir(parents=True, exist_ok=True)
        with self._lock(".fetch.lock"):
            if self.is_fetched():  # another process fetched while we waited
                return
            version = pinned_kafka_version()
            staging = self.root / "lib.partial"
            shutil.rmtree(staging, ignore_errors=True)
            log.info("kafka_fetch", version=version, into=str(self.lib_dir))
            started = time.monotonic()
            cmd = [
                mvn,
                "-B",
                "-q",
                "-Dstyle.color=never",
                "-f",
                str(POM),
                "dependency:copy-dependencies",
                f"-DoutputDirectory={staging}",
                "-DincludeScope=runtime",
            ]
            try:
                done = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False)
            except subprocess.TimeoutExpired:
                raise BrokerError(
                    "Maven did not finish fetching the Kafka broker within 15 minutes"
                ) from None
            if done.returncode != 0:
                output = "\n".join((done.stdout + done.stderr).strip().splitlines()[-TAIL_LINES:])
                raise BrokerError(f"fetching Kafka {version} with Maven failed:\n{output}")
            if not (staging / f"kafka_2.13-{version}.jar").is_file():
                raise BrokerError(f"Maven ran but kafka_2.13-{version}.jar is not in {staging}")
            # Marker last, then swap whole: a fetch interrupted halfway never looks complete.
            (staging / FETCH_MARKER).write_text(self._expected_marker())
            shutil.rmtree(self.lib_dir, ignore_errors=True)
            staging.rename(self.lib_dir)
            log.info("kafka_fetched", version=version, seconds=round(time.monotonic() - started, 1))

    # -- state -------------------------------------------------------------------------------

    def pid(self) -> int | None:
        """The pid of this home's broker if it is alive, else None."""
        if self._proc is not None and self._proc.poll() is None:
            return self._proc.pid
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if self._is_our_broker(pid) else None

    def is_running(self) -> bool:
        return self.pid() is not None

    def poll(self) -> int | None:
        """None while the node runs; once it ended, its exit status (negative: the signal), or 1
        for a node this object did not start (found running): only its parent learns how it ended."""
        if self._proc is not None:
            return self._proc.poll()
        return None if self.is_running() else 1

    def serves_metadata(self, timeout_s: float = 2.0) -> bool:
        return answers_api_versions("localhost", self.port, timeout_s)

    def _is_our_broker(self, pid: int) -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
        args = _cmdline(pid)
        if args is None:  # no /proc: trust the pid file
            return True
        # Guards against a recycled pid; a zombie has an empty argv and so is not running.
        return MAIN_CLASS in args and str(self.server_properties) in args

    # -- start -------------------------------------------------------------------------------

    def start(self, timeout_s: float = 90) -> None:
        """Start the node (formatting storage on first use); return once Millrace's clients can
        use it. A node of three needs the others up too: `LocalCluster.start` launches them all."""
        self.launch()
        self.wait_started(timeout_s)

    def launch(self) -> int:
        """Start the JVM (formatting storage on first use) and return its pid without waiting
        for it to serve: the supervisor restarts a node this way and goes on watching the others."""
        if (pid := self.pid()) is not None:
            if self._proc is None or self._proc.pid != pid:  # not ours: say so
                log.info("kafka_already_running", node=self.node, pid=pid, bootstrap=self.settings.bootstrap)
            return pid
        self.pid_file.unlink(missing_ok=True)  # stale: its process is gone
        for port in (self.port, self.controller_port):
            if port_in_use(port):
                raise BrokerError(
                    f"port {port} is already in use by another process; local broker {self.node} needs "
                    f"{self.port} and {self.controller_port}: set MILLRACE_KAFKA_PORT to a free port"
                )
        java = self._java()
        self.fetch()
        for d in (self.data_dir, self.config_dir, self.logs_dir, self.settings.run_dir):
            d.mkdir(parents=True, exist_ok=True)
        credentials = self._credentials()
        self._write_config(credentials)
        self._format_storage(java, credentials)
        self._restrict_access()  # last: config and cluster.id were just written with our umask

        if self.log_file.exists() and self.log_file.stat().st_size > LOG_ROTATE_BYTES:
            self.log_file.replace(self.log_file.with_suffix(".log.1"))
        cmd = [
            java,
            *HEAP_OPTS.get(self.count, HEAP_OPTS[3]),
            *JVM_OPTS,
            f"-Dlog4j2.configurationFile={self.config_dir / 'log4j2.yaml'}",
            "-cp",
            f"{self.lib_dir}/*",  # the JVM expands the wildcard itself; no shell involved
            MAIN_CLASS,
            str(self.server_properties),
        ]
        # 0600 from creation: the broker log names topics and clients.
        fd = os.open(self.log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "ab") as out:
            out.write(f"\n=== millrace: starting Kafka broker at {time.strftime('%FT%T%z')} ===\n".encode())
            out.flush()
            self._log_offset = out.tell()
            self._proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.root,
                start_new_session=True,  # own process group: stop() signals the group
                umask=PRIVATE_UMASK,
            )
        self.pid_file.write_text(f"{self._proc.pid}\n")
        log.info("kafka_starting", node=self.node, pid=self._proc.pid, port=self.port)
        return self._proc.pid

    def wait_started(self, timeout_s: float = 90) -> None:
        """After `launch` (of every node): until it serves metadata, the client principal has its
        ACLs (added once per cluster) and sees this node in the cluster. Stops it on failure."""
        started = time.monotonic()
        try:
            self.wait_ready(timeout_s, log_offset=self._log_offset)
            self.add_acls()
            self._wait_usable(max(10.0, timeout_s - (time.monotonic() - started)))
        except BaseException:
            self.stop()  # leave no half-started broker behind
            raise
        seconds = round(time.monotonic() - started, 1)
        log.info("kafka_started", node=self.node, pid=self.pid(), seconds=seconds)

    def wait_ready(self, timeout_s: float = 90, *, log_offset: int = 0) -> None:
        """Block until the broker serves metadata; BrokerError if it exits or time runs out."""
        deadline = time.monotonic() + timeout_s
        while True:
            pid = self.pid()
            if pid is None:
                code = self._proc.returncode if self._proc is not None else None
                raise BrokerError(
                    f"the Kafka broker exited during start-up (exit code {code}); "
                    f"last lines of {self.log_file}:\n{self.log_tail(log_offset)}"
                )
            if self.serves_metadata():
                return
            if time.monotonic() > deadline:
                raise BrokerError(
                    f"the Kafka broker (pid {pid}) did not serve metadata on {self.settings.bootstrap} "
                    f"within {timeout_s:.0f}s; last lines of {self.log_file}:\n{self.log_tail(log_offset)}"
                )
            time.sleep(0.2)

    def _wait_usable(self, timeout_s: float) -> None:
        """Until Millrace's own principal sees this broker in the cluster's metadata: logged in,
        authorized, and the broker unfenced (the unauthenticated probe cannot tell the last)."""
        failed: list[BaseException] = []

        def probe() -> None:
            try:
                asyncio.run(wait_for_kafka(self.settings, timeout_s, node_id=self.node))
            except BaseException as exc:
                failed.append(exc)

        # Its own thread and event loop: start() may be called where a loop already runs.
        thread = threading.Thread(target=probe, name="kafka-ready", daemon=True)
        thread.start()
        thread.join()
        if failed:
            raise BrokerError(f"the Kafka broker is up but Millrace's clients cannot use it: {failed[0]}")

    def log_tail(self, offset: int = 0, lines: int = TAIL_LINES) -> str:
        try:
            with self.log_file.open("rb") as f:
                f.seek(offset)
                text = f.read().decode(errors="replace")
        except OSError:
            return "(no broker log)"
        return "\n".join(text.strip().splitlines()[-lines:]) or "(the broker log is empty)"

    def _java(self) -> str:
        java_home = os.environ.get("JAVA_HOME")
        java = str(Path(java_home) / "bin" / "java") if java_home else shutil.which("java")
        if not java or not Path(java).is_file():
            raise BrokerError(
                "Java 17+ is needed to run the local Kafka broker; install a JDK or set JAVA_HOME"
            )
        return java

    def _restrict_access(self) -> None:
        """Only our user may read the home: the broker holds every tenant's raw envelopes and the
        key records. The home itself is made 0700 (nothing under it is reachable by others then),
        and the broker's own tree 0700/0600 in case the home is loosened later; what the broker
        writes from now on is private by its umask."""
        self.settings.home.chmod(0o700)
        for path in (self.root, *self.root.rglob("*")):
            # Another node may be running and removing its own files meanwhile.
            with contextlib.suppress(FileNotFoundError):
                if path.is_symlink():
                    continue
                path.chmod(0o700 if path.is_dir() else 0o600)

    def _credentials(self) -> dict[str, str]:
        """The principals' passwords: generated once, kept 0600 from the first byte."""
        path = local_credentials_file(self.settings)
        try:
            known = json.loads(path.read_text())
        except FileNotFoundError:
            known = None
        except (OSError, ValueError) as exc:
            raise BrokerError(
                f"{path} is unreadable ({exc}); remove it together with {self.data_dir}"
            ) from None
        users = (ADMIN_USER, LOCAL_CLIENT_USER)
        if isinstance(known, dict) and all(isinstance(known.get(u), str) and known[u] for u in users):
            return {u: known[u] for u in users}
        if (self.data_dir / "meta.properties").exists():
            # The SCRAM credentials can only be bootstrapped when the storage is formatted.
            raise BrokerError(
                f"the broker's data in {self.data_dir} was formatted without SASL credentials "
                f"(before Millrace required them) or {path} was lost; stop Millrace and remove "
                f"{self.data_dir} (its unconsumed messages are lost) to start afresh"
            )
        # URL-safe letters only: no quote, comma or bracket to escape in JAAS or --add-scram.
        fresh = {u: secrets.token_urlsafe(24) for u in users}
        write_secret(path, json.dumps(fresh) + "\n")
        return fresh

    def _write_config(self, credentials: dict[str, str]) -> None:
        port, cport = self.port, self.controller_port
        admin = credentials[ADMIN_USER]
        scram = LOCAL_MECHANISM.lower()
        voters = ",".join(
            f"{n}@localhost:{self.settings.local_ports(n)[1]}" for n in range(1, self.count + 1)
        )
        # Every replica on every node (internal topics too); an acks=all write needs
        # min.insync.replicas of them: 2 of 3, so one node may be down without a refusal.
        rf, min_isr = self.count, local_min_insync(self.settings)
        # The file holds the admin password: private from its first byte, like the credentials.
        write_secret(
            self.server_properties,
            "# Written by ops.broker on every start: edits here are overwritten.\n"
            "process.roles=broker,controller\n"
            f"node.id={self.node}\n"
            f"controller.quorum.voters={voters}\n"
            f"listeners=CLIENT://localhost:{port},CONTROLLER://localhost:{cport}\n"
            f"advertised.listeners=CLIENT://localhost:{port}\n"
            "listener.security.protocol.map=CLIENT:SASL_PLAINTEXT,CONTROLLER:SASL_PLAINTEXT\n"
            "controller.listener.names=CONTROLLER\n"
            "inter.broker.listener.name=CLIENT\n"
            # Clients: SCRAM (credentials in the metadata log, bootstrapped at format time).
            # The controller cannot use SCRAM (it must authenticate before reading that log):
            # PLAIN with the admin password in this private file.
            f"sasl.mechanism.inter.broker.protocol={LOCAL_MECHANISM}\n"
            "sasl.mechanism.controller.protocol=PLAIN\n"
            f"listener.name.client.sasl.enabled.mechanisms={LOCAL_MECHANISM}\n"
            f"listener.name.client.{scram}.sasl.jaas.config="
            "org.apache.kafka.common.security.scram.ScramLoginModule required "
            f'username="{ADMIN_USER}" password="{admin}";\n'
            "listener.name.controller.sasl.enabled.mechanisms=PLAIN\n"
            "listener.name.controller.plain.sasl.jaas.config="
            "org.apache.kafka.common.security.plain.PlainLoginModule required "
            f'username="{ADMIN_USER}" password="{admin}" user_{ADMIN_USER}="{admin}";\n'
            # Nothing is allowed without an ACL, except to the broker's own principal.
            "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer\n"
            f"super.users=User:{ADMIN_USER}\n"
            "allow.everyone.if.no.acl.found=false\n"
            f"log.dirs={self.data_dir}\n"
            f"offsets.topic.replication.factor={rf}\n"
            f"transaction.state.log.replication.factor={rf}\n"
            f"transaction.state.log.min.isr={min_isr}\n"
            f"share.coordinator.state.topic.replication.factor={rf}\n"
            f"share.coordinator.state.topic.min.isr={min_isr}\n"
            f"min.insync.replicas={min_isr}\n"
            # Kafka's default, said out loud: a replica that missed acknowledged writes never leads.
            "unclean.leader.election.enable=false\n"
            # Topics are created on purpose (ensure_topics), never by a typo in a client.
            "auto.create.topics.enable=false\n"
            # The 3 s default only helps many consumers joining at once; it slows every start.
            "group.initial.rebalance.delay.ms=0\n"
            # A node that died stays in every partition's in-sync replicas, holding up each
            # acks=all write, until the controller fences it when its session times out; its
            # restart waits that out too (the old registration must expire). One node keeps
            # Kafka's 9 s: lower, and a GC pause under load could fence the only broker. Of
            # three, a node fenced by mistake only hands its leaderships to the others.
            + (
                "broker.session.timeout.ms=6000\nbroker.heartbeat.interval.ms=1000\n"
                if self.count > 1
                else ""
            ),
        )
        shutil.copyfile(LOG4J_CONFIG, self.config_dir / "log4j2.yaml")

    def add_acls(self) -> None:
        """Once per metadata log (of the cluster, which replicates them): the client principal
        may use every topic, group and transactional id (all of them are Millrace's on these
        brokers); nothing on the cluster itself (an idempotent producer needs only Write on a topic)."""
        marker = self.cluster_dir / ACLS_MARKER
        if marker.exists():
            return
        java, credentials = self._java(), self._credentials()
        admin_config = self.config_dir / "admin.properties"
        write_secret(
            admin_config,
            "security.protocol=SASL_PLAINTEXT\n"
            f"sasl.mechanism={LOCAL_MECHANISM}\n"
            "sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required "
            f'username="{ADMIN_USER}" password="{credentials[ADMIN_USER]}";\n',
        )
        cmd = [
            java,
            "-Xmx128m",
            f"-Dlog4j2.configurationFile={self.config_dir / 'log4j2.yaml'}",
            "-cp",
            f"{self.lib_dir}/*",
            ACL_TOOL,
            "--bootstrap-server",
            f"localhost:{self.port}",
            "--command-config",
            str(admin_config),
            "--add",
            "--allow-principal",
            f"User:{LOCAL_CLIENT_USER}",
            "--operation",
            "All",
            "--topic",
            "*",
            "--group",
            "*",
            "--transactional-id",
            "*",
        ]
        for attempt in range(3):  # a broker just unfenced may still be electing its first leaders
            done = subprocess.run(
                cmd, capture_output=True, text=True, timeout=120, check=False, umask=PRIVATE_UMASK
            )
            if done.returncode == 0:
                break
            log.warning("kafka_acls_retry", attempt=attempt + 1, output=(done.stdout + done.stderr)[-500:])
            time.sleep(2)
        else:
            raise BrokerError(f"adding the broker's ACLs failed:\n{done.stdout}{done.stderr}")
        write_secret(marker, f"User:{LOCAL_CLIENT_USER} All on topics, groups, transactional ids\n")
        log.info("kafka_acls_added", principal=LOCAL_CLIENT_USER)

    def cluster_id(self) -> str:
        """The id every node of this cluster is formatted with: made once, then read."""
        id_file = self.cluster_dir / "cluster.id"
        if id_file.is_file() and id_file.read_text().strip():
            return id_file.read_text().strip()
        self.cluster_dir.mkdir(parents=True, exist_ok=True)
        cluster_id = _new_cluster_id()
        id_file.write_text(cluster_id + "\n")
        return cluster_id

    def _format_storage(self, java: str, credentials: dict[str, str]) -> None:
        """Format KRaft storage once; a data dir with meta.properties is never touched again."""
        if (self.data_dir / "meta.properties").exists():
            return
        cluster_id = self.cluster_id()
        cmd = [
            java,
            "-Xmx256m",
            f"-Dlog4j2.configurationFile={self.config_dir / 'log4j2.yaml'}",
            "-cp",
            f"{self.lib_dir}/*",
            STORAGE_TOOL,
            "format",
            "--cluster-id",
            cluster_id,
            "--config",
            str(self.server_properties),
        ]
        if self.node == 1:  # a fresh metadata log has no ACLs
            (self.cluster_dir / ACLS_MARKER).unlink(missing_ok=True)
        for user, password in credentials.items():
            cmd += ["--add-scram", f"{LOCAL_MECHANISM}=[name={user},password={password}]"]
        done = subprocess.run(
            cmd, capture_output=True, text=True, timeout=120, check=False, umask=PRIVATE_UMASK
        )
        if done.returncode != 0:
            raise BrokerError(
                f"formatting Kafka storage in {self.data_dir} failed:\n{done.stdout}{done.stderr}"
            )
        log.info("kafka_storage_formatted", cluster_id=cluster_id, data_dir=str(self.data_dir))

    # -- stop --------------------------------------------------------------------------------

    def signal_stop(self) -> None:
        """SIGTERM without waiting: the nodes of a cluster are asked together (one left alone
        could not finish its controlled shutdown without a controller quorum)."""
        if (pid := self.pid()) is not None:
            self._signal(pid, signal.SIGTERM)

    def stop(self, timeout_s: float = 30) -> None:
        """SIGTERM the broker's process group, SIGKILL it after timeout_s; idempotent."""
        pid = self.pid()
        if pid is not None:
            log.info("kafka_stopping", node=self.node, pid=pid)
            self._signal(pid, signal.SIGTERM)
            if not self._wait_gone(pid, timeout_s):
                log.warning("kafka_stop_timeout", pid=pid, timeout_s=timeout_s)
                self._signal(pid, signal.SIGKILL)
                if not self._wait_gone(pid, 10):
                    raise BrokerError(f"the Kafka broker (pid {pid}) survived SIGKILL")
            log.info("kafka_stopped", node=self.node, pid=pid)
        if self._proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(1)  # reap, so no zombie is left behind
            self._proc = None
        self.pid_file.unlink(missing_ok=True)

    @staticmethod
    def _signal(pid: int, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            # The group is the JVM's alone when we started it in its own session.
            if os.getpgid(pid) == pid:
                os.killpg(pid, sig)
            else:
                os.kill(pid, sig)

    def _wait_gone(self, pid: int, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.pid == pid:
                if self._proc.poll() is not None:
                    return True
            elif process_exited(pid) or (_cmdline(pid) and not self._is_our_broker(pid)):
                return True  # exited, or the pid already belongs to another program
            time.sleep(0.1)
        return False

    @contextlib.contextmanager
    def _lock(self, name: str) -> Iterator[None]:
        with (self.root / name).open("w") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)


class LocalCluster:
    """All MILLRACE_KAFKA_BROKERS local nodes, started and stopped together."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.nodes = [LocalBroker(settings, n) for n in range(1, settings.kafka_brokers + 1)]

    def node(self, name: str) -> LocalBroker:
        """The node the supervisor calls `name` (broker, broker-2, ...)."""
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(name)

    def fetch(self) -> None:
        self.nodes[0].fetch()  # one lib/ for all

    def start(self, timeout_s: float = 120) -> None:
        """Launch every node, then wait for each: a node of three serves only once a majority
        of the controllers has elected a leader, so none can be waited for alone."""
        try:
            self.launch()
            self.wait_started(timeout_s)
        except BaseException:
            self.stop()
            raise

    def launch(self) -> None:
        """Start every node's JVM (formatting storage on first use), side by side: each format
        is a JVM run of its own. What they share (passwords, cluster id) is made first, once."""
        first = self.nodes[0]
        first.root.mkdir(parents=True, exist_ok=True)
        first._credentials()
        first.cluster_id()
        with ThreadPoolExecutor(len(self.nodes), thread_name_prefix="kafka-launch") as pool:
            list(pool.map(LocalBroker.launch, self.nodes))

    def wait_started(self, timeout_s: float = 120) -> None:
        deadline = time.monotonic() + timeout_s
        for node in self.nodes:
            node.wait_started(max(10.0, deadline - time.monotonic()))

    def is_running(self) -> bool:
        return any(node.is_running() for node in self.nodes)

    def pids(self) -> dict[str, int | None]:
        return {node.name: node.pid() for node in self.nodes}

    def stop(self, timeout_s: float = 30) -> None:
        """SIGTERM every node at once, then wait for each (SIGKILL after timeout_s)."""
        for node in self.nodes:
            with contextlib.suppress(OSError):
                node.signal_stop()
        deadline = time.monotonic() + timeout_s
        for node in self.nodes:
            node.stop(max(1.0, deadline - time.monotonic()))


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m ops.broker", description="Manage the project's local Kafka brokers."
    )
    p.add_argument("action", choices=["fetch", "start", "stop", "status", "run"])
    args = p.parse_args(argv)
    cluster = LocalCluster(Settings.from_env())
    try:
        if args.action == "fetch":
            cluster.fetch()
        elif args.action == "start":
            cluster.fetch()
            cluster.start()
        elif args.action == "stop":
            cluster.stop()
        elif args.action == "run":
            return _run_foreground(cluster)
    except BrokerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if not cluster.is_running():
        print(f"brokers stopped (would listen on {cluster.settings.bootstrap})")
        return 0 if args.action in ("fetch", "stop") else 1
    code = 0
    for node in cluster.nodes:
        pid = node.pid()
        state = "stopped" if pid is None else "serving" if node.serves_metadata() else "not serving yet"
        code |= state != "serving"
        print(f"{node.name} (pid {pid or '-'}) on localhost:{node.port}: {state}")
    return code


def _run_foreground(cluster: LocalCluster) -> int:
    """Start, then stop on SIGINT/SIGTERM; exit 1 if a broker dies by itself."""
    stopping = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    code = 0
    try:
        cluster.fetch()
        cluster.start()
        print(f"Kafka serving on {cluster.settings.bootstrap}; Ctrl-C stops it.", flush=True)
        while not stopping:
            if gone := [node for node in cluster.nodes if not node.is_running()]:
                log.error("kafka_exited", node=gone[0].node, log_tail=gone[0].log_tail(lines=10))
                code = 1
                break
            time.sleep(0.5)
    except BrokerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        code = 1
    finally:
        cluster.stop()
    return code


if __name__ == "__main__":
    sys.exit(main())
