"""Locust against a running Millrace, with the bench's own payloads.

    make up                      # the key of project 'dev' is in .millrace/dev-key
    make locust                  # 50 users, 60 s, headless, against http://localhost:8080

or by hand:

    MILLRACE_KEY=$(cat .millrace/dev-key) .venv/bin/locust -f bench/locustfile.py \\
        --headless -u 50 -r 10 -t 60s --host http://localhost:8080

Environment: MILLRACE_KEY (required), MILLRACE_BENCH_DIALECT (astralog), MILLRACE_BENCH_BATCH (500
logs per request), MILLRACE_BENCH_POOL (16 distinct bodies, generated once per locust process).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from locust import between, task
from locust.contrib.fasthttp import FastHttpUser

# Locust imports this file by path, so the repository root (for `bench.payloads`) is not on sys.path.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import payloads

DIALECT = payloads.DIALECTS[os.environ.get("MILLRACE_BENCH_DIALECT", "astralog")]
LOGS_PER_BODY = payloads.batch_size(DIALECT, int(os.environ.get("MILLRACE_BENCH_BATCH", "500")))
# Built once at import, not per user: generation cost stays out of the measured requests.
BODIES = payloads.bodies(DIALECT, LOGS_PER_BODY, int(os.environ.get("MILLRACE_BENCH_POOL", "16")))


class IngestUser(FastHttpUser):
    wait_time = between(0, 0)  # back to back: the server's pace sets the rate

    def on_start(self) -> None:
        key = os.environ.get("MILLRACE_KEY", "")
        if not key:
            raise RuntimeError("set MILLRACE_KEY to an API key with logs:write (make up: .millrace/dev-key)")
        self.headers = payloads.headers(DIALECT, key)
        self.i = 0

    @task
    def ingest(self) -> None:
        body = BODIES[self.i % len(BODIES)]
        self.i += 1
        # Locust annotates `data` as str | dict, but documents and sends bytes as they are.
        self.client.post(
            DIALECT.path,
            data=body,  # type: ignore[arg-type]
            headers=self.headers,
            name=f"{DIALECT.path} x{LOGS_PER_BODY}",
        )
