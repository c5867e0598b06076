"""Generated bodies, valid and broken, through `flatten`, the Elasticsearch `_bulk` parser and its
answer, and the Timberlogs parser: each gives rows or a `ParseError` (never another exception),
the same each time, and `_bulk`'s answer is exactly the JSON of its items. Each corpus is
checked to reach the outcomes that matter (stored rows, refused items, refused requests, the
nesting and field-count bounds), so a pass is never a pass on nothing.

These corpora first checked the rework of those parsers (2026-12-07) against frozen copies of
the previous code: identical rows, answers and errors on every case. The copies were removed
after that merge so each rule stays written once; `git show a270bea:tests/formats/previous.py`
has them.
"""

from __future__ import annotations

import json
import math
import random
from collections import Counter
from collections.abc import Callable
from typing import Any, cast

import orjson

from formats import PARSERS, ParseContext, Parsed, ParseError
from formats.common import (
    MAX_ATTRIBUTE_KEYS,
    MAX_DEPTH,
    flatten,
)
from tests.formats.conftest import make_ctx

KEYS = (
    "message",
    "msg",
    "log",
    "level",
    "host",
    "name",
    "service",
    "id",
    "",
    "é",
    "日本",
    "a.b",
    "0",
    "data",
)
WORDS = ("", " ", "info", "WARN", "error", "x" * 120, "naïve ✓", "\u2028", "NaN", "Infinity", "-0", "1e309")
TIMES: tuple[Any, ...] = (
    "2024-01-15T10:30:00Z",
    "2024-01-15T10:30:00.123456+05:30",
    "2024-01-15 10:30:00",
    " 2024-01-15T10:30:00.5-00:30 ",
    "2024-13-45T99:99:99Z",
    "2024-1-5",
    "1705312200",
    "1705312200123",
    "1705312200.25",
    "1705312200123456789",
    "99999999999999999999",
    "17053122OO",
    "١٧٠٥٣١٢٢٠٠",
    "²",
    "-1705312200",
    "",
    "  ",
    "NaN",
    "abcd-ef",
    "1970-01-01T00:00:00Z",
    "2101-01-01T00:00:00Z",
    1705312200,
    1705312200123,
    1705312200.5,
    -5,
    0,
    10**30,
    True,
    None,
    [1],
    {"t": 1},
)


def scalar(rng: random.Random) -> Any:
    if rng.random() < 0.002:
        return rng.choice((math.nan, math.inf))  # written as NaN / Infinity: a body JSON refuses
    pick = rng.randrange(9)
    if pick == 0:
        return rng.choice(WORDS)
    if pick == 1:
        return rng.choice((0, 1, -7, 2**63, -(2**64) - 1, 10**40))
    if pick == 2:
        return rng.choice((0.5, -1.25, 1e300, 3.0, 1e-7))
    if pick == 3:
        return rng.choice((True, False, None))
    if pick == 4:
        return [scalar(rng) for _ in range(rng.randrange(3))]
    if pick == 5:
        return rng.choice(TIMES)
    return rng.choice(WORDS[2:8])


def value(rng: random.Random, depth: int) -> Any:
    """A JSON-like value: mostly objects nested a few levels, sometimes near or past the bound."""
    if depth > 0 and (depth >= 4 or rng.random() < 0.3 + 0.15 * depth):
        return scalar(rng)
    if rng.random() < 0.03:
        return chain(rng.randrange(MAX_DEPTH - 3, MAX_DEPTH + 3))
    width = rng.choice((0, 1, 2, 3, 4, 6))
    return {rng.choice(KEYS) + rng.choice(("", "", "x", "2")): value(rng, depth + 1) for _ in range(width)}


def chain(depth: int) -> dict[str, Any]:
    """Objects `depth` deep, with a leaf of each kind at the bottom and on the way."""
    node: dict[str, Any] = {"s": "leaf", "i": 1, "f": 0.5, "l": [1, {"a": 2}], "e": {}}
    for level in range(depth):
        node = {"k": node, "n": level} if level % 3 else {"k": node}
    return node


def dumps(item: Any) -> bytes:
    """JSON as a sender might write it: huge integers, NaN and Infinity included (orjson refuses them)."""
    escaped = len(item) % 2 == 0 if isinstance(item, dict | list) else True  # \u escapes, or UTF-8 bytes
    return json.dumps(item, ensure_ascii=escaped).encode("utf-8", "surrogatepass")


