"""The seed documents' curl examples, read from ../shared/seeds as written.

Golden tests replay these verbatim (only host and key swapped), so a change to a
seed document is a change to the tests.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit


def _seeds_dir() -> Path:
    """The seed documents: `MILLRACE_SEEDS_DIR`, else `shared/seeds` beside the checkout, else
    beside the local repository this checkout was cloned from (a scratch clone elsewhere)."""
    if configured := os.environ.get("MILLRACE_SEEDS_DIR"):
        return Path(configured)
    checkout = Path(__file__).resolve().parents[1]
    beside = checkout.parent / "shared" / "seeds"
    if beside.is_dir():
        return beside
    origin = subprocess.run(
        ["git", "-C", str(checkout), "config", "--get", "remote.origin.url"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    if origin and Path(origin).is_dir():
        return Path(origin).resolve().parent / "shared" / "seeds"
    return beside


SEEDS = _seeds_dir()


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
            f"seed {prefix}_*.txt not found in {SEEDS}; "
            "put shared/ beside the checkout or set MILLRACE_SEEDS_DIR"
        )
    return matches[0].read_text()


def curl_examples(prefix: str) -> list[CurlExample]:
    """Every `curl ...` command in a seed file, continuation lines joined, parsed like a shell would."""
    return curl_commands(seed_text(prefix))


def curl_commands(text: str) -> list[CurlExample]:
    """Every `curl ...` command in a text (a seed file, the README)."""
    lines = text.splitlines()
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
        elif arg in ("-d", "--data", "--data-raw", "--data-binary"):
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


def http_examples(prefix: str) -> list[CurlExample]:
    """Raw HTTP request blocks (`POST https://...`, header lines, blank line, JSON body)."""
    lines = seed_text(prefix).splitlines()
    examples = []
    for i, line in enumerate(lines):
        match = re.match(r"^(POST|GET|PUT) (https?://\S+)$", line.strip())
        if not match:
            continue
        headers: dict[str, str] = {}
        j = i + 1
        while j < len(lines) and re.match(r"^[A-Za-z0-9-]+: ", lines[j]):
            name, _, value = lines[j].partition(":")
            headers[name.strip()] = value.strip()
            j += 1
        while j < len(lines) and not lines[j].strip():
            j += 1
        body = b""
        if j < len(lines) and lines[j].lstrip()[:1] in ("{", "["):
            # The JSON text exactly as the document shows it, not a re-serialization.
            rest = "\n".join(lines[j:])
            _, end = json.JSONDecoder().raw_decode(rest)
            body = rest[:end].encode()
        parts = urlsplit(match.group(2))
        examples.append(CurlExample(match.group(1), parts.path, headers, body))
    return examples


def json_documents(prefix: str) -> list[Any]:
    """Every JSON document that starts a line of a seed file (request models, payload samples)."""
    text = seed_text(prefix)
    decoder = json.JSONDecoder()
    docs = []
    for match in re.finditer(r"^[\[{]", text, flags=re.M):
        try:
            doc, _ = decoder.raw_decode(text[match.start() :])
        except json.JSONDecodeError:
            continue
        docs.append(doc)
    return docs


def section(prefix: str, heading: str, until: str) -> str:
    """The text of a seed file between a line equal to `heading` and the next line starting `until`."""
    lines = seed_text(prefix).splitlines()
    start = lines.index(heading) + 1
    end = next(i for i in range(start, len(lines)) if lines[i].startswith(until))
    return "\n".join(lines[start:end]).strip("\n")


def with_key(ex: CurlExample, key: str) -> CurlExample:
    """The example with only its key swapped, wherever the dialect carries it."""
    headers = dict(ex.headers)
    for name, value in headers.items():
        if name == "Authorization":
            scheme, sep, _ = value.partition(" ")
            headers[name] = f"{scheme} {key}" if sep else key
        elif name in ("X-TG2G-Api-Key", "X-API-Key"):
            headers[name] = key
    return CurlExample(ex.method, ex.path, headers, ex.body)
