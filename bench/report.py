"""The bench's outputs: a plain-text table, bench/out/<ts>.json + latest.json, and a PNG chart."""

from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path
from typing import Any

import orjson


def worker_batches(log_file: Path, offset: int = 0) -> dict[str, Any] | None:
    """Insert batches the worker logged (`batch_stored`) after `offset` in the pipeline's log."""
    try:
        with log_file.open("rb") as f:
            f.seek(offset)
            lines = [line for line in f if b'"batch_stored"' in line]
    except OSError:
        return None
    rows = []
    for line in lines:
        try:
            rows.append(int(orjson.loads(line)["rows"]))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            continue
    if not rows:
        return None
    return {"count": len(rows), "mean_rows": round(sum(rows) / len(rows)), "max_rows": max(rows)}


def compare(result: dict[str, Any]) -> dict[str, Any]:
    """Millrace's end-to-end rate as a fraction of the lower baseline."""
    base = result.get("baselines") or {}
    clickhouse = base.get("clickhouse_insert") or {}
    rates = {
        "kafka_produce": (base.get("kafka_produce") or {}).get("logs_per_s"),
        # The faster of the engine's two ways in (columnar rows, or the envelopes' rows, as the worker does).
        "clickhouse_insert": max(
            clickhouse.get("rows_per_s") or 0, (clickhouse.get("engine_rows") or {}).get("rows_per_s") or 0
        ),
    }
    known = {k: v for k, v in rates.items() if v}
    e2e = (result.get("millrace") or {}).get("landed_per_s")
    if not known or not e2e:
        return {"lower": None, "fraction": None}
    lower = min(known, key=lambda k: known[k])
    return {"lower": lower, "lower_logs_per_s": known[lower], "fraction": round(e2e / known[lower], 3)}


def poll_cost(result: dict[str, Any]) -> dict[str, Any] | None:
    """The worker CPU the stats polls cost, from the ClickHouse baseline's cost per row scanned.

    Each poll scans every row of the bench project stored so far, so its cost grows with the
    run; summed over the polls this is what the sampler took from the worker.
    """
    sq = ((result.get("baselines") or {}).get("clickhouse_insert") or {}).get("stats_query") or {}
    polls = ((result.get("timeline") or {}).get("stats")) or []
    worker = (result.get("processes") or {}).get("worker") or {}
    if not sq.get("rows") or not polls:
        return None
    per_row_s = sq["cpu_ms"] / 1000 / sq["rows"]
    # Polls without the lag (its fields None) cost what a count costs, when that was measured.
    count_per_row_s = sq.get("count_only_cpu_ms", sq["cpu_ms"]) / 1000 / sq["rows"]
    cpu = sum(p["landed"] * (per_row_s if p["lag_p50_ms"] is not None else count_per_row_s) for p in polls)
    share = cpu / worker["cpu_s"] if worker.get("cpu_s") else None
    return {
        "polls": len(polls),
        "cpu_s": round(cpu, 1),
        "share_of_worker_cpu": None if share is None else round(share, 3),
    }


def _n(value: Any, digits: int = 1) -> str:
    """Thousands separated; decimals only where a number is small enough for them to matter."""
    if value is None:
        return "n/a"
    if isinstance(value, float) and abs(value) < 100:
        return f"{value:,.{digits}f}"
    return f"{round(value):,}"