def outcome(fn: Callable[..., Any], *args: Any) -> Any:
    """What a call gives: its value, or its error's every field."""
    try:
        return ("ok", fn(*args))
    except ParseError as exc:
        return ("error", exc.code, exc.message, exc.position, exc.details)
    except Exception as exc:  # not a parser's contract, but then both must fail alike
        return ("raised", type(exc).__name__, str(exc))


# --- flatten -------------------------------------------------------------------------------


def flatten_cases(n: int) -> list[tuple[Any, str, dict[str, str], int]]:
    rng = random.Random(20261207)
    cases: list[tuple[Any, str, dict[str, str], int]] = []
    for i in range(n):
        prefix = rng.choice(("", "", "", "attr", "a.b", "é"))
        depth = rng.choice((0, 0, 0, 1, 2, MAX_DEPTH - 2, MAX_DEPTH - 1, MAX_DEPTH, MAX_DEPTH + 1))
        filled = rng.choice((0, 0, 0, 3, MAX_ATTRIBUTE_KEYS - 12, MAX_ATTRIBUTE_KEYS - 1, MAX_ATTRIBUTE_KEYS))
        out = {f"pre{j}": "v" for j in range(filled)}
        item: Any = value(rng, 0) if i % 7 else scalar(rng)
        if i % 11 == 0:
            item = {"wide": {f"k{j}": j for j in range(rng.choice((5, MAX_ATTRIBUTE_KEYS + 2)))}}
        if i % 13 == 0:
            item = {1: "int key", "n": {2.5: "float key", "": {"": 3}}, "": "dropped", "x": {}}
        if i % 17 == 0:
            item = {"deep": orjson.loads(b"[" * 300 + b"]" * 300)}
        cases.append((item, prefix, out, depth))
    return cases


FLATTEN_CASES = flatten_cases(3000)


def flatten_outcome(fn: Callable[..., None], item: Any, prefix: str, out: dict[str, str], depth: int) -> Any:
    mine = dict(out)
    result = outcome(fn, item, prefix, mine, depth)
    return result, list(mine.items())  # the order too: it is the attributes' order in the row


def test_flatten_stores_text_or_refuses_by_its_two_bounds() -> None:
    kinds: Counter[str] = Counter()
    for item, prefix, out, depth in FLATTEN_CASES:
        expected = flatten_outcome(flatten, item, prefix, out, depth)
        assert expected[0][0] in ("ok", "error"), (item, expected)  # a ParseError or nothing, never a crash
        assert all(type(k) is str and type(v) is str for k, v in expected[1]), item
        assert flatten_outcome(flatten, item, prefix, out, depth) == expected  # the same each time
        kinds[expected[0][1] if expected[0][0] == "error" else "ok"] += 1
    assert kinds["ok"] > 1000 and kinds["too_deep"] > 20 and kinds["too_many_fields"] > 20, kinds


# --- whole requests ------------------------------------------------------------------------


def parse_outcome(fn: Callable[[bytes, ParseContext], Parsed], body: bytes, ctx: ParseContext) -> Any:
    return outcome(fn, body, ctx)


def check_requests(name: str, cases: list[tuple[bytes, ParseContext]]) -> Counter[str]:
    """The parser twice on every case: the same outcome, rows or a ParseError (never another
    exception); what the cases reached, for the caller to check coverage."""
    reached: Counter[str] = Counter()
    for body, ctx in cases:
        expected = parse_outcome(PARSERS[name], body, ctx)
        assert expected[0] in ("ok", "error"), (body[:2000], expected)
        assert parse_outcome(PARSERS[name], body, ctx) == expected, (body[:2000], ctx)
        if expected[0] == "error":
            reached[f"error:{expected[1]}"] += 1
        else:
            parsed = expected[1]
            reached["rows"] += len(parsed.rows)
            reached["rejected"] += len(parsed.rejected)
            for rejection in parsed.rejected:
                deep = "nested deeper" in rejection.reason
                reached["rejected:nested deeper" if deep else f"rejected:{rejection.reason[:24]}"] += 1
    return reached


def bulk_action(rng: random.Random, broken: bool) -> bytes:
    if broken and rng.random() < 0.3:
        return rng.choice(
            (
                b"{not json",
                b"[]",
                b'{"index": {}, "create": {}}',
                b'{"upsert": {}}',
                b'{"index": 1}',
                b'{"index": {"_index": ""}}',
            )
        )
    op = rng.choice(("index", "create", "create", "create", "update", "delete"))
    meta: dict[str, Any] = {}
    if rng.random() < 0.3:
        meta["_index"] = rng.choice(
            ("logs-app", "logs-app", "other", "é-idx", 7) if broken else ("logs-app", "é-idx")
        )
    if rng.random() < 0.3:
        meta["_id"] = rng.choice(("1", "abc", 42, 1.5, None, [1, 2], {"x": 1}))
    return dumps({op: meta})


