"""The explorer in a real browser (Debian's Chromium) against the real stack: gateway, Kafka,
worker and the ClickHouse engine. Each test opens a fresh tab, so session storage starts empty."""

from __future__ import annotations

import re
import time
import uuid
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson
import pytest
from playwright.async_api import expect

from millrace import store
from schemas.record import LOG_DEFAULTS
from tests.conftest import Stack, Tenant
from tests.explorer.conftest import LOGS, Tab, ingest

pytestmark = pytest.mark.integration


def only_own_origin(tab: Tab) -> None:
    """Every request went to the gateway, and the console saw no error (a CSP violation is one)."""
    assert tab.requests, "the page made no request"
    # A 401 or 422 the test provoked is logged as "Failed to load resource"; anything else counts.
    assert [e for e in tab.errors if not e.startswith("Failed to load resource")] == []
    assert [u for u in tab.requests if not u.startswith(tab.base + "/")] == []


def key_nowhere_but_the_header(tab: Tab, key: str) -> None:
    assert key not in tab.page.url
    assert [u for u in tab.requests if key in u] == []


async def test_a_wrong_key_says_so_and_stores_nothing(tab: Tab) -> None:
    await tab.sign_in("not-a-key-" + uuid.uuid4().hex)
    await expect(tab.page.locator("#sign-in-error")).to_contain_text("Wrong key")
    assert await tab.page.evaluate("sessionStorage.length") == 0
    assert await tab.page.locator("#explorer").is_hidden()
    only_own_origin(tab)


async def test_a_key_without_the_read_scope_is_refused(tab: Tab, stack: Stack, explored: Tenant) -> None:
    await tab.sign_in(explored.key)  # the all-scopes key reads too
    await expect(tab.page.locator("#rows > li")).to_have_count(len(LOGS))
    write_only = await stack.tenant(f"explorer-w-{uuid.uuid4().hex[:6]}", frozenset({"logs:write"}))
    await tab.page.get_by_role("button", name="Sign out").click()
    await tab.sign_in(write_only.key)
    await expect(tab.page.locator("#sign-in-error")).to_contain_text("data:read")


async def test_sign_in_shows_rows_histogram_and_facets_then_sign_out_clears(
    tab: Tab, explored: Tenant, capfd: pytest.CaptureFixture[str]
) -> None:
    page = tab.page
    await tab.sign_in(explored.read_key)
    await expect(page.locator("#rows > li")).to_have_count(len(LOGS))
    await expect(page.locator("#project")).to_contain_text(explored.project)
    # Newest first: the last log of the batch leads (one request, so equal or later times first).
    times = await page.locator("#rows time").evaluate_all("els => els.map(e => e.dateTime)")
    assert times == sorted(times, reverse=True)
    # The histogram: one bar segment per level present, stacked, six logs in all.
    await expect(page.locator("#histogram-svg rect.f-error")).not_to_have_count(0)
    assert await page.locator("#histogram-svg rect.f-info").count() >= 1
    await expect(page.locator("#legend li")).to_have_text(["debug", "info", "warn", "error"])
    # Facets from the current query.
    services = page.get_by_role("region", name="Services")
    await expect(services.locator("li .v")).to_have_text(["billing", "auth", "web"])
    await expect(services.locator("li .n")).to_have_text(["3", "2", "1"])
    assert await page.evaluate("sessionStorage.getItem('millrace.readKey')") == explored.read_key
    assert await tab.context.cookies() == []
    key_nowhere_but_the_header(tab, explored.read_key)
    await tab.screenshot("explorer")

    await page.get_by_role("button", name="Sign out").click()
    await expect(page.locator("#sign-in")).to_be_visible()
    assert await page.evaluate("sessionStorage.length") == 0
    await page.reload()
    await expect(page.get_by_label("Read key", exact=True)).to_be_visible()
    only_own_origin(tab)
    # Whatever the gateway logged meanwhile (request lines, at debug), the key is in none of it.
    out, err = capfd.readouterr()
    assert explored.read_key not in out + err