def table(result: dict[str, Any]) -> str:
    cfg, m = result["config"], result.get("millrace") or {}
    mach = result["machine"]
    warm = result.get("warmup")
    lines = [
        f"Millrace bench {result['started_at']}  "
        f"({mach['nproc']} cores, {mach['memory_gib']} GiB, {mach['cpu']})",
        f"  {cfg['dialect']}, {cfg['logs_per_request']} logs/request, ~{cfg['avg_log_bytes']} B/log"
        f"{' gzip' if cfg['gzip'] else ''}; {cfg['load_procs']} load process(es) x {cfg['connections']} "
        f"connections; {cfg['duration']:.0f} s"
        + (f", after a {warm['seconds']:.0f} s warm-up (project of its own)" if warm else ""),
        "",
        "Throughput",
        f"  acknowledged (gateway 2xx)    {_n(m.get('acked_per_s')):>10} logs/s   "
        f"{_n(m.get('acked_logs'))} logs in {m.get('ok_requests', 0):,} requests "
        f"over {m.get('load_seconds')} s",
        f"  landed in ClickHouse (e2e)    {_n(m.get('landed_per_s')):>10} logs/s   "
        f"{_n(m.get('landed_logs'))} logs by t={m.get('landed_complete_at_s')} s "
        f"(tail {m.get('tail_seconds')} s after the load)",
        f"  steady, middle 80% of load    {_n(m.get('steady_acked_per_s')):>10} acked/s  "
        f"{_n(m.get('steady_landed_per_s'))} landed/s",
        f"  every acknowledged log landed: {_yes(m.get('all_landed'))}"
        + (f" (landed - acked = {m['landed_extra']:+,})" if m.get("landed_extra") else "")
        + (
            "  MORE rows than acknowledged logs, and no request of unknown outcome: duplicates?"
            if m.get("unexplained_extra")
            else ""
        )
        + (
            f"  ({m['unknown_outcome_requests']:,} requests of unknown outcome: timed out or 5xx)"
            if m.get("unknown_outcome_requests")
            else ""
        ),
        f"  failed requests: {m.get('failed_requests') or 'none'}",
        "",
        "Latency (ms)                     p50        p99        max",
    ]
    rl, lag = m.get("request_latency_ms") or {}, m.get("lag_ms") or {}
    lines.append(
        f"  request, client side     {_n(rl.get('p50')):>10} {_n(rl.get('p99')):>10} {_n(rl.get('max')):>10}"
    )
    readable = m.get("readable_lag_ms") or {}
    lines.append(
        f"  ack->readable, from counts{_n(readable.get('p50')):>9} {_n(readable.get('p99')):>10} "
        f"{_n(readable.get('max')):>10}   (the bench's acked and landed counts, ~1 s resolution)"
    )
    lines.append(
        f"  e2e lag receive->inserted"
        f"{_n(lag.get('p50')):>10} {_n(lag.get('p99')):>10} {_n(lag.get('max')):>10}"
        "   (worker /internal/v1/stats: to the insert's start, not its commit)"
    )
    base = result.get("baselines")
    if base:
        kp, ch, cmp_ = (
            base.get("kafka_produce") or {},
            base.get("clickhouse_insert") or {},
            base.get("comparison") or {},
        )
        lines += ["", "Baselines (same machine, same payloads)"]
        if "error" in kp:
            lines.append(f"  Kafka produce: {kp['error']}")
        else:
            lines.append(
                f"  Kafka produce (ProducerPerformance)  {_n(kp.get('logs_per_s')):>10} logs/s   "
                f"{_n(kp.get('records_per_s'))} records/s, {_n(kp.get('mb_per_s'))} MB/s, "
                f"avg latency {_n(kp.get('avg_latency_ms'))} ms"
            )
        if "error" in ch:
            lines.append(f"  ClickHouse insert: {ch['error'][:300]}")
        else:
            lines.append(
                f"  ClickHouse insert (chDB)             {_n(ch.get('rows_per_s')):>10} rows/s   "
                f"batches of {_n(ch.get('batch_rows'))} rows, {_n(ch.get('cpu_us_per_row'))} CPU us/row"
            )
            parsed = ch.get("engine_rows") or {}
            if parsed:
                lines.append(
                    f"  ClickHouse reading the rows (chDB)   {_n(parsed.get('rows_per_s')):>10} rows/s   "
                    f"batches of {_n(parsed.get('batch_rows'))} rows, "
                    f"{_n(parsed.get('cpu_us_per_row'))} CPU us/row"
                )
            lines.append(
                f"  parse + columns (Python, one core)   "
                f"{_n(ch.get('parse_enrich_logs_per_s_one_core')):>10} logs/s"
                f"   {_n(ch.get('parse_enrich_us_per_log'))} us/log"
            )
            sq = ch.get("stats_query") or {}
            if sq:
                lines.append(
                    f"  one stats poll at {_n(sq.get('rows'))} rows: {_n(sq.get('ms'))} ms, "
                    f"{_n(sq.get('cpu_ms'))} ms CPU (the bench's sampler cost on the worker)"
                )
        if cmp_.get("fraction") is not None:
            lines.append(f"  Millrace e2e / lower baseline ({cmp_['lower']}): {cmp_['fraction'] * 100:.1f}%")
    procs = result.get("processes") or {}
    if procs:
        lines += [
            "",
            "Processes (CPU from the first request until the tail landed, "
            f"{result.get('measure_window_s')} s; 1 CPU s/M logs = 1 us/log)",
            f"  {'process':<14} {'CPU s':>8} {'cores':>6} {'idle':>6} {'CPU s/M logs':>13} "
            f"{'peak RSS MB':>11}",
        ]
        total = {"cpu_s": 0.0, "cores": 0.0, "per_m": 0.0}
        for name, p in procs.items():
            if "error" in p:
                lines.append(f"  {name:<14} {p['error']}")
                continue
            total["cpu_s"] += p.get("cpu_s") or 0
            total["cores"] += p.get("cores") or 0
            total["per_m"] += p.get("cpu_s_per_million_logs") or 0
            lines.append(
                f"  {name:<14} {_n(p.get('cpu_s')):>8} {_n(p.get('cores'), 2):>6} "
                f"{_n(p.get('idle_cores'), 2):>6} {_n(p.get('cpu_s_per_million_logs')):>13} "
                f"{_n(p.get('peak_rss_mb')):>11}"
            )
        all_cpu, all_cores = _n(total["cpu_s"]), _n(total["cores"], 2)
        lines.append(f"  {'all':<14} {all_cpu:>8} {all_cores:>6} {'':>6} {_n(total['per_m']):>13}")
        for name, p in procs.items():
            threads = p.get("threads_cpu_s")
            if threads:
                top = ", ".join(f"{t} {s:.1f}" for t, s in list(threads.items())[:6])
                lines.append(f"  {name} threads (CPU s): {top}")
    pc = m.get("stats_poll_cost_estimate")
    if pc:
        share = pc["share_of_worker_cpu"]
        lines.append(
            f"  stats polls: {pc['polls']}, estimated {pc['cpu_s']} CPU s of the worker's"
            + (f" ({share * 100:.0f}%)" if share is not None else "")
            + " (--stats-interval to poll less)"
        )
    wb = result.get("worker_batches")
    if wb:
        lines.append(
            f"  worker inserts: {wb['count']} batches, mean {wb['mean_rows']:,} rows, max {wb['max_rows']:,}"
        )
    return "\n".join(lines)


