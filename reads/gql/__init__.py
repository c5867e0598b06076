"""GQL, GoodLogs' query language: lexer -> parser (AST) -> compiler (parameterized ClickHouse SQL).

`reads.query` runs the compiled statements; the endpoints live in `gateway/read.py`.
"""

from reads.gql.ast import Query
from reads.gql.compile import Compiled, compile_query, compile_text
from reads.gql.lexer import GQLError
from reads.gql.parser import parse

__all__ = ["Compiled", "GQLError", "Query", "compile_query", "compile_text", "parse"]
