"""Coverage-guided fuzzing of every parser and of the gateway's body decoder, with atheris (libFuzzer).

    .venv/bin/python tests/fuzz/fuzz_parsers.py -atheris_runs=200000       # or: make fuzz
    .venv/bin/python tests/fuzz/fuzz_parsers.py -max_total_time=120 corpus/  # libFuzzer flags pass through

An input is framed as: byte 0 picks the target (a parser, or the decoder), byte 1 the
Content-Type (or the Content-Encoding), byte 2 the `?format=` and query defaults; the rest is
the body. A target breaking the contract of tests/fuzz/contract.py (anything but `ParseError`
escaping, a row a table cannot hold) raises, and libFuzzer stops with the input that did it.
The seed templates of tests/fuzz/corpus.py are written into the first corpus directory (a
temporary one when none is given), so every run starts from valid requests of every dialect.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import atheris

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

# The parsers from their sources (formats/native.py): compiled ones give atheris no coverage.
os.environ["MILLRACE_NATIVE"] = "0"
with atheris.instrument_imports(include=["formats", "workers", "gateway", "schemas"]):
    from formats import PARSERS, ParseContext
    from gateway.body import BodyError, decompress

from tests.fuzz.contract import check  # noqa: E402  (after the path is set)
from tests.fuzz.corpus import RECEIVED_AT_NS, TEMPLATES  # noqa: E402

NAMES = sorted(PARSERS)
DECODER = len(NAMES)  # the target after the parsers
CONTENT_TYPES = (
    "application/json",
    "text/plain",
    "application/x-ndjson",
    "text/csv",
    "application/x-syslog",
    "application/x-obl",
    "application/x-www-form-urlencoded",
    "",
)
ENCODINGS = ("gzip", "deflate", "zlib", "zstd", "snappy", "lz4", "br")
QUERIES: tuple[dict[str, str], ...] = (
    {},
    {"environment": "production"},
    {"format": "json", "environment": "production"},
    {"format": "jsonl", "environment": "production"},
    {"format": "syslog", "environment": "production"},
    {"source": "nginx", "environment": "production"},
    {"format": "text", "source": "nginx", "environment": "production"},
    {"format": "csv", "environment": "production", "source": "api"},
    {"format": "obl", "environment": "production"},
    {"source": "s", "environment": "staging", "level": "warn", "dataset": "d"},
    {"format": "xml"},
)
DECODE_LIMIT = 64 * 1024


def one_input(data: bytes) -> None:
    if len(data) < 3:
        return
    target, variant, query, body = data[0] % (DECODER + 1), data[1], data[2], data[3:]
    if target == DECODER:
        encoding = ENCODINGS[variant % len(ENCODINGS)]
        try:
            plain = decompress(body, encoding, DECODE_LIMIT)
        except BodyError as exc:
            if exc.status not in (400, 413, 415):
                raise AssertionError(f"decoder answered {exc.status}") from None
            return
        if len(plain) > DECODE_LIMIT:
            raise AssertionError("decoder returned more than its limit")
        return
    ctx = ParseContext(
        received_at_ns=RECEIVED_AT_NS,
        content_type=CONTENT_TYPES[variant % len(CONTENT_TYPES)],
        query=QUERIES[query % len(QUERIES)],
    )
    check(NAMES[target], body, ctx)


def seed_corpus(directory: Path) -> None:
    """One file per template, framed for its own parser with its own Content-Type and query."""
    for n, template in enumerate(TEMPLATES):
        target = NAMES.index(template.parser)
        ctype = CONTENT_TYPES.index(template.content_type) if template.content_type in CONTENT_TYPES else 0
        query = QUERIES.index(template.query) if template.query in QUERIES else 0
        (directory / f"seed-{n}").write_bytes(bytes((target, ctype, query)) + template.body())


def main() -> None:
    argv = list(sys.argv)
    with tempfile.TemporaryDirectory(prefix="millrace-fuzz-") as scratch:
        corpora = [arg for arg in argv[1:] if not arg.startswith("-")]
        if not corpora:
            argv.append(scratch)
        corpus = Path(corpora[0] if corpora else scratch)
        corpus.mkdir(parents=True, exist_ok=True)
        seed_corpus(corpus)  # the first corpus always holds the templates, however long it grew
        if not any(arg.startswith("-timeout=") for arg in argv):
            argv.append("-timeout=10")  # one input running 10 s is a hang (libFuzzer's default: 20 min)
        atheris.Setup(argv, one_input)
        atheris.Fuzz()


if __name__ == "__main__":
    main()
