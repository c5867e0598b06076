"""Explorer speed: N synthetic logs (bench.gql_bench's rows), a Millrace of its own, and the
page in Debian's Chromium, timed from inside the page.

    .venv/bin/python -m bench.explorer_bench --rows 10000000

The rows are loaded into a fresh embedded engine in a child process (chDB: one engine per
data path per process), then `millrace up` starts broker, worker and gateway on that data
with ports of its own. Timed: the page's own read batches over HTTP (results + histogram of
the last hour, then its facets), and in the browser the time from pressing Sign in (or
Enter in the query box) until the rows and the histogram are on screen, and until the
facets are. Not a timed test: this prints what this machine did, with its load average.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from bench.procs import Pipeline, free_port

CHROMIUM = "/usr/bin/chromium"
# Headless Chromium as the explorer tests (tests/explorer) and this bench run it.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Marks set by the page's own DOM changes, read back with page.evaluate (no eval under the CSP).
_TIMER = """
window.__t = {};
document.addEventListener('submit', () => { window.__t = {submit: performance.now()}; }, true);
addEventListener('DOMContentLoaded', () => {
  const since = () => performance.now() - window.__t.submit;
  new MutationObserver(() => { if (window.__t.submit && !window.__t.rows) window.__t.rows = since(); })
    .observe(document.getElementById('summary'), {childList: true, characterData: true, subtree: true});
  new MutationObserver(() => { if (window.__t.submit && !window.__t.facets) window.__t.facets = since(); })
    .observe(document.getElementById('facets'), {childList: true});
});
"""
SEARCHES = ("severity:error service:svc-3", "timeout", "region:eu -severity:info")


def load_rows(home: str, rows: int, hours: int) -> None:
    """In this (child) process: the rows into a fresh engine at `home`, merged as after a while."""
    from bench.gql_bench import load
    from millrace import store
    from millrace.config import Settings

    client = store.connect(Settings.from_env({"MILLRACE_HOME": home}))
    store.migrate(client)
    seconds = load(client, rows, hours, 1_000_000)
    client.command("OPTIMIZE TABLE logs FINAL")
    client.close()
    print(f"loaded {rows:,} rows in {seconds:.1f} s")


def iso(ms: float) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def post(url: str, key: str, body: Any) -> tuple[float, Any]:
    request = urllib.request.Request(
        url, data=orjson.dumps(body), headers={"Authorization": f"Bearer {key}"}, method="POST"
    )
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=60) as resp:
        answer = orjson.loads(resp.read())
    return (time.perf_counter() - started) * 1000, answer


def api_timings(base: str, key: str, runs: int) -> None:
    """The batches the page sends after sign-in, for the last hour, as the page words them."""
    now = time.time() * 1000
    head = f"since:{iso(now - 3600e3)} until:{iso(now)}"
    facets = ("level", "service", "environment", "orderId", "region", "duration_ms")
    batches = {
        "results + histogram": [head, f"{head} | count by bin(timestamp, 1m), level | limit 10000"],
        "facets (8 values of 6 fields)": [f"{head} | count by {f} | top 8" for f in facets],
    }
    print(f"{'batch (last hour)':<32} {'cold ms':>8} {'median ms':>10} {'max ms':>8}")
    for name, queries in batches.items():
        times = []
        for _ in range(runs):
            ms, answer = post(f"{base}/v1/gql", key, {"queries": queries})
            assert all(a["status"] == "ok" for a in answer), answer
            times.append(ms)
        warm = times[1:] or times
        print(f"{name:<32} {times[0]:>8.0f} {statistics.median(warm):>10.0f} {max(warm):>8.0f}")


async def browser_timings(base: str, key: str, runs: int) -> None:
    from playwright.async_api import async_playwright

    signed_in: list[tuple[float, float]] = []
    searched: list[float] = []
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        for _ in range(runs):
            context = await browser.new_context(viewport={"width": 1280, "height": 800})
            page = await context.new_page()
            await page.add_init_script(_TIMER)
            await page.goto(base + "/")
            await page.get_by_label("Read key", exact=True).fill(key)
            await page.get_by_role("button", name="Sign in").click()
            await page.locator("#facets section").first.wait_for(timeout=60_000)
            marks = await page.evaluate("window.__t")
            signed_in.append((marks["rows"], marks["facets"]))
            for q in SEARCHES:
                await page.locator("#q").fill(q)
                await page.locator("#q").press("Enter")
                await page.wait_for_timeout(100)
                for _ in range(600):
                    marks = await page.evaluate("window.__t")
                    if "rows" in marks and "facets" in marks:
                        break
                    await page.wait_for_timeout(50)
                searched.append(marks["rows"])
            await context.close()
        await browser.close()
    rows = [r for r, _ in signed_in]
    print(
        f"sign-in -> rows and histogram on screen: median {statistics.median(rows):.0f} ms,"
        f" max {max(rows):.0f} ms ({len(rows)} runs)"
    )
    print(f"sign-in -> facets on screen: median {statistics.median(f for _, f in signed_in):.0f} ms")
    print(
        f"a new search -> rows and histogram: median {statistics.median(searched):.0f} ms,"
        f" max {max(searched):.0f} ms ({', '.join(SEARCHES)})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--hours", type=int, default=24, help="spread the rows over this many hours")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--load-only", metavar="HOME", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.load_only:
        load_rows(args.load_only, args.rows, args.hours)
        return
    if not Path(CHROMIUM).is_file():
        sys.exit(f"{CHROMIUM} is missing: `make chromium` installs Debian's chromium")
    home = tempfile.mkdtemp(prefix="millrace-explorer-bench-")
    cmd = [sys.executable, "-m", "bench.explorer_bench", "--load-only", home]
    subprocess.run([*cmd, "--rows", str(args.rows), "--hours", str(args.hours)], check=True)
    taken: set[int] = set()
    ports = []
    for pair in (False, True, False):
        ports.append(free_port(pair=pair, taken=taken))
        taken.update({ports[-1], ports[-1] + 1})
    pipeline = Pipeline(Path(home), ports[0], ports[1], ports[2])
    try:
        pipeline.up()
        key = pipeline.create_key("bench")
        deadline = time.monotonic() + 30
        while True:
            try:
                post(f"{pipeline.url}/v1/gql", key, {"queries": ["count"]})
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.25)
        print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
        api_timings(pipeline.url, key, args.runs)
        asyncio.run(browser_timings(pipeline.url, key, args.runs))
        print(f"load average {os.getloadavg()[0]:.1f} after")
    finally:
        pipeline.down()
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