def ecs_document(rng: random.Random) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    if rng.random() < 0.8:
        doc["@timestamp"] = rng.choice(TIMES[:-3]) if rng.random() < 0.3 else "2024-01-15T10:30:00.123Z"
    for key in ("message", "msg", "log"):
        if rng.random() < 0.4:
            doc[key] = rng.choice(("hello", "", 5, {"level": "warn"}, ["a"], "ünïcode ✓"))
    if rng.random() < 0.5:
        doc["log"] = {"level": rng.choice(("info", "WARN", 30, "", "bogus")), "logger": "db"}
    for key in ("level", "severity"):
        if rng.random() < 0.2:
            doc[key] = rng.choice(("error", "debug", 50, None))
    if rng.random() < 0.6:
        doc["service"] = {"name": rng.choice(("api", "", 3)), "environment": rng.choice(("prod", ""))}
    if rng.random() < 0.5:
        doc["host"] = rng.choice(({"name": "h1"}, {"hostname": "h2"}, {"name": "", "hostname": "h3"}, "flat"))
    for key in ("service.name", "host.name", "deployment.environment", "environment", "trace", "span"):
        if rng.random() < 0.1:
            doc[key] = rng.choice(("x", {"id": "t1"}, 9))
    if rng.random() < 0.3:
        doc["transaction"] = {"id": rng.choice(("r1", 1, ""))}
    doc.update(value(rng, 0) if rng.random() < 0.7 else {})
    if rng.random() < 0.02:
        doc["wide"] = {f"f{j}": j for j in range(MAX_ATTRIBUTE_KEYS)}
    if rng.random() < 0.02:
        doc["deep"] = chain(MAX_DEPTH + rng.randrange(-2, 3))
    return doc


def bulk_document(rng: random.Random) -> bytes:
    pick = rng.randrange(60)
    if pick == 0:
        return rng.choice((b"{broken", b"[1, 2]", b'"text"', b"12", b"null", b'{"message": "\xff\xfe"}'))
    if pick == 1:
        return b'{"deep": ' + b"[" * 300 + b"]" * 300 + b"}"
    if pick == 2:
        return b'{"message": "nan", "n": NaN}'
    return dumps(ecs_document(rng))


def bulk_case(rng: random.Random) -> tuple[bytes, ParseContext]:
    lines: list[bytes] = []
    broken = rng.random() < 0.15  # a body that may refuse the whole request
    repeated = bulk_action(rng, broken)  # shippers repeat one action line
    for _ in range(rng.randrange(0, 12)):
        action = repeated if rng.random() < 0.6 else bulk_action(rng, broken)
        lines.append(action)
        if b'"delete"' not in action or rng.random() < 0.05:
            lines.append(bulk_document(rng))
        if rng.random() < 0.1:
            lines.append(rng.choice((b"", b"   ", b"\r", b"\t")))
    if broken and rng.random() < 0.2:
        lines.append(b'{"create": {}}')  # no document line follows
    separator = b"\r\n" if rng.random() < 0.05 else b"\n"
    body = separator.join(lines) + (b"\n" if rng.random() < 0.8 else b"")
    path = rng.choice(("/_bulk", "/logs-path/_bulk", "/a/b/_bulk")) if broken else "/logs-path/_bulk"
    return body, make_ctx("application/x-ndjson", path=path)


BULK_CASES = [bulk_case(rng) for rng in [random.Random(1)] for _ in range(1500)]


def test_es_bulk_parses_generated_bodies_alike_each_time_and_reaches_every_outcome() -> None:
    reached = check_requests("es_bulk", BULK_CASES)
    assert (
        reached["rows"] > 2000 and reached["error:invalid_action"] > 50 and reached["error:empty_body"] > 10
    ), reached
    for reason in ("delete is not supported", "update is not supported", "failed to parse the docum"):
        assert reached[f"rejected:{reason[:24]}"] > 10, reached
    for reason in (
        "more than 1000 attribute",
        "the document must be a J",
        "failed to parse field [@",
        "nested deeper",
    ):
        assert reached[f"rejected:{reason}"] > 0, reached


