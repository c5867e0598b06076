"""Elasticsearch's response filtering (`filter_path`) as the `_bulk` dialect applies it to its answers.

The expected documents are those Elasticsearch's reference gives for these filters (its
"Response filtering" common option) and what Logstash, which asks for
`errors,items.*.error,items.*.status` on every `_bulk`, reads back.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from aiohttp.test_utils import make_mocked_request

from formats import Parsed, Rejection
from formats.es_bulk import BulkItem
from gateway.dialects.base import Problem
from gateway.dialects.es_bulk import (
    ES_BULK,
    MAX_FILTER_CHARS,
    MAX_FILTER_DEPTH,
    MAX_FILTER_PATHS,
    FilterPathError,
    _item,
    answering,
    filter_answer,
    request_filters,
)

STATE: dict[str, Any] = {
    "cluster_name": "millrace",
    "metadata": {
        "indices": {
            "logstash-1": {"state": "open", "settings": {"shards": 1}},
            "twitter": {"state": "open", "stats": 3},
        }
    },
    "routing_table": {"indices": {"twitter": {"shards": {"0": [{"state": "STARTED", "primary": True}]}}}},
}

BULK: dict[str, Any] = {
    "took": 3,
    "errors": True,
    "items": [
        {"index": {"_index": "a", "_id": "x", "status": 201, "result": "created"}},
        {"create": {"_index": "a", "_id": None, "status": 400, "error": {"type": "t", "reason": "r"}}},
        {"index": {"_index": "a", "_id": "y", "status": 201, "result": "created"}},
    ],
}


@pytest.mark.parametrize(
    ("document", "expression", "expected"),
    [
        # Logstash's filter: every item keeps its status, the refused one its error too.
        (
            BULK,
            "errors,items.*.error,items.*.status",
            {
                "errors": True,
                "items": [
                    {"index": {"status": 201}},
                    {"create": {"status": 400, "error": {"type": "t", "reason": "r"}}},
                    {"index": {"status": 201}},
                ],
            },
        ),
        # Only what failed: items without an error are left out, and with none the answer is {}.
        (BULK, "items.*.error", {"items": [{"create": {"error": {"type": "t", "reason": "r"}}}]}),
        ({"took": 1, "errors": False, "items": [{"index": {"status": 201}}]}, "items.*.error", {}),
        # `*` inside a name, `**` over any number of levels (arrays passed through).
        (
            STATE,
            "metadata.indices.*.stat*",
            {
                "metadata": {
                    "indices": {"logstash-1": {"state": "open"}, "twitter": {"state": "open", "stats": 3}}
                }
            },
        ),
        (
            STATE,
            "routing_table.indices.**.state",
            {"routing_table": {"indices": {"twitter": {"shards": {"0": [{"state": "STARTED"}]}}}}},
        ),
        (
            BULK,
            "**.status",
            {"items": [{"index": {"status": 201}}, {"create": {"status": 400}}, {"index": {"status": 201}}]},
        ),
        # A path that ends on an object keeps it whole; spaces and empty parts are ignored.
        (BULK, " took , ,items.*.error.type", {"took": 3, "items": [{"create": {"error": {"type": "t"}}}]}),
        (
            STATE,
            "metadata.indices.twitter",
            {"metadata": {"indices": {"twitter": {"state": "open", "stats": 3}}}},
        ),
        # A path asking below a scalar reaches nothing.
        (BULK, "took.value", {}),
        # `-path` leaves a path out; with inclusive paths too, it is applied first.
        ({"count": 5, "_shards": {"total": 1}}, "-_shards", {"count": 5}),
        (
            STATE,
            "metadata.indices.*.state,-metadata.indices.logstash-*",
            {"metadata": {"indices": {"twitter": {"state": "open"}}}},
        ),
        (
            BULK,
            "-items.*._id,-took,-items.*.result",
            {
                "errors": True,
                "items": [
                    {"index": {"_index": "a", "status": 201}},
                    {"create": {"_index": "a", "status": 400, "error": {"type": "t", "reason": "r"}}},
                    {"index": {"_index": "a", "status": 201}},
                ],
            },
        ),
        # `**` takes one level or more, never none.
        (
            {"status": "green", "nodes": {"a": {"status": "up"}}},
            "**.status",
            {"nodes": {"a": {"status": "up"}}},
        ),
        (
            STATE,
            "**.**.twitter.**.state",
            {"routing_table": {"indices": {"twitter": {"shards": {"0": [{"state": "STARTED"}]}}}}},
        ),
        # An exclusion leaves out the objects and arrays it empties, and is trimmed like the rest.
        ({"a": {"b": 1}, "c": 1}, "-a.b", {"c": 1}),
        ({"a": [{"b": 1}, {"b": 2, "d": 3}], "e": {}}, " - a.b ", {"a": [{"d": 3}], "e": {}}),
        ({"a": {"b": 1}}, "-a.b", {}),
        # Names are matched whole, `*` only as a wildcard (no other pattern characters).
        ({"a.b": 1, "ab": 2, "a?": 3, "a[b]": 4}, "a?,a[b]", {"a?": 3, "a[b]": 4}),
        ({"status": 1, "status2": 2}, "status", {"status": 1}),
    ],
)
def test_filter_path_keeps_what_elasticsearch_keeps(document: Any, expression: str, expected: Any) -> None:
    assert filter_answer(document, expression) == expected


def test_filter_path_leaves_the_answer_it_filters_unchanged() -> None:
    before = repr(BULK)
    filter_answer(BULK, "items.*.status")
    filter_answer(BULK, "-items.*._id")
    assert repr(BULK) == before


ITEMS = [
    BulkItem("index", "logs", None, 201),
    BulkItem("create", "logs", "own-id", 201),
    BulkItem("index", "logs", None, 201),
    BulkItem("index", "other", None, 201),
    BulkItem("update", "logs", "2", 400, "illegal_argument_exception", "update is not supported"),
    BulkItem("index", "logs", None, 429, "es_rejected_execution_exception", "rejected execution"),
    BulkItem("index", "logs", None, 201),
]


@pytest.mark.parametrize("rejected", [[], [Rejection(4, "unsupported")]])
@pytest.mark.parametrize(
    "expression",
    [
        "errors,items.*.error,items.*.status",
        "items.*.error",
        "items.*._id",
        "items.*._seq_no,took",
        "items.**.successful",
        "items",
        "items.index",
        "items.index._index,items.create",
        "-items.*._shards,-items.*._id",
        "-took,items.*.result",
        "-items",
        "took",
        "errors,-errors",
        "nothing",
        "*",
        "**",
        "**.status",
        "items.**",
        "-items.*.*",
        "-items.**,took",
        "-took,-errors,-items.*._shards.*",
        "items.*.*s*s*",
    ],
)
def test_a_bulk_answer_filtered_is_its_json_filtered(expression: str, rejected: list[Rejection]) -> None:
    """The `_bulk` answer is filtered from the items it answered, without reading its JSON back:
    the same document as filtering that JSON."""
    received_at_ns = 1_717_171_717_123_456_789
    parsed = Parsed(rows=[], rejected=rejected, answer=ITEMS)
    whole = orjson.loads(ES_BULK.success(parsed, received_at_ns).body)  # type: ignore[union-attr]
    filters = request_filters(make_mocked_request("POST", f"/_bulk?filter_path={expression}"))
    assert not isinstance(filters, Problem)

    answer = answering(filters).success(parsed, received_at_ns)

    assert answer.headers["X-Elastic-Product"] == "Elasticsearch"
    kept = orjson.loads(answer.body)  # type: ignore[arg-type]
    whole["took"] = kept.get("took", whole["took"])  # the clock moved between the two answers
    assert kept == filter_answer(whole, expression)


def test_answers_without_filter_path_or_with_errors_are_left_alone() -> None:
    filters = request_filters(make_mocked_request("POST", "/_bulk?filter_path=status"))
    assert not isinstance(filters, Problem)
    error = answering(filters).error(Problem(400, "invalid_body", "no"))
    assert error.body == ES_BULK.error(Problem(400, "invalid_body", "no")).body
    unfiltered = request_filters(make_mocked_request("POST", "/_bulk"))
    assert not isinstance(unfiltered, Problem)
    assert answering(unfiltered) is ES_BULK  # the dialect's own answer, untouched


def test_wildcards_are_matched_without_backtracking() -> None:
    """A run of `*` against a long name that does not match: linear, not exponential (a regex of
    `.*` pieces took seconds at a few dozen stars)."""
    name = "_" * 5000
    document = {name: 1, "status": 2}
    for pattern in ("*" * 60 + "x", "*a" * 30 + "*x", "*_" * 40 + "x"):
        assert filter_answer(document, pattern) == {}
    assert filter_answer(document, "*_" * 40 + "*") == {name: 1}


def test_a_filter_past_the_bounds_is_refused() -> None:
    with pytest.raises(FilterPathError):
        filter_answer({}, "a" * (MAX_FILTER_CHARS + 1))
    with pytest.raises(FilterPathError):
        filter_answer({}, ",".join(f"f{i}" for i in range(MAX_FILTER_PATHS + 1)))
    with pytest.raises(FilterPathError):
        filter_answer({}, ".".join(["a"] * (MAX_FILTER_DEPTH + 1)))
    # Repeated `**` is one `**`: no path blow-up, and within the bounds.
    assert filter_answer(STATE, ".".join(["**"] * 200) + ".state") == filter_answer(STATE, "**.state")
    problem = request_filters(
        make_mocked_request(
            "POST", "/_bulk?filter_path=" + ",".join(f"a{i}" for i in range(MAX_FILTER_PATHS + 1))
        )
    )
    assert isinstance(problem, Problem) and (problem.status, problem.code) == (400, "invalid_filter_path")
    assert not isinstance(
        request_filters(make_mocked_request("POST", "/_bulk?filter_path=items.*.status")), Problem
    )


def test_runs_of_one_action_lines_items_are_answered_as_each_alone() -> None:
    """Items of one action line are one object; the answer writes a run of them from one template.
    Runs broken by other lines' items, own ids and refusals must answer as `_item` does alone."""
    logs = BulkItem("create", "logs", None, 201)
    other = BulkItem("index", "other", None, 201)
    own = BulkItem("create", "logs", "own-id", 201)
    refused = BulkItem("update", "logs", "2", 400, "illegal_argument_exception", "update is not supported")
    items = [logs, logs, own, logs, refused, logs, other, other, logs, refused, refused, logs]
    received_at_ns = 1_717_171_717_123_456_789
    parsed = Parsed(
        rows=[], rejected=[Rejection(4, "no"), Rejection(9, "no"), Rejection(10, "no")], answer=items
    )

    answer = orjson.loads(ES_BULK.success(parsed, received_at_ns).body)  # type: ignore[union-attr]

    alone = [_item(item, position, received_at_ns) for position, item in enumerate(items)]
    assert answer["items"] == alone and answer["errors"] is True
    ids = [next(iter(i.values()))["_id"] for i in answer["items"]]
    assert len(set(ids)) == len(ids) - 2  # every generated id distinct; `2` is the update's own
