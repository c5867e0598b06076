"""Every parser is a pure function: the same input twice gives the same rows, and the body is not mutated.

Run over every parser in PARSERS with the seed examples (as each parser's own tests use them) and
every template of the fuzz corpus addressed to that parser.
"""

from __future__ import annotations

import pytest

from formats import PARSERS, ParseContext, Parsed, ParseError
from tests.formats.conftest import make_ctx
from tests.formats.test_conformance import SEEDS
from tests.fuzz.corpus import TEMPLATES

CASES: list[tuple[str, bytes, ParseContext]] = [
    *((name, seed, make_ctx()) for name in sorted(PARSERS) for seed in SEEDS),
    *((t.parser, t.body(), t.ctx()) for t in TEMPLATES),
]


def outcome(name: str, body: bytes, ctx: ParseContext) -> Parsed | tuple[str, str]:
    """What one call answers: its Parsed, or its error's code and message."""
    try:
        return PARSERS[name](body, ctx)
    except ParseError as exc:
        return (exc.code, exc.message)


@pytest.mark.parametrize(("name", "body", "ctx"), CASES, ids=lambda v: v if isinstance(v, str) else "")
def test_same_input_same_rows(name: str, body: bytes, ctx: ParseContext) -> None:
    """Two calls on equal bytes (two distinct objects) agree exactly. The input is `bytes`, as the
    gateway passes it: the compiled parsers refuse anything else (formats/native.py)."""
    first = outcome(name, body, ctx)
    second = outcome(name, bytes(bytearray(body)), ctx)
    assert first == second
