"""The parsers compiled to C by mypyc, used only while they are built from the source beside them.

`make native` (run by `make install`, `run`, `test` and `bench`; `python -m ops.native`)
compiles `MODULES` with mypyc: the same Python, type-checked as always, run without the
interpreter's per-bytecode overhead (bench/RESULTS.md has the figures). The build writes
`DIGEST`, a hash of the sources it compiled. At import, `formats/__init__.py` calls
`choose()` first: when the digest no longer matches the sources (a file edited or checked out
since the build), or with `MILLRACE_NATIVE=0`, every module of the group is imported from
its `.py` file instead, so what runs is always what the source says. The compiled modules
call each other directly, so it is all of them or none.

This module is never compiled, and imports only the standard library.
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
import sysconfig
import warnings
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent  # the formats package
DIGEST = ROOT / "native.sha256"
GROUP = "formats.native_group"  # mypyc's shared library of the group: formats/native_group__mypyc.*.so

# Not compiled: `framing` (mypyc does not take its AnyStr generic), `otlp_json` (msgspec builds
# its Structs: they stay Python classes), and this module.
MODULES: tuple[str, ...] = (
    "formats.base",
    "formats.common",
    "formats.useragent",
    "formats.astralog",
    "formats.dynatrace",
    "formats.es_bulk",
    "formats.goodlogs",
    "formats.hec",
    "formats.loki",
    "formats.otlp",
    "formats.tg2g",
    "formats.timberlogs.schema",
    "formats.timberlogs.json_",
    "formats.timberlogs.jsonl",
    "formats.timberlogs.csv_",
    "formats.timberlogs.obl",
    "formats.timberlogs.syslog",
    "formats.timberlogs.text",
)


def source(module: str) -> Path:
    return ROOT.parent.joinpath(*module.split(".")).with_suffix(".py")


def digest(modules: Sequence[str] = MODULES) -> str:
    """The sources as compiled: each module's name and bytes, in order."""
    h = hashlib.sha256()
    for module in modules:
        h.update(module.encode() + b"\0" + source(module).read_bytes() + b"\0")
    return h.hexdigest()


def built() -> bool:
    """Whether compiled modules exist, for this interpreter, built from the sources as they are now."""
    library = ROOT / (GROUP.rpartition(".")[2] + "__mypyc" + str(sysconfig.get_config_var("EXT_SUFFIX")))
    try:
        return library.exists() and DIGEST.read_text().strip() == digest()
    except OSError:
        return False


class _FromSource(importlib.abc.MetaPathFinder):
    """Finds the group's modules as their `.py` files, ahead of the compiled ones beside them."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in MODULES:
            return None
        return importlib.util.spec_from_file_location(fullname, source(fullname))


def choose() -> bool:
    """Import the group compiled when it is current and allowed, else from source; True if compiled."""
    if os.environ.get("MILLRACE_NATIVE", "1") != "0" and built():
        return True
    if not any(isinstance(finder, _FromSource) for finder in sys.meta_path):
        sys.meta_path.insert(0, _FromSource())
    if os.environ.get("MILLRACE_NATIVE") != "0" and any(ROOT.rglob("*.so")):
        warnings.warn(
            "formats: the compiled parsers were built from other sources than these; running the "
            "sources (slower). `make native` rebuilds them.",
            RuntimeWarning,
            stacklevel=2,
        )
    return False


def compiled() -> bool:
    """Whether the parsers imported in this process are the compiled ones."""
    module = sys.modules.get("formats.common")
    return module is not None and not str(getattr(module, "__file__", "")).endswith(".py")
