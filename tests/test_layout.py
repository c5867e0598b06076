"""The layout is the architecture: which package may import which, checked on the source.

Each top-level package may import only the first-party packages listed for it (and the
standard library and declared dependencies). A new import across a boundary fails here
instead of quietly tying two processes together.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

from tests.conftest import shipped_packages

ROOT = Path(__file__).resolve().parent.parent
FIRST_PARTY = {
    "schemas",
    "formats",
    "millrace",
    "reads",
    "gateway",
    "workers",
    "alerts",
    "ops",
    "bench",
    "tests",
}

# package -> the first-party packages it may import (itself always allowed)
ALLOWED: dict[str, set[str]] = {
    "schemas": set(),
    "formats": {"schemas"},
    "millrace": {"schemas"},  # the shared kernel: neither process, no operator tool
    "reads": {"schemas", "millrace"},
    "gateway": {"schemas", "formats", "millrace", "reads"},  # never the worker
    "workers": {"schemas", "formats", "millrace", "reads"},  # never the gateway
    # The alert evaluator is a process of its own (it must not share the gateway's event loop
    # or the worker's consumer): it reads through the read core and stores through the
    # shared kernel, never through the other processes' code.
    "alerts": {"schemas", "millrace", "reads"},
    "ops": {"schemas", "formats", "millrace", "reads", "gateway", "workers", "alerts"},  # starts them all
}

# Declared dependencies (pyproject) by import name, for `formats/` and `schemas/`.
# google: protobuf; opentelemetry: the generated OTLP messages of opentelemetry-proto; zstandard:
# the envelope's compressed rows (schemas/envelope.py)
FORMAT_DEPENDENCIES = {"orjson", "msgspec", "ua_parser", "google", "cramjam", "zstandard", "opentelemetry"}


def imported_roots(path: Path) -> set[str]:
    """The top-level names of every module `path` imports (relative imports are its own package)."""
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def sources(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_package_imports_only_what_its_layer_allows(package: str) -> None:
    allowed = ALLOWED[package] | {package}
    crossing = {
        f"{path.relative_to(ROOT)} imports {root}"
        for path in sources(package)
        for root in imported_roots(path)
        if root in FIRST_PARTY and root not in allowed
    }
    assert set() == crossing


@pytest.mark.parametrize("package", ["formats", "schemas"])
def test_pure_packages_import_only_the_standard_library_and_declared_parsers(package: str) -> None:
    """Parsing is pure: no I/O clients (Kafka, ClickHouse, aiohttp) in formats or schemas."""
    allowed = {"schemas", "formats"} | FORMAT_DEPENDENCIES | set(sys.stdlib_module_names)
    foreign = {
        f"{path.relative_to(ROOT)} imports {root}"
        for path in sources(package)
        for root in imported_roots(path)
        if root not in allowed
    }
    assert set() == foreign


def test_every_package_is_known_to_the_layout_check() -> None:
    """A new top-level package gets a row in ALLOWED (and in pyproject's package list)."""
    packages = {p.parent.name for p in ROOT.glob("*/__init__.py")} - {"bench", "tests"}
    assert packages == set(ALLOWED)


def test_the_check_sees_a_crossing(tmp_path: Path) -> None:
    """The import walk finds plain, dotted and nested `from` imports (so the checks above can fail)."""
    probe = tmp_path / "probe.py"
    probe.write_text("import os.path\nfrom workers.pipeline import x\ndef f():\n    import gateway\n")
    assert {"os", "workers", "gateway"} == imported_roots(probe)


def test_pyproject_ships_and_type_checks_every_package() -> None:
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert set(ALLOWED) == shipped_packages()
    assert set(ALLOWED) == set(config["tool"]["mypy"]["packages"])


def decisions(path: Path) -> list[str]:
    """Loops, branches and handlers in a module: what wiring has no need of."""
    kinds = (ast.For, ast.AsyncFor, ast.While, ast.If, ast.IfExp, ast.ExceptHandler, ast.Match)
    return [
        f"{path.name}:{node.lineno} {type(node).__name__}"
        for node in ast.walk(ast.parse(path.read_text(), str(path)))
        if isinstance(node, kinds)
    ]


def test_the_worker_pipeline_only_wires_its_steps() -> None:
    """Every decision of the worker lives in a step, the consumer loop or the watermarks."""
    assert decisions(ROOT / "workers" / "pipeline.py") == []


def test_the_wiring_check_sees_a_decision(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text("def f(x):\n    for y in x:\n        pass\n    return 1 if x else 2\n")
    assert decisions(probe) == ["probe.py:2 For", "probe.py:4 IfExp"]


def test_the_bench_drives_public_entry_points_only() -> None:
    """The bench starts processes and reads HTTP; in-process stages use formats, schemas and
    the store client, never worker internals (which would pin the bench to their shape)."""
    crossing = {
        f"{path.relative_to(ROOT)} imports workers"
        for path in sources("bench")
        if "workers" in imported_roots(path)
    }
    assert crossing == set()


def test_the_readme_stays_a_users_page() -> None:
    """The README is for users (at most 250 lines); design, delivery, operations and figures
    live in docs/, each linked from it."""
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 250
    for doc in ("design", "delivery", "operations", "performance", "internals"):
        assert f"docs/{doc}.md" in text, doc
