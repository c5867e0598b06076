"""Out-of-range values on the read path are the caller's error, with a position, never a wrapped
time, a 500, a raw Python message, or a failed batch: times outside what DateTime64(9) holds
(1900..2262), and digits that are not ASCII digits."""

from __future__ import annotations

import pytest

from reads.gql import GQLError, parse
from tests.conftest import Stack
from tests.test_gql import call


@pytest.mark.parametrize(
    ("q", "position"),
    [("since:10000000000", 6), ("until:2300-01-01", 6), ("since:0001-01-01", 6), ("since:1899-12-31", 6)],
)
def test_a_time_outside_the_stores_range_is_refused_where_it_stands(q: str, position: int) -> None:
    with pytest.raises(GQLError, match="out of range") as err:
        parse(q)
    assert err.value.position == position


@pytest.mark.parametrize(("q", "position"), [("count | limit ²", 14), ("last:1٣h", 5)])
def test_non_ascii_digits_are_a_parse_error(q: str, position: int) -> None:
    with pytest.raises(GQLError) as err:
        parse(q)
    assert err.value.position == position


@pytest.mark.integration
async def test_out_of_range_reads_answer_400_over_http_and_fail_alone_in_a_batch(stack: Stack) -> None:
    tenant = await stack.tenant("ranges")
    key = tenant.read_key
    status, body = await call(stack, "POST", "/v1/gql/query", key, {"q": "since:10000000000"})
    assert status == 400, body
    assert "out of range" in str(body)
    status, body = await call(stack, "POST", "/v1/gql/query", key, {"q": "count | limit ²"})
    assert status == 400, body
    assert "invalid literal" not in str(body)

    for q in ("amount > 1e308", "amount > 99999999999999999999999", "count | where count > 1e308"):
        status, body = await call(stack, "POST", "/v1/gql/query", key, {"q": q})
        assert status == 200, (q, body)  # the echo of a huge number used to break the worker's answer

    status, body = await call(
        stack, "POST", "/v1/gql", key, {"queries": ["count", "until:99999999999999999999", "count"]}
    )
    assert status == 200, body
    assert [o["status"] for o in body] == ["ok", "error", "ok"]
    assert "out of range" in body[1]["error"]

    for value in ("0001-01-01", "2300-01-01"):
        status, body = await call(stack, "GET", "/api/v1/logs", key, **{"from": value})
        assert status == 400, body
        assert "out of range" in str(body)
    status, body = await call(stack, "GET", "/v1/gql/autocomplete", key, q="count | limit ²")
    assert status == 200, body
    assert body["valid"] is False
    assert body["error"]["position"] == 14
