"""GQL, GoodLogs' query language: lexer -> parser (AST) -> compiler (parameterized ClickHouse SQL).

`millrace.query` runs the compiled statements; the endpoints live in `gateway/read.py`.
"""

from millrace.gql.ast import Query
from millrace.gql.compile import Compiled, compile_query, compile_text
from millrace.gql.lexer import GQLError
from millrace.gql.parser import parse

__all__ = ["Compiled", "GQLError", "Query", "compile_query", "compile_text", "parse"]
