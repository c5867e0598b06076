"""The seed documents' curl examples, read from ../shared/seeds as written.

Golden tests replay these verbatim (only host and key swapped), so a change to a
seed document is a change to the tests.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

SEEDS = Path(__file__).resolve().parents[2] / "shared" / "seeds"


@dataclass
class CurlExample:
    method: str
    path: str  # path + query string, host dropped
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


def seed_text(prefix: str) -> str:
    matches = sorted(SEEDS.glob(f"{prefix}_*.txt"))
    if not matches:
        raise FileNotFoundError(
            f"seed {prefix}_*.txt not found in {SEEDS}; shared/ must sit beside the checkout"
        )
    return matches[0].read_text()


def curl_examples(prefix: str) -> list[CurlExample]:
    """Every `curl ...` command in a seed file, continuation lines joined, parsed like a shell would."""
    lines = seed_text(prefix).splitlines()
    examples = []
    i = 0
    while i < len(lines):
        if not lines[i].lstrip().startswith("curl "):
            i += 1
            continue
        # Grow the command while a line ends in a backslash or a quote is still open.
        command = lines[i].lstrip()
        i += 1
        while True:
            try:
                argv = shlex.split(command.replace("\\\n", " "))
            except ValueError:
                argv = None
            if argv is not None and not command.rstrip().endswith("\\"):
                break
            if i >= len(lines):
                break
            command += "\n" + lines[i]
            i += 1
        if argv:
            examples.append(_parse(argv))
    return examples


def _parse(argv: list[str]) -> CurlExample:
    method, url, headers, body = "GET", "", {}, b""
    it = iter(argv[1:])
    for arg in it:
        if arg == "-X":
            method = next(it)
        elif arg == "-H":
            name, _, value = next(it).partition(":")
            headers[name.strip()] = value.strip()
        elif arg in ("-d", "--data", "--data-raw"):
            body = next(it).encode()
            if method == "GET":
                method = "POST"
        elif not arg.startswith("-"):
            url = arg
    # What curl itself adds: its User-Agent, and a form content type for -d without one.
    headers.setdefault("User-Agent", "curl/8.5.0")
    if body and not any(h.lower() == "content-type" for h in headers):
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    parts = urlsplit(url)
    return CurlExample(method, parts.path + (f"?{parts.query}" if parts.query else ""), headers, body)