async def test_facet_and_field_clicks_filter_and_the_url_keeps_the_view(tab: Tab, explored: Tenant) -> None:
    page = tab.page
    await tab.sign_in(explored.read_key)
    await expect(page.locator("#rows > li")).to_have_count(len(LOGS))
    await (
        page.get_by_role("region", name="Services").get_by_role("button", name="billing", exact=True).click()
    )
    await expect(page.locator("#q")).to_have_value("service:billing")
    await expect(page.locator("#rows > li")).to_have_count(3)
    # Expand a row: every field, attributes too; a value's minus button excludes it.
    row = page.locator("#rows > li", has_text="expired_card")
    await row.locator("button.line").click()
    await expect(row.locator(".fields")).to_contain_text("attributes.orderId")
    await row.get_by_role("button", name="Exclude environment staging").click()
    await expect(page.locator("#q")).to_have_value("service:billing -environment:staging")
    await expect(page.locator("#rows > li")).to_have_count(2)
    await page.locator("#rows > li", has_text="card_declined").locator("button.line").click()
    await page.get_by_role("button", name="Filter by attributes.orderId ord_1").click()
    await expect(page.locator("#rows > li")).to_have_count(1)

    params = parse_qs(urlsplit(page.url).query)
    assert params == {"q": ["service:billing -environment:staging orderId:ord_1"], "range": ["1h"]}
    # A reload (same tab, key still in session storage) restores the view from the URL.
    await page.reload()
    await expect(page.locator("#q")).to_have_value("service:billing -environment:staging orderId:ord_1")
    await expect(page.locator("#rows > li")).to_have_count(1)
    key_nowhere_but_the_header(tab, explored.read_key)
    only_own_origin(tab)


async def test_a_bad_query_shows_the_error_at_its_position(tab: Tab, explored: Tenant) -> None:
    page = tab.page
    await tab.sign_in(explored.read_key)
    await expect(page.locator("#rows > li")).to_have_count(len(LOGS))
    await page.locator("#q").fill("severity:error | count by")
    await page.locator("#q").press("Enter")
    error = page.locator("#query-error")
    await expect(error).to_contain_text("expected a field name after 'by'")
    await expect(error).to_contain_text("at position 25")
    await expect(error.locator("pre")).to_have_text("severity:error | count by ")
    assert await page.locator("#q").get_attribute("aria-invalid") == "true"
    await page.locator("#q").fill("severity:loud")
    await page.locator("#q").press("Enter")
    await expect(error.locator("mark")).to_have_text("l")  # position 9, the value
    only_own_origin(tab)


async def test_autocomplete_suggests_from_the_schema(tab: Tab, explored: Tenant) -> None:
    page = tab.page
    await tab.sign_in(explored.read_key)
    await expect(page.locator("#rows > li")).to_have_count(len(LOGS))
    await page.locator("#q").fill("")
    await page.locator("#q").press_sequentially("severity:")
    options = page.locator("#suggestions [role=option]")
    await expect(options.first).to_be_visible()
    texts = await options.locator(".mono").all_text_contents()
    assert set(texts) == {"debug", "info", "warn", "error"}
    await page.locator("#q").press("ArrowDown")
    await page.locator("#q").press("Enter")
    await expect(page.locator("#q")).to_have_value(f"severity:{texts[0]} ")
    only_own_origin(tab)


async def test_aggregates_render_as_a_table_and_bars(tab: Tab, explored: Tenant) -> None:
    page = tab.page
    await tab.sign_in(explored.read_key)
    await expect(page.locator("#rows > li")).to_have_count(len(LOGS))
    await page.locator("#q").fill("count by service")
    await page.locator("#q").press("Enter")
    table = page.locator("#aggregate table")
    await expect(table.locator("tbody tr")).to_have_count(3)
    await expect(table.locator("tbody tr").first).to_contain_text("billing")
    await expect(table.locator("tbody tr").first.locator("td.num")).to_have_text("3")
    await expect(table.locator("rect")).to_have_count(3)
    assert await page.locator("#rows > li").count() == 0
    only_own_origin(tab)


async def test_histogram_click_zooms_into_a_bucket(tab: Tab, explored: Tenant) -> None:
    page = tab.page
    await tab.sign_in(explored.read_key)
    await expect(page.locator("#rows > li")).to_have_count(len(LOGS))
    bar = page.locator("#histogram-svg rect.f-error").first
    await bar.click()
    await expect(page.locator("#range")).to_have_value("custom")
    await expect(page.locator("#rows > li")).to_have_count(len(LOGS))
    params = parse_qs(urlsplit(page.url).query)
    assert set(params) == {"from", "to"}
    # One 1-minute bucket of the last hour: the custom range spans exactly that.
    span_ms = await page.evaluate(
        "Date.parse(new URL(location).searchParams.get('to'))"
        " - Date.parse(new URL(location).searchParams.get('from'))"
    )
    assert span_ms == 60_000
    await page.get_by_role("button", name="Zoom out").click()
    await expect(page.locator("#rows > li")).to_have_count(len(LOGS))
    only_own_origin(tab)


