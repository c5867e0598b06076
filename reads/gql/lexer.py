"""GQL tokens: words, quoted strings, operators, parentheses, pipes, commas and a leading minus.

One context rule keeps values unquoted in the common case: right after a comparison
operator (`:`, `=`, `!=`, `>`, `>=`, `<`, `<=`) the next run of characters up to a
space, `|` or `)` is one value, so `referrer:https://google.com`, `since:2024-05-31T15:30:45Z`
and `amount:-5` need no quotes.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class GQLError(ValueError):
    """A query GQL cannot run: `position` is the 0-based offset in the query it points at.

    `status` is 400 for syntax (the query cannot be read) and 422 for a query that
    reads fine but asks for something that does not exist or cannot be done.
    """

    def __init__(self, message: str, position: int, status: int = 400) -> None:
        super().__init__(f"{message} (at position {position})")
        self.reason = message
        self.position = position
        self.status = status

    def to_dict(self) -> dict[str, object]:
        return {
            "code": "VALIDATION_ERROR",
            "message": str(self),
            "position": self.position,
            "status": self.status,
        }


class Kind(StrEnum):
    WORD = "word"
    STRING = "string"
    OP = "operator"
    LPAREN = "'('"
    RPAREN = "')'"
    PIPE = "'|'"
    COMMA = "','"
    MINUS = "'-'"
    EOF = "end of query"


@dataclass(frozen=True, slots=True)
class Token:
    kind: Kind
    value: str  # unescaped text (a string's content without quotes)
    pos: int
    end: int
    raw: bool = False  # a value read whole after an operator

    def describe(self) -> str:
        return "the end of the query" if self.kind is Kind.EOF else repr(self.value)


# Longest first, so `>=` is never read as `>` then `=`.
OPERATORS = (">=", "<=", "!=", "==", ":", "=", ">", "<")
_BREAK = frozenset(" \t\r\n()|:'\",=<>")
_VALUE_END = frozenset(" \t\r\n|)")
_ESCAPES = {"n": "\n", "t": "\t", "\\": "\\", "'": "'", '"': '"'}


def tokenize(text: str) -> list[Token]:
    tokens: list[Token] = []
    i, n = 0, len(text)
    after_op = False
    while True:
        while i < n and text[i].isspace():
            i += 1
        if i >= n:
            tokens.append(Token(Kind.EOF, "", n, n))
            return tokens
        c = text[i]
        op = next((o for o in OPERATORS if text.startswith(o, i)), None)
        if c in "'\"":
            token = _string(text, i)
        elif op is not None:
            token = Token(Kind.OP, op, i, i + len(op))
        elif c == "(":
            token = Token(Kind.LPAREN, c, i, i + 1)
        elif c == ")":
            token = Token(Kind.RPAREN, c, i, i + 1)
        elif c == "|":
            token = Token(Kind.PIPE, c, i, i + 1)
        elif after_op:
            end = i
            while end < n and text[end] not in _VALUE_END:
                end += 1
            token = Token(Kind.WORD, text[i:end], i, end, raw=True)
        elif c == ",":
            token = Token(Kind.COMMA, c, i, i + 1)
        elif c == "-" and i + 1 < n and (text[i + 1] not in _BREAK or text[i + 1] in "(\"'"):
            token = Token(Kind.MINUS, c, i, i + 1)
        elif c == "!":
            raise GQLError("unexpected '!': use NOT or '-' to negate, '!=' to compare", i)
        else:
            end = _word_end(text, i)
            token = Token(Kind.WORD, text[i:end], i, end)
        tokens.append(token)
        after_op = token.kind is Kind.OP
        i = token.end


def _word_end(text: str, i: int) -> int:
    """A word runs to the next break; one that starts with a digit keeps `:` before a digit,
    so a time such as 2024-05-31T15:30:45Z stays one word (`between 2024-05-31T10:00 and ...`)."""
    end, n = i, len(text)
    timelike = text[i].isdigit()
    while end < n and not text.startswith("!=", end):
        c = text[end]
        if c in _BREAK and not (timelike and c == ":" and end + 1 < n and text[end + 1].isdigit()):
            break
        end += 1
    return end


def _string(text: str, start: int) -> Token:
    quote = text[start]
    out: list[str] = []
    i = start + 1
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text):
            out.append(_ESCAPES.get(text[i + 1], text[i + 1]))
            i += 2
            continue
        if c == quote:
            return Token(Kind.STRING, "".join(out), start, i + 1)
        out.append(c)
        i += 1
    raise GQLError(f"unterminated string: the {quote} opened here is never closed", start)
