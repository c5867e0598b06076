"""Alerts under `millrace up` (issue 20): the evaluator as the runner starts and supervises it.

A module of its own: this test blocks the event loop for about a minute (it drives
separate processes), which the module-scoped gateways of tests/test_alerts.py must not sit
through.
"""

from __future__ import annotations

import http.server
import re
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from alerts.webhook import signature
from tests.conftest import free_port
from tests.test_alerts import errors_rule
from tests.test_cli_run import http as cli_http
from tests.test_cli_run import kill, millrace, up_env, wait_healed


class ThreadReceiver(http.server.ThreadingHTTPServer):
    """A webhook receiver for processes outside the test's event loop."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        received = self.bodies

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                assert self.headers["X-Millrace-Signature"] == signature("s3cret", body)
                received.append(orjson.loads(body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hook"

    def states(self) -> list[str]:
        return [b["state"] for b in self.bodies]


def test_millrace_up_evaluates_alerts_and_a_killed_evaluator_repeats_nothing(tmp_path: Path) -> None:
    """Under `millrace up`: a rule fires a signed webhook; the evaluator is SIGKILLed mid-firing,
    the supervisor restarts it, and the restarted one (once Kafka hands it the rules) resolves the
    alert without a second firing event."""
    alerts_port = free_port()
    env = up_env(
        tmp_path / "home", MILLRACE_ALERT_ALLOW_PRIVATE_TARGETS="true", MILLRACE_ALERTS_PORT=str(alerts_port)
    )
    port = int(env["MILLRACE_PORT"])
    receiver = ThreadReceiver()
    up = millrace(env, "up")
    try:
        assert up.returncode == 0, up.stderr + up.stdout
        found = re.search(r"API key \(project 'dev', all scopes\): (\S+)", up.stdout)
        assert found, up.stdout
        base, auth = f"http://127.0.0.1:{port}", {"Authorization": f"Bearer {found[1]}"}
        # The one evaluator owns every partition of the alerts topic (its health port says so).
        deadline = time.monotonic() + 30
        while True:
            try:
                status, body = cli_http("GET", f"http://127.0.0.1:{alerts_port}/internal/health")
            except OSError as exc:  # not listening yet: it opens once it joined the group
                status, body = 0, str(exc).encode()
            if status == 200 and len(orjson.loads(body)["partitions"]) == 8:
                break
            assert time.monotonic() < deadline, (status, body)
            time.sleep(0.3)
        status, body = cli_http("POST", base + "/v1/alerts", orjson.dumps(errors_rule(receiver.url)), auth)
        assert status == 201, body
        # Stamped 40 s ago: over the threshold now, out of the 1-minute window 20 s from now.
        when = (datetime.now(UTC) - timedelta(seconds=40)).isoformat()
        batch = [{"severity": "error", "message": "Payment failed", "timestamp": when}] * 11
        status, body = cli_http("POST", base + "/v1/logs", orjson.dumps({"batch": batch}), auth)
        assert status == 202, body
        deadline = time.monotonic() + 30
        while "firing" not in receiver.states():
            assert time.monotonic() < deadline, "no firing webhook"
            time.sleep(0.2)

        kill(env, "alerts")
        wait_healed(env, "alerts", 1)
        deadline = time.monotonic() + 60
        while "resolved" not in receiver.states():
            assert time.monotonic() < deadline, f"no resolved webhook: {receiver.states()}"
            time.sleep(0.2)
        q = orjson.dumps({"q": "from:alert_events | last 1h"})
        status, body = cli_http("POST", base + "/v1/gql/query", q, auth)
        assert status == 200, body
        events = orjson.loads(body)["data"]["results"]
        assert [(e["state"], e["previous_state"]) for e in events] == [
            ("resolved", "firing"),
            ("firing", "ok"),
        ]
        # At least once: a webhook may repeat, but only with the same event id.
        assert {b["id"] for b in receiver.bodies if b["state"] == "firing"} == {events[1]["event_id"]}
    finally:
        down = millrace(env, "down")
        receiver.shutdown()
    assert down.returncode == 0, down.stderr