def _yes(value: Any) -> str:
    return {True: "yes", False: "NO", None: "unknown (no stats)"}[value]


def write(result: dict[str, Any], out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    stamp = result["started_at"]
    path = out / f"{stamp}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    shutil.copyfile(path, out / "latest.json")
    paths = [path, out / "latest.json"]
    png = out / f"{stamp}.png"
    try:
        chart(result, png)
    except ImportError as exc:  # matplotlib is in the bench extra; the numbers matter more than the picture
        print(f"no chart: {exc}")
    else:
        shutil.copyfile(png, out / "latest.png")
        paths += [png, out / "latest.png"]
        if result.get("sweep_table") or result.get("peer"):
            sweep_png = out / f"{stamp}-sweep.png"
            sweep_chart(
                result.get("sweep_table") or sweep_rows({result["config"]["dialect"]: result}),
                sweep_png,
                result.get("peer"),
            )
            paths.append(sweep_png)
    return paths


def _rates(rows: list[dict[str, Any]], field: str, window_s: float) -> tuple[list[float], list[float]]:
    """Rate of `field` at each sample over the trailing `window_s` (0: since the previous sample)."""
    xs, ys = [], []
    for i in range(1, len(rows)):
        j = i - 1
        while window_s and j > 0 and rows[i]["t"] - rows[j]["t"] < window_s:
            j -= 1
        dt = rows[i]["t"] - rows[j]["t"]
        if dt > 0:
            xs.append(rows[i]["t"])
            ys.append((rows[i][field] - rows[j][field]) / dt)
    return xs, ys


def _delay(ticks: list[dict[str, Any]], stats: list[dict[str, Any]]) -> tuple[list[float], list[float]]:
    """Ack -> landed delay from the counts alone: how long ago had `landed` logs been acknowledged?"""
    xs, ys = [], []
    for s in stats:
        landed = s["landed"]
        if not landed:
            continue
        for a, b in itertools.pairwise(ticks):
            if b["acked"] >= landed:
                span = b["acked"] - a["acked"]
                t_ack = a["t"] + (b["t"] - a["t"]) * ((landed - a["acked"]) / span if span else 1.0)
                xs.append(s["t"])
                ys.append(max(0.0, (s["t"] - t_ack) * 1000))
                break
    return xs, ys


def chart(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ticks = (result.get("timeline") or {}).get("ticks") or []
    stats = (result.get("timeline") or {}).get("stats") or []
    cfg = result["config"]
    fig, (ax1, ax2, ax3) = plt.subplots(3, 1, figsize=(11, 10), sharex=True)
    fig.suptitle(
        f"Millrace bench {result['started_at']}: {cfg['dialect']}, {cfg['logs_per_request']} logs/request, "
        f"{cfg['load_procs']} x {cfg['connections']} connections"
    )
    ax1.plot(*_rates(ticks, "acked", 0), label="acknowledged (gateway 2xx), per second")
    ax1.plot(*_rates(ticks, "acked", 5), label="acknowledged, 5 s average", alpha=0.6)
    ax1.plot(*_rates(stats, "landed", 5), label="landed in ClickHouse, 5 s average")
    cmp_ = (result.get("baselines") or {}).get("comparison") or {}
    if cmp_.get("lower_logs_per_s"):
        ax1.axhline(
            cmp_["lower_logs_per_s"], color="grey", linestyle="--", label=f"lower baseline ({cmp_['lower']})"
        )
    ax1.set_ylabel("logs/s")
    ax1.legend(loc="lower right", fontsize="small")
    ax1.grid(alpha=0.3)

    lagged = [s for s in stats if s["lag_p50_ms"] is not None]
    ax2.plot(
        [s["t"] for s in lagged], [s["lag_p50_ms"] for s in lagged], label="lag p50, since start (worker)"
    )
    ax2.plot(
        [s["t"] for s in lagged], [s["lag_p99_ms"] for s in lagged], label="lag p99, since start (worker)"
    )
    ax2.plot(*_delay(ticks, stats), linestyle=":", label="ack -> landed delay from the counts")
    ax2.set_ylabel("ms")
    ax2.legend(loc="upper left", fontsize="small")
    ax2.grid(alpha=0.3)

    for name in sorted({n for t in ticks for n in t["cpu_s"]}):
        pts = [(t["t"], t["cpu_s"][name]) for t in ticks if t["cpu_s"].get(name) is not None]
        deltas = [(b[0], (b[1] - a[1]) / (b[0] - a[0])) for a, b in itertools.pairwise(pts) if b[0] > a[0]]
        ax3.plot([d[0] for d in deltas], [d[1] for d in deltas], label=name)
    ax3.set_ylabel(f"CPU cores (of {result['machine']['nproc']})")
    ax3.set_xlabel("seconds since the load started (vertical line: load stops)")
    ax3.legend(loc="upper right", ncols=3, fontsize="small")
    ax3.grid(alpha=0.3)
    for ax in (ax1, ax2, ax3):
        ax.axvline(float(cfg["duration"]), color="black", linewidth=0.8, alpha=0.5)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


SWEEP_ROLES = ("worker", "gateway", "kafka")
REFERENCE = "astralog"


def again(reference: str) -> str:
    """The sweep's key for the reference dialect's second run, the sweep's last."""
    return f"{reference} (again)"


def sweep_rows(sweep: dict[str, dict[str, Any]], reference: str = REFERENCE) -> list[dict[str, Any]]:
    """One row per dialect: landed/acked logs/s, CPU µs/log per process and over all of them
    (gateways summed, load generators and the bench left out), whether every acknowledged log
    landed, the ack -> readable p99 and the worker's peak RSS, and landed/s as a ratio to
    the reference dialect's: to the mean of its runs when it ran twice (first and last), so
    a machine that drifts over the sweep moves every ratio less."""
    rows: list[dict[str, Any]] = []
    for dialect, run in sweep.items():
        m, costs = run.get("millrace") or {}, run.get("processes") or {}
        us = {role: (costs.get(role) or {}).get("cpu_us_per_log") for role in SWEEP_ROLES}
        gateways = [c.get("cpu_us_per_log") for n, c in costs.items() if n.startswith("gateway")]
        us["gateway"] = sum(gateways) if gateways and None not in gateways else us["gateway"]
        parts = [us[role] for role in SWEEP_ROLES]
        rows.append(
            {
                "dialect": dialect,
                "landed_per_s": m.get("landed_per_s"),
                "acked_per_s": m.get("acked_per_s"),
                **{f"{role}_us_per_log": us[role] for role in SWEEP_ROLES},
                "all_us_per_log": round(sum(parts), 2) if None not in parts else None,
                "all_landed": m.get("all_landed"),
                "readable_p99_ms": (m.get("readable_lag_ms") or {}).get("p99"),
                "worker_peak_rss_mb": (costs.get("worker") or {}).get("peak_rss_mb"),
            }
        )
    refs = [r["landed_per_s"] for r in rows if r["dialect"] in (reference, again(reference))]
    base = sum(refs) / len(refs) if refs and None not in refs else None
    for row in rows:
        own = row["landed_per_s"]
        row["landed_vs_reference"] = round(own / base, 2) if base and own is not None else None
    return rows


def reference_drift(rows: list[dict[str, Any]], reference: str = REFERENCE) -> str | None:
    """How far the reference's two runs lie apart, when it ran twice."""
    landed = {r["dialect"]: r["landed_per_s"] for r in rows}
    first, last = landed.get(reference), landed.get(again(reference))
    if not first or not last:
        return None
    return (
        f"{reference} landed {_n(first)}/s first and {_n(last)}/s last ({(last - first) / first:+.0%}); "
        "the ratios are to the mean of the two"
    )


def sweep_table(rows: list[dict[str, Any]], reference: str = REFERENCE) -> str:
    head = (
        f"{'dialect':<16} {'landed/s':>10} {'acked/s':>10} {'worker':>7} {'gateway':>8} {'broker':>7} "
        f"{'all':>7} {'all landed':>10} {'readable p99 s':>14} {'worker MB':>9}  landed vs {reference}"
    )
    # The closed loop's readable p99 grows with the backlog when the gateway acknowledges faster
    # than the worker stores (acked/s over landed/s): not a figure of a paced load.
    lines = ["Sweep (CPU in µs/log; readable p99: ack -> readable, a closed loop's backlog included)", head]
    for r in rows:
        landed = {True: "yes", False: "NO"}.get(r.get("all_landed"), "n/a")
        readable = r.get("readable_p99_ms")
        readable_s = None if readable is None else readable / 1000
        lines.append(
            f"{r['dialect']:<16} {_n(r['landed_per_s']):>10} {_n(r['acked_per_s']):>10} "
            f"{_n(r['worker_us_per_log']):>7} {_n(r['gateway_us_per_log']):>8} "
            f"{_n(r['kafka_us_per_log']):>7} {_n(r['all_us_per_log']):>7} {landed:>10} "
            f"{_n(readable_s, 1):>14} {_n(r.get('worker_peak_rss_mb')):>9}  "
            f"{_n(r['landed_vs_reference'], 2)}"
        )
    if drift := reference_drift(rows, reference):
        lines.append(drift)
    return "\n".join(lines)


def peer_table(result: dict[str, Any]) -> str:
    p, own = result["peer"], sweep_rows({result["config"]["dialect"]: result})[0]
    ratio = p.get("millrace_over_peer") or {}
    return "\n".join(
        [
            f"Peer: VictoriaLogs {p['version']} (same logs as NDJSON, same load; no broker, no exactly-once, "
            "no enrichment)",
            f"{'':<14} {'landed/s':>10} {'acked/s':>10} {'CPU µs/log':>11}",
            f"{'millrace':<14} {_n(own['landed_per_s']):>10} {_n(own['acked_per_s']):>10} "
            f"{_n(own['all_us_per_log']):>11}",
            f"{'victorialogs':<14} {_n(p['landed_per_s']):>10} {_n(p['acked_per_s']):>10} "
            f"{_n(p['cpu_us_per_log']):>11}",
            f"{'millrace/peer':<14} {_n(ratio.get('landed_per_s'), 2):>10} {'':>10} "
            f"{_n(ratio.get('cpu_us_per_log'), 2):>11}",
        ]
    )


def sweep_chart(rows: list[dict[str, Any]], path: Path, peer: dict[str, Any] | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if peer:  # one bar of its own: a single process, no per-role split
        rows = [
            *rows,
            {
                "dialect": "victorialogs",
                "acked_per_s": peer.get("acked_per_s"),
                "landed_per_s": peer.get("landed_per_s"),
                "peer_us_per_log": peer.get("cpu_us_per_log"),
            },
        ]
    names = [r["dialect"] for r in rows]
    fig, (rate, cpu) = plt.subplots(1, 2, figsize=(12, 4.5))
    xs = range(len(rows))
    rate.bar([x - 0.2 for x in xs], [r["acked_per_s"] or 0 for r in rows], 0.4, label="acked/s")
    rate.bar([x + 0.2 for x in xs], [r["landed_per_s"] or 0 for r in rows], 0.4, label="landed/s")
    rate.set_xticks(list(xs), names)
    rate.set_ylabel("logs/s")
    rate.legend()
    bottom = [0.0] * len(rows)
    for role in (*SWEEP_ROLES, "peer"):
        heights = [r.get(f"{role}_us_per_log") or 0.0 for r in rows]
        cpu.bar(list(xs), heights, 0.6, bottom=bottom, label="broker" if role == "kafka" else role)
        bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
    cpu.set_xticks(list(xs), names)
    cpu.set_ylabel("CPU µs per log")
    cpu.legend()
    fig.suptitle("Millrace per dialect (one pipeline, a project each)" + (" and its peer" if peer else ""))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