def test_es_bulk_stores_every_bench_document() -> None:
    from bench import payloads

    dialect = payloads.DIALECTS["es_bulk"]
    ctx = make_ctx(dialect.content_type, path=dialect.path)
    bodies = payloads.bodies(dialect, 200, 3)
    reached = check_requests("es_bulk", [(body, ctx) for body in bodies])
    assert reached["rows"] == 600


def timberlogs_entry(rng: random.Random) -> Any:
    if rng.random() < 0.02:
        return rng.choice(("text", 3, None, [1]))
    entry: dict[str, Any] = {}
    fields: dict[str, Callable[[], Any]] = {
        "level": lambda: rng.choice(("info", "warn", "error", "debug", "fatal", "INFO", 1, None, "")),
        "message": lambda: rng.choice(
            ("hello", "", "x" * 10_001, "é" * 5001, "😀" * 5000, "😀" * 5001, 5, None)
        ),
        "source": lambda: rng.choice(("api", "", "s" * 101, "😀" * 50, "😀" * 51, None, ["a"])),
        "environment": lambda: rng.choice(("production", "staging", "development", "prod", None, 2)),
        "dataset": lambda: rng.choice(("default", "web", "", 5, None)),
        "version": lambda: rng.choice(("1.2.3", 1, None)),
        "userId": lambda: rng.choice(("u1", "", 7, None)),
        "sessionId": lambda: rng.choice(("s1", {"a": 1})),
        "requestId": lambda: rng.choice(("r1", None, 1.5)),
        "flowId": lambda: rng.choice(("f1", True)),
        "errorName": lambda: rng.choice(("TimeoutError", [])),
        "errorStack": lambda: rng.choice(("at x\n at y", 0)),
        "data": lambda: rng.choice(
            (value(rng, 0), value(rng, 0), {}, None, "text", [1], chain(MAX_DEPTH + 1))
        ),
        "tags": lambda: rng.choice((["a", "b"], [], ["t" * 51], [1], ["x"] * 21, "tag", None)),
        "timestamp": lambda: rng.choice(
            (*TIMES, 1705312200123, 1705312200123.5, "1705312200123", 4_102_444_800_001)
        ),
        "stepIndex": lambda: rng.choice((0, 5, 1000, 1001, -1, 2.0, 2.5, "3", True, None)),
    }
    for key, make in fields.items():
        if rng.random() < (0.97 if key in ("level", "message", "source", "environment") else 0.35):
            entry[key] = make()
    for _ in range(rng.choice((0, 0, 0, 1, 3))):
        entry[rng.choice(("extra", "version", "host", "stepIndex", "nested", "data"))] = value(rng, 1)
    if rng.random() < 0.01:
        entry["wide"] = {f"w{j}": j for j in range(MAX_ATTRIBUTE_KEYS)}
    return entry


def timberlogs_case(rng: random.Random) -> tuple[bytes, ParseContext]:
    valid = rng.random() < 0.5  # half the requests are all-valid, so rows are compared too
    logs = [timberlogs_entry(rng) for _ in range(rng.choice((0, 1, 3, 10, 101) if not valid else (1, 5, 20)))]
    if valid:
        logs = [
            {
                **(log if isinstance(log, dict) else {}),
                "level": rng.choice(("info", "warn")),
                "message": "m",
                "source": "s",
                "environment": "production",
            }
            for log in logs
        ]
        for log in logs:
            for key in ("tags", "timestamp", "stepIndex", "version", "dataset", "userId", "sessionId"):
                log.pop(key, None)
            for key in ("requestId", "flowId", "errorName", "errorStack"):
                if not isinstance(log.get(key), str):
                    log.pop(key, None)
            log.pop("wide", None)
            if "data" in log:
                log["data"] = value(rng, 0)
            log["timestamp"] = rng.choice((1705312200123, "2024-01-15T10:30:00Z", None, 1705312200123.25))
    query = {
        k: v
        for k, v in (("source", "q"), ("environment", "staging"), ("level", "warn"))
        if rng.random() < 0.2
    }
    shape = rng.randrange(4)
    if shape == 0:
        body = dumps({"logs": logs})
        content_type = "application/json"
    elif shape == 1:
        body = dumps(logs)
        content_type = rng.choice(("application/json", ""))
    elif shape == 2:
        body = dumps({"logs": logs, "source": "env", "extra": {"k": 1}})
        content_type = "application/json"
    else:
        body = b"\n".join(dumps(log) for log in logs)
        content_type = "application/x-ndjson"
    return body, make_ctx(content_type, query=query)