async def test_live_tail_shows_a_new_log_after_an_ingest(tab: Tab, stack: Stack) -> None:
    page = tab.page
    tailed = await stack.tenant(f"explorer-tail-{uuid.uuid4().hex[:6]}")
    await ingest(stack, tailed, LOGS[:2])
    assert await stack.wait_rows(tailed.project, 2) == 2
    await tab.sign_in(tailed.read_key)
    await expect(page.locator("#rows > li")).to_have_count(2)
    live = page.get_by_role("button", name="Live tail", exact=True)
    await live.click()
    await expect(live).to_have_attribute("aria-pressed", "true")
    await expect(page.locator("#rate")).to_contain_text("logs/s")
    fresh = f"live tail {uuid.uuid4().hex[:8]}"
    await ingest(stack, tailed, [("warn", fresh, {"service": "tail"})])
    await expect(page.locator("#rows > li").first).to_contain_text(fresh, timeout=20_000)
    await expect(page.locator("#rows > li")).to_have_count(3)
    await expect(page.locator("#rate")).not_to_have_text("0.0 logs/s")
    await tab.screenshot("explorer-live")
    # A hidden tab does not poll; shown again, it polls at once.
    await page.evaluate(
        "Object.defineProperty(document, 'hidden', {get: () => true, configurable: true});"
        " document.dispatchEvent(new Event('visibilitychange'))"
    )
    await page.wait_for_timeout(2500)  # a poll in flight when the tab was hidden may finish
    polls = sum(u.endswith("/v1/gql") for u in tab.requests)
    await page.wait_for_timeout(5000)  # two and a half polling intervals
    assert sum(u.endswith("/v1/gql") for u in tab.requests) == polls
    await page.evaluate(
        "Object.defineProperty(document, 'hidden', {get: () => false, configurable: true});"
        " document.dispatchEvent(new Event('visibilitychange'))"
    )
    for _ in range(50):
        if sum(u.endswith("/v1/gql") for u in tab.requests) > polls:
            break
        await page.wait_for_timeout(100)
    assert sum(u.endswith("/v1/gql") for u in tab.requests) > polls
    await page.get_by_role("button", name="Pause", exact=True).click()
    await expect(page.get_by_role("button", name="Resume", exact=True)).to_be_visible()
    await live.click()
    await expect(page.locator("#rate")).to_be_hidden()
    only_own_origin(tab)


async def test_a_narrow_window_still_works(tab: Tab, explored: Tenant) -> None:
    await tab.page.set_viewport_size({"width": 400, "height": 800})
    await tab.sign_in(explored.read_key)
    await expect(tab.page.locator("#rows > li")).to_have_count(len(LOGS))
    width = await tab.page.evaluate("document.documentElement.scrollWidth")
    assert width <= 400
    await tab.screenshot("explorer-narrow")


async def test_load_more_pages_back_without_gaps_or_repeats(tab: Tab, stack: Stack) -> None:
    page = tab.page
    many = await stack.tenant(f"explorer-many-{uuid.uuid4().hex[:6]}")
    await ingest(stack, many, [("info", f"line {i:03d}", {"service": "pager"}) for i in range(130)])
    assert await stack.wait_rows(many.project, 130) == 130
    await tab.sign_in(many.read_key)
    await expect(page.locator("#rows > li")).to_have_count(100)
    await page.get_by_role("button", name="Load more").click()
    await expect(page.locator("#rows > li")).to_have_count(130)
    await expect(page.get_by_role("button", name="Load more")).to_be_hidden()
    messages = await page.locator("#rows .msg").all_text_contents()
    assert sorted(messages) == [f"line {i:03d}" for i in range(130)]
    only_own_origin(tab)


async def test_copy_as_json_and_the_keyboard_alone(tab: Tab, explored: Tenant) -> None:
    page = tab.page
    await tab.context.grant_permissions(["clipboard-read", "clipboard-write"])
    await tab.sign_in(explored.read_key)
    await expect(page.locator("#rows > li")).to_have_count(len(LOGS))
    # Expand a row with the keyboard, copy it, and get the row's JSON back from the clipboard.
    line = page.locator("#rows > li", has_text="card_declined").locator("button.line")
    await line.focus()
    await page.keyboard.press("Enter")
    await expect(line).to_have_attribute("aria-expanded", "true")
    copy = page.locator("#rows > li", has_text="card_declined").locator(".actions button")
    await expect(copy).to_have_text("Copy as JSON")
    await copy.focus()
    await page.keyboard.press("Enter")
    await expect(copy).to_have_text("Copied")
    copied = orjson.loads(await page.evaluate("navigator.clipboard.readText()"))
    assert (copied["message"], copied["level"], copied["attributes"]["orderId"]) == (
        "Payment failed: card_declined",
        "error",
        "ord_1",
    )
    # The histogram: focus, arrows pick a bar (announced), Enter zooms into it. The logs are
    # in one of the last few minutes: step left from the newest bar to theirs.
    await page.locator("#histogram-svg").focus()
    await page.keyboard.press("ArrowRight")
    for _ in range(10):
        if not (await page.locator("#status").text_content() or "").endswith(": 0 logs"):
            break
        await page.keyboard.press("ArrowLeft")
    await expect(page.locator("#status")).to_have_text(re.compile(r": 6 logs$"))
    await page.keyboard.press("Enter")
    await expect(page.locator("#range")).to_have_value("custom")
    await expect(page.locator("#rows > li")).to_have_count(len(LOGS))
    only_own_origin(tab)


