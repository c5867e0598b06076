"""GQL parser: recursive descent over the tokens, one method per rule of this grammar.

    query     := segment ( '|' segment )*
    segment   := stage? filters?          -- `count by event from:events` is one segment
    stage     := 'count' ( 'distinct' field )? by?
               | 'count_distinct' ( '(' field ')' | field ) by?
               | 'top' INT | 'limit' INT | 'sort' 'by'? field ( 'asc' | 'desc' )?
               | 'where' filters
    by        := 'by' group ( ',' group )*
    group     := field | 'bin' '(' field ',' DURATION ')'   -- a time bucket: bin(timestamp, 5m)
    filters   := or
    or        := and ( 'OR' and )*
    and       := unary ( 'AND'? unary )*   -- juxtaposition means AND
    unary     := ( 'NOT' | '-' ) unary | primary
    primary   := '(' or ')' | clause | field OP value | field ':' OP value
               | field ':' '(' value ( ( 'OR' | ',' ) value )* ')' | term
    clause    := 'from' ':'? SOURCE | 'last' ':'? DURATION | 'since' ':' TIME | 'until' ':' TIME
               | 'between' TIME 'and' TIME
    OP        := ':' | '=' | '==' | '!=' | '>' | '>=' | '<' | '<='

Clauses set the source and the time window of the whole query, wherever they appear
(but not inside parentheses or under NOT). Keywords are case-insensitive; quote a word
to search for it as text.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime

from reads.gql.ast import (
    Aggregate,
    And,
    Bin,
    Compare,
    Expr,
    Field,
    Group,
    Having,
    Limit,
    Not,
    Op,
    Or,
    Query,
    Sort,
    Stage,
    Text,
    Top,
    Value,
    Window,
)
from reads.gql.lexer import GQLError, Kind, Token, tokenize

STAGES = frozenset({"count", "count_distinct", "top", "sort", "limit", "where"})
AGGREGATE_NAMES = frozenset({"value", "count", "count_distinct"})
MAX_QUERY_CHARS = 10_000
MAX_LIMIT = 10_000
MAX_WINDOW_S = 10 * 366 * 86_400
# What the store's DateTime64(9) columns hold; a time outside is refused, never wrapped around.
MIN_TIME = datetime(1900, 1, 1, tzinfo=UTC)
MAX_TIME = datetime(2262, 4, 11, tzinfo=UTC)
MAX_DEPTH = 32  # nested parentheses and negations; deeper is refused, never a RecursionError

_OPS: dict[str, Op] = {
    ":": "eq",
    "=": "eq",
    "==": "eq",
    "!=": "ne",
    ">": "gt",
    ">=": "gte",
    "<": "lt",
    "<=": "lte",
}
_DURATION = re.compile(r"^(\d{1,6})(s|m|h|d|w)$", re.ASCII)
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 7 * 86_400}
_SOURCE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def parse(text: str) -> Query:
    if len(text) > MAX_QUERY_CHARS:
        raise GQLError(f"the query is {len(text):,} characters; the limit is {MAX_QUERY_CHARS:,}", 0)
    return _Parser(text).query()


def parse_duration(text: str, pos: int) -> int:
    """`1h` -> 3600 (units s, m, h, d, w); the error points at the value."""
    match = _DURATION.match(text.strip().lower())
    if not match:
        raise GQLError(f"{text!r} is not a duration: write a number and a unit (s, m, h, d, w), e.g. 1h", pos)
    seconds = int(match.group(1)) * _UNIT_S[match.group(2)]
    if not 0 < seconds <= MAX_WINDOW_S:
        raise GQLError(f"{text!r} is out of range: a window is between 1s and 3660d", pos)
    return seconds


def parse_time(text: str, pos: int) -> int:
    """ISO 8601 (date, or date and time; no zone = UTC) or Unix seconds, to ns."""
    raw = text.strip()
    if raw.isascii() and raw.isdigit():
        seconds = int(raw)
        if not MIN_TIME.timestamp() <= seconds < MAX_TIME.timestamp():
            raise GQLError(f"{text!r} is out of range: {time_range()}", pos)
        return seconds * 1_000_000_000
    try:
        dt = datetime.fromisoformat(raw)
    except ValueError:
        raise GQLError(f"{text!r} is not a time: use ISO 8601 such as 2024-05-31T15:30:45Z", pos) from None
    ns = time_ns(dt)
    if ns is None:
        raise GQLError(f"{text!r} is out of range: {time_range()}", pos)
    return ns


def time_ns(dt: datetime) -> int | None:
    """`dt` (no zone = UTC) in ns since the epoch, or None outside what the store holds."""
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    if not MIN_TIME <= dt < MAX_TIME:
        return None
    return (int(dt.replace(microsecond=0).timestamp()) * 1_000_000 + dt.microsecond) * 1000


def time_range() -> str:
    return f"times are from {MIN_TIME:%Y-%m-%d} up to {MAX_TIME:%Y-%m-%d}"


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = tokenize(text)
        self.i = 0
        self.source: tuple[str, int] | None = None
        self.window: Window | None = None
        self.filters: list[Expr] = []
        self.pipeline: list[Stage] = []
        self.depth = 0

    # -- token helpers -------------------------------------------------------------------

    def peek(self, ahead: int = 0) -> Token:
        return self.tokens[min(self.i + ahead, len(self.tokens) - 1)]

    def take(self) -> Token:
        token = self.peek()
        self.i = min(self.i + 1, len(self.tokens) - 1)
        return token

    def keyword(self, *words: str, ahead: int = 0) -> bool:
        """The token is one of these unquoted words (case-insensitive), not a field being compared."""
        token = self.peek(ahead)
        nxt = self.peek(ahead + 1)
        return (
            token.kind is Kind.WORD
            and not token.raw
            and token.value.lower() in words
            and nxt.kind is not Kind.OP
        )

    def expect(self, kind: Kind, what: str) -> Token:
        token = self.peek()
        if token.kind is not kind:
            raise GQLError(f"expected {what}, found {token.describe()}", token.pos)
        return self.take()

    def at_segment_end(self) -> bool:
        return self.peek().kind in (Kind.PIPE, Kind.EOF)

    # -- query and segments --------------------------------------------------------------

    def query(self) -> Query:
        while True:
            token = self.peek()
            if self.at_segment_end() and not (token.kind is Kind.EOF and self.i == 0):
                # An empty query is fine (every log, newest first); an empty stage is a typo.
                raise GQLError(
                    f"an empty stage: write a filter or a stage before {token.describe()}", token.pos
                )
            if not self.at_segment_end():
                self.segment()
            if self.peek().kind is Kind.EOF:
                break
            self.expect(Kind.PIPE, "'|'")
        source, source_pos = self.source or ("logs", 0)
        return Query(
            source=source,
            source_pos=source_pos,
            filters=tuple(self.filters),
            window=self.window,
            pipeline=tuple(self.pipeline),
        )

    def segment(self) -> None:
        if self.keyword(*STAGES):
            self.stage()
        if not self.at_segment_end():
            expr = self.filter_expr()
            if isinstance(expr, And):
                self.filters.extend(expr.items)
            elif expr is not None:
                self.filters.append(expr)
        if not self.at_segment_end():
            token = self.peek()
            raise GQLError(f"unexpected {token.describe()}", token.pos)

    def filter_expr(self) -> Expr | None:
        return self.or_expr(nested=False)

    # -- stages --------------------------------------------------------------------------

    def stage(self) -> None:
        token = self.take()
        word = token.value.lower()
        if word == "where":
            if self.at_segment_end():
                raise GQLError("expected a condition after 'where'", self.peek().pos)
            expr = self.filter_expr()
            if expr is None:
                return
            if self.aggregate_seen() and _fields(expr) & AGGREGATE_NAMES:
                if _fields(expr) - AGGREGATE_NAMES:
                    raise GQLError(
                        "a 'where' after an aggregate compares either the aggregate's value or row fields,"
                        " not both",
                        token.pos,
                    )
                self.pipeline.append(Having(expr, token.pos))
            elif isinstance(expr, And):
                self.filters.extend(expr.items)
            else:
                self.filters.append(expr)
        elif word in ("count", "count_distinct"):
            if self.aggregate_seen():
                raise GQLError("a query has one aggregate; this is the second", token.pos)
            self.pipeline.append(self.aggregate(token))
        elif word in ("top", "limit"):
            n = self.integer(word)
            self.pipeline.append(Top(n, token.pos) if word == "top" else Limit(n, token.pos))
        else:  # sort
            if self.keyword("by"):
                self.take()
            field = self.field("sort")
            descending = False
            if self.keyword("asc", "desc"):
                descending = self.take().value.lower() == "desc"
            self.pipeline.append(Sort(field, descending, token.pos))

    def aggregate_seen(self) -> bool:
        return any(isinstance(s, Aggregate) for s in self.pipeline)

    def aggregate(self, token: Token) -> Aggregate:
        target: Field | None = None
        if token.value.lower() == "count_distinct":
            if self.peek().kind is Kind.LPAREN:
                self.take()
                target = self.field("count_distinct(")
                self.expect(Kind.RPAREN, "')' to close count_distinct(")
            else:
                target = self.field("count_distinct")
        elif self.keyword("distinct"):
            self.take()
            target = self.field("count distinct")
        group_by: list[Group] = []
        if self.keyword("by"):
            self.take()
            group_by.append(self.group("by"))
            while self.peek().kind is Kind.COMMA:
                self.take()
                group_by.append(self.group(","))
            bins = [g for g in group_by if isinstance(g, Bin)]
            if len(bins) > 1:
                raise GQLError("an aggregate takes one bin(...); this is the second", bins[1].pos)
        if target is None:
            return Aggregate("count", None, tuple(group_by), token.pos)
        return Aggregate("count_distinct", target, tuple(group_by), token.pos)

    def group(self, after: str) -> Group:
        token = self.peek()
        if not (self.keyword("bin") and self.peek(1).kind is Kind.LPAREN):
            return self.field(after)
        self.take()
        self.take()
        target = self.field("bin(")
        self.expect(Kind.COMMA, "',' then a bucket width, as in bin(timestamp, 5m)")
        width = self.peek()
        if width.kind is not Kind.WORD:
            raise GQLError(
                f"expected a bucket width such as 1m after 'bin({target.name},', found {width.describe()}",
                width.pos,
            )
        self.take()
        seconds = parse_duration(width.value, width.pos)
        self.expect(Kind.RPAREN, "')' to close bin(")
        return Bin(target, seconds, width.value.lower(), token.pos)

    def integer(self, after: str) -> int:
        token = self.peek()
        if token.kind is not Kind.WORD or not (token.value.isascii() and token.value.isdigit()):
            raise GQLError(f"expected a whole number after '{after}', found {token.describe()}", token.pos)
        self.take()
        n = int(token.value)
        if not 1 <= n <= MAX_LIMIT:
            raise GQLError(f"'{after}' takes a number between 1 and {MAX_LIMIT:,}", token.pos)
        return n

    def field(self, after: str) -> Field:
        token = self.peek()
        if token.kind not in (Kind.WORD, Kind.STRING) or not token.value:
            raise GQLError(f"expected a field name after '{after}', found {token.describe()}", token.pos)
        self.take()
        return Field(token.value, token.pos)

    # -- filters -------------------------------------------------------------------------

    def deeper(self, token: Token, rule: Callable[[], Expr | None]) -> Expr | None:
        if self.depth >= MAX_DEPTH:
            raise GQLError(f"nested more than {MAX_DEPTH} levels deep", token.pos)
        self.depth += 1
        try:
            return rule()
        finally:
            self.depth -= 1

    def or_expr(self, nested: bool) -> Expr | None:
        items: list[Expr] = []
        first = self.and_expr(nested)
        if first is not None:
            items.append(first)
        while self.keyword("or"):
            token = self.take()
            if not items:
                raise GQLError("'OR' needs a condition on its left", token.pos)
            right = self.and_expr(nested)
            if right is None:
                raise GQLError("'OR' needs a condition on its right", self.peek().pos)
            items.append(right)
        if not items:
            return None
        return items[0] if len(items) == 1 else Or(tuple(items))

    def and_expr(self, nested: bool) -> Expr | None:
        items: list[Expr] = []
        while True:
            token = self.peek()
            if token.kind in (Kind.PIPE, Kind.EOF, Kind.RPAREN) or self.keyword("or"):
                break
            if self.keyword("and"):
                self.take()
                if self.peek().kind in (Kind.PIPE, Kind.EOF, Kind.RPAREN) or self.keyword("or"):
                    raise GQLError("'AND' needs a condition on its right", self.peek().pos)
                continue
            item = self.unary(nested, negated=False)
            if item is not None:
                items.append(item)
        if not items:
            return None
        return items[0] if len(items) == 1 else And(tuple(items))

    def unary(self, nested: bool, negated: bool) -> Expr | None:
        token = self.peek()
        if token.kind is Kind.MINUS or self.keyword("not"):
            self.take()
            nxt = self.peek()
            if nxt.kind in (Kind.PIPE, Kind.EOF, Kind.RPAREN):
                raise GQLError(f"expected a condition to negate after {token.describe()}", nxt.pos)
            inner = self.deeper(token, lambda: self.unary(nested, negated=True))
            if inner is None:  # pragma: no cover - clauses refuse negation before returning None
                raise GQLError("nothing to negate", token.pos)
            return Not(inner, token.pos)
        return self.primary(nested, negated)

    def primary(self, nested: bool, negated: bool) -> Expr | None:
        token = self.peek()
        if token.kind is Kind.LPAREN:
            self.take()
            inner = self.deeper(token, lambda: self.or_expr(nested=True))
            if inner is None:
                raise GQLError("empty parentheses", token.pos)
            self.expect(Kind.RPAREN, "')'")
            return inner
        if self.clause_ahead():
            if nested or negated:
                raise GQLError(
                    f"'{token.value}' sets the whole query's source or time: put it outside"
                    " parentheses and NOT",
                    token.pos,
                )
            self.clause()
            return None
        if token.kind is Kind.WORD and self.keyword(*STAGES):
            raise GQLError(
                f"'{token.value}' starts a pipeline stage: write '| {token.value} ...', or quote it"
                " to search for the word",
                token.pos,
            )
        nxt = self.peek(1)
        if token.kind in (Kind.WORD, Kind.STRING) and nxt.kind is Kind.OP and not token.raw:
            return self.comparison()
        if token.kind in (Kind.WORD, Kind.STRING):
            self.take()
            return Text(Value(token.value, token.pos, quoted=token.kind is Kind.STRING))
        raise GQLError(f"unexpected {token.describe()}", token.pos)

    def comparison(self) -> Expr:
        name = self.take()
        field = Field(name.value, name.pos)
        op_token = self.take()
        op = _OPS[op_token.value]
        if op_token.value == ":" and self.peek().kind is Kind.OP and self.peek().value != ":":
            op = _OPS[self.take().value]  # `amount:>=29`
        elif op_token.value == ":" and self.peek().kind is Kind.LPAREN:
            return Compare(field, "in", self.value_group())
        value = self.value(f"{name.value}{op_token.value}")
        if op in ("eq", "ne") and value.text == "*" and not value.quoted:
            exists = Compare(field, "exists", ())
            return exists if op == "eq" else Not(exists, op_token.pos)
        return Compare(field, op, (value,))

    def value_group(self) -> tuple[Value, ...]:
        open_token = self.take()
        values = [self.value("(")]
        while self.peek().kind is Kind.COMMA or self.keyword("or"):
            self.take()
            values.append(self.value("OR"))
        self.expect(Kind.RPAREN, f"')' to close the '(' at position {open_token.pos}")
        return tuple(values)

    def value(self, after: str) -> Value:
        token = self.peek()
        if token.kind is Kind.MINUS and self.peek(1).kind is Kind.WORD and self.peek(1).pos == token.end:
            self.take()
            word = self.take()
            return Value("-" + word.value, token.pos)
        if token.kind not in (Kind.WORD, Kind.STRING):
            raise GQLError(f"expected a value after '{after}', found {token.describe()}", token.pos)
        self.take()
        return Value(token.value, token.pos, quoted=token.kind is Kind.STRING)

    # -- clauses: source and time window -------------------------------------------------

    def clause_ahead(self) -> bool:
        token = self.peek()
        if token.kind is not Kind.WORD or token.raw:
            return False
        word = token.value.lower()
        nxt = self.peek(1)
        colon = nxt.kind is Kind.OP and nxt.value == ":"
        if word in ("from", "last", "since", "until"):
            return colon or (word in ("from", "last") and nxt.kind is Kind.WORD and nxt.pos > token.end)
        return word == "between" and nxt.kind in (Kind.WORD, Kind.STRING)

    def clause(self) -> None:
        token = self.take()
        word = token.value.lower()
        if self.peek().kind is Kind.OP:
            self.take()
        if word == "between":
            since = self.value("between")
            if not self.keyword("and"):
                raise GQLError("expected 'and' between the two times of 'between'", self.peek().pos)
            self.take()
            until = self.value("and")
            self.set_window(
                Window(
                    since_ns=parse_time(since.text, since.pos),
                    until_ns=parse_time(until.text, until.pos),
                    pos=token.pos,
                )
            )
            return
        value = self.value(word)
        if word == "from":
            if not _SOURCE.match(value.text):
                raise GQLError(
                    f"{value.text!r} is not a source name: use from:logs or from:events", value.pos
                )
            if self.source is not None and self.source[0] != value.text.lower():
                raise GQLError(
                    f"the source is already '{self.source[0]}' (position {self.source[1]})", value.pos
                )
            self.source = (value.text.lower(), value.pos)
        elif word == "last":
            seconds = parse_duration(value.text, value.pos)
            self.set_window(Window(last_s=seconds, last_text=value.text.lower(), pos=token.pos))
        else:  # since / until combine into one explicit range
            ns = parse_time(value.text, value.pos)
            current = self.window or Window(pos=token.pos)
            if current.last_s is not None:
                raise GQLError("the time window is already set by 'last'", token.pos)
            if word == "since":
                if current.since_ns is not None:
                    raise GQLError("'since' is already set", token.pos)
                self.window = Window(since_ns=ns, until_ns=current.until_ns, pos=current.pos)
            else:
                if current.until_ns is not None:
                    raise GQLError("'until' is already set", token.pos)
                self.window = Window(since_ns=current.since_ns, until_ns=ns, pos=current.pos)

    def set_window(self, window: Window) -> None:
        if self.window is not None:
            raise GQLError(f"the time window is already set (position {self.window.pos})", window.pos)
        self.window = window


def _fields(expr: Expr) -> set[str]:
    if isinstance(expr, Compare):
        return {expr.field.name.lower()}
    if isinstance(expr, Text):
        return {"_text"}
    if isinstance(expr, Not):
        return _fields(expr.expr)
    out: set[str] = set()
    for item in expr.items:
        out |= _fields(item)
    return out