TIMBERLOGS_CASES = [timberlogs_case(rng) for rng in [random.Random(2)] for _ in range(1500)]
TEXT_CASES = [
    (
        b"<34>Oct 11 22:14:15 mymachine su: 'su root' failed\n<13>1 2024-01-15T10:30:00Z h app - - - hi\n",
        "application/x-syslog",
    ),
    (b"2024-01-15T10:30:00Z WARN disk\nplain line\n", "text/plain"),
    (b"level,message,source,environment\ninfo,hi,api,production\nbogus,,api,prod\n", "text/csv"),
    (b"level,message,source,environment,timestamp\ninfo,hi,api,production,1705312200123\n", "text/csv"),
    (b"\xff\xfe not utf-8", "text/plain"),
]


def test_timberlogs_parses_generated_bodies_alike_each_time_and_reaches_every_outcome() -> None:
    cases = TIMBERLOGS_CASES + [
        (body, make_ctx(content_type, query=query))
        for body, content_type in TEXT_CASES
        for query in ({}, {"source": "api", "environment": "production"})
    ]
    reached = check_requests("timberlogs", cases)
    assert reached["rows"] > 1500 and reached["error:PARSE_ERROR"] > 500, reached


def test_es_bulk_answer_is_the_json_of_its_items() -> None:
    """The `_bulk` answer written from byte prefixes is exactly orjson's JSON of the items' dicts."""
    from gateway.dialects.base import Problem
    from gateway.dialects.es_bulk import ES_BULK, _item

    assert ES_BULK.success is not None and ES_BULK.split is not None
    answered = 0
    for body, ctx in BULK_CASES[:400]:
        try:
            parsed = PARSERS["es_bulk"](body, ctx)
        except ParseError:
            continue
        for admitted in {len(parsed.rows), len(parsed.rows) // 2}:
            limited = ES_BULK.split(parsed, admitted, Problem(429, "rate_limited", "over the log rate"))
            response = ES_BULK.success(limited, ctx.received_at_ns)
            assert isinstance(response.body, bytes)
            took = orjson.loads(response.body)["took"]
            items = [_item(item, i, ctx.received_at_ns) for i, item in enumerate(limited.answer)]
            expected = {"took": took, "errors": bool(limited.rejected), "items": items}
            assert response.body == orjson.dumps(expected)
            assert response.headers["X-Elastic-Product"] == "Elasticsearch"
            answered += len(items)
    assert answered > 1000


def test_flatten_names_are_the_same_past_the_name_cache_bounds() -> None:
    """Dotted names are reused by parent (`common._NAMES`); parents, children and names past its
    bounds are built as before, every name is right either way, and the cache stays bounded."""
    import formats.common as common

    rng = random.Random(7)
    for i in range(3000):
        parent: Any = rng.choice(("host", "http", f"p{i}", "x" * 70 + str(i), i))
        key: Any = rng.choice(("name", "status", f"k{i}", "y" * 70, 5, True, 1.5, "a.b"))
        doc = {parent: {key: i, "deep": {key: str(i)}}}
        for prefix in ("", "top", "p" * 80):
            out: dict[str, str] = {}
            flatten(doc, prefix, out, 1 if prefix else 0)
            head = f"{prefix}.{parent}" if prefix else str(parent)
            assert out == {f"{head}.{key}": str(i), f"{head}.deep.{key}": str(i)}, (prefix, doc)
    assert 0 < len(common._NAMES) <= common._MAX_PARENTS
    assert all(len(names) <= common._MAX_CHILDREN for names in common._NAMES.values())
    assert all(len(name) <= common._MAX_NAME for names in common._NAMES.values() for name in names.values())


def test_levels_are_normalized_as_the_rule_says_cached_or_not() -> None:
    """`normalized_level` answers from a cache of `normalize_level`'s answers: the same answers,
    for levels seen once or often, past the cache's size, long or odd."""
    import formats.common as common
    from schemas.record import normalize_level

    words = ["info", "INFO", " Warn ", "warning", "err", "fatal", "", "x" * 40, "débug", "notice", "trace"]
    cache = common._short_normalized_level
    words += [f"level{i}" for i in range(cast(int, cache.cache_info().maxsize) + 50)]
    for _ in range(2):
        for word in words:
            assert common.normalized_level(word) == normalize_level(word), word
    assert 0 < cache.cache_info().currsize <= cast(int, cache.cache_info().maxsize)