async def test_events_are_a_source_too(tab: Tab, stack: Stack) -> None:
    page = tab.page
    shop = await stack.tenant(f"explorer-ev-{uuid.uuid4().hex[:6]}")
    body = {"batch": [{"event": "signup", "distinctId": "u_1", "properties": {"plan": "pro"}}]}
    headers = {"Authorization": f"Bearer {shop.key}", "Content-Type": "application/json"}
    async with stack.session.post(stack.url + "/v1/events", data=orjson.dumps(body), headers=headers) as resp:
        assert resp.status == 202, await resp.read()
    assert await stack.wait_rows(shop.project, 1, table="events") == 1
    await tab.sign_in(shop.read_key)
    await expect(page.locator("#empty")).to_be_visible()
    await page.locator("#source").select_option("events")
    await expect(page.locator("#rows > li")).to_have_count(1)
    await expect(page.locator("#rows .msg")).to_have_text("signup")
    await expect(page.get_by_role("region", name="Events").locator("li .v")).to_have_text(["signup"])
    assert parse_qs(urlsplit(page.url).query)["source"] == ["events"]
    only_own_origin(tab)


async def test_the_histogram_spreads_an_hour_over_minute_buckets(tab: Tab, stack: Stack) -> None:
    """Logs written at known times over the last hour: one bar per minute, stacked by level."""
    page = tab.page
    busy = await stack.tenant(f"explorer-hour-{uuid.uuid4().hex[:6]}")
    now = time.time_ns()
    columns: dict[str, list[Any]] = {name: [] for name in LOG_DEFAULTS}
    services = ("checkout", "billing", "auth", "search")
    messages = ("request served", "cache miss", "upstream timeout", "payment declined")
    minutes = set()
    for i in range(600):
        # 2..56 minutes ago (inside the window whenever the page asks), busier towards the
        # present, with a spike of errors 20 minutes ago.
        minute = 20 if i % 10 == 0 else 2 + int(55 * (i / 600) ** 2)
        minutes.add(minute)
        level = "error" if i % 10 == 0 else ("info", "info", "info", "debug", "warn", "info")[i * 7 % 6]
        row = {
            **LOG_DEFAULTS,
            "project": busy.project,
            "level": level,
            "severity_text": level,
            "message": f"{messages[i % 4]} #{i}",
            "service": services[i % 4],
            "environment": "prod" if i % 5 else "staging",
            "attributes": {"region": ("eu", "us", "ap")[i % 3], "duration_ms": str(i * 37 % 900)},
        }
        row["timestamp"], row["observed_timestamp"] = now - minute * 60 * 10**9, now
        for name, value in row.items():
            columns[name].append(value)
    store.insert_columns(stack.client, "logs", columns, dedup_token=f"explorer-hour-{uuid.uuid4()}")
    await tab.sign_in(busy.read_key)
    await expect(page.locator("#rows > li")).to_have_count(100)
    await expect(page.locator("#summary")).to_contain_text("100 of 600 logs shown")
    starts = await page.locator("#histogram-svg rect[class^='f-']").evaluate_all(
        "els => new Set(els.map(e => e.getAttribute('x'))).size"
    )
    assert starts == len(minutes)  # one bar per minute that has logs, of the hour's 60
    await expect(page.locator("#legend li")).to_have_text(["debug", "info", "warn", "error"])
    await expect(page.get_by_role("region", name="region").locator("li .v")).to_have_text(["ap", "eu", "us"])
    await page.locator("#rows > li").nth(2).locator("button.line").click()
    await tab.screenshot("explorer-hour")
    # Drag across the middle third of the chart: the range becomes that part of the hour.
    box = await page.locator("#histogram-svg").bounding_box()
    assert box is not None
    y = box["y"] + box["height"] / 2
    await page.mouse.move(box["x"] + box["width"] / 3, y)
    await page.mouse.down()
    await page.mouse.move(box["x"] + box["width"] / 2, y, steps=5)
    await page.mouse.move(box["x"] + 2 * box["width"] / 3, y, steps=5)
    await page.mouse.up()
    await expect(page.locator("#range")).to_have_value("custom")
    await expect(page.locator("#zoom-out")).to_be_visible()
    span_ms = await page.evaluate(
        "Date.parse(new URL(location).searchParams.get('to'))"
        " - Date.parse(new URL(location).searchParams.get('from'))"
    )
    assert 18 * 60_000 <= span_ms <= 22 * 60_000  # a third of the hour's 60 buckets
    await expect(page.locator("#summary")).to_contain_text("logs shown")
    only_own_origin(tab)
