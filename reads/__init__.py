"""The read core: typed log queries and GQL, compiled to ClickHouse SQL (used by both read paths)."""
