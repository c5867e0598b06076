"""The parsers compiled to C by mypyc, used only while they are built from the sources as they are.

`make native` (run by `make install`, `run`, `up`, `test` and `bench`; `python -m ops.native`)
compiles `MODULES` with mypyc: the same Python, type-checked as always, run without the
interpreter's per-bytecode overhead (docs/performance.md has the figures). The extensions go
to `build/native/<interpreter>/` beside the checkout, never into `formats/`, with `digest`: a
hash of the interpreter and of every source the compiled code was made from (`formats/` and
`schemas/`: mypyc copies constants of imported modules into the code it writes).

At import, `formats/__init__.py` calls `choose()` first. While the digest matches (and
`MILLRACE_NATIVE` is not `0`) a finder serves `MODULES` from those extensions; every other
module of `formats`, and all of them otherwise, come from their `.py` files, so a stray
extension (an older build's, an older checkout's) is never loaded. The compiled modules call
each other directly, so it is all of them or none.

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
REPO = ROOT.parent
SUFFIX = str(sysconfig.get_config_var("EXT_SUFFIX"))
BUILT = REPO / "build" / "native" / sys.implementation.cache_tag
DIGEST = BUILT / "digest"
GROUP = "formats.native_group"  # mypyc's shared library of the group, `formats.native_group__mypyc`

# Not compiled: the two `__init__` modules, `framing` (mypyc does not take its AnyStr
# generic), `otlp_json` (msgspec builds its Structs: they stay Python classes) and this module.
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
_EXTENSIONS = frozenset((*MODULES, GROUP + "__mypyc"))


def source(module: str) -> Path:
    return REPO.joinpath(*module.split(".")).with_suffix(".py")


def extension(module: str) -> Path:
    return BUILT.joinpath(*module.split(".")).with_name(module.rpartition(".")[2] + SUFFIX)


def digest() -> str:
    """The interpreter and every source below `formats/` and `schemas/`, by path and bytes."""
    h = hashlib.sha256(SUFFIX.encode() + b"\0")
    for path in sorted((*ROOT.rglob("*.py"), *(REPO / "schemas").rglob("*.py"))):
        h.update(str(path.relative_to(REPO)).encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def built() -> bool:
    """Whether the compiled modules exist for this interpreter, built from the sources as they are."""
    try:
        current = DIGEST.read_text().strip() == digest()
    except OSError:
        return False
    return current and all(extension(name).exists() for name in _EXTENSIONS)


class _Compiled(importlib.abc.MetaPathFinder):
    """Serves the group's modules (and its shared library) from the current build."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in _EXTENSIONS:
            return None
        file = str(extension(fullname))
        return importlib.util.spec_from_file_location(
            fullname, file, loader=importlib.machinery.ExtensionFileLoader(fullname, file)
        )


class _Source(importlib.abc.MetaPathFinder):
    """Every other module of `formats` from its `.py` file, never from an extension beside it."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if not fullname.startswith("formats."):
            return None
        file = REPO.joinpath(*fullname.split("."))
        if (file / "__init__.py").exists():
            return importlib.util.spec_from_file_location(
                fullname, file / "__init__.py", submodule_search_locations=[str(file)]
            )
        if file.with_suffix(".py").exists():
            return importlib.util.spec_from_file_location(fullname, file.with_suffix(".py"))
        return None


def choose() -> bool:
    """Import the group compiled when it is current and allowed, else from source; True if compiled."""
    compiled = os.environ.get("MILLRACE_NATIVE", "1") != "0" and built()
    if not any(isinstance(finder, _Source) for finder in sys.meta_path):
        finders: list[importlib.abc.MetaPathFinder] = [_Compiled(), _Source()] if compiled else [_Source()]
        # Where the standard path finder is, not first: a finder put ahead of ours (atheris'
        # instrumenting one, say) still sees the modules we find.
        at = next(
            (i for i, f in enumerate(sys.meta_path) if f is importlib.machinery.PathFinder),
            len(sys.meta_path),
        )
        sys.meta_path[at:at] = finders
    if not compiled and os.environ.get("MILLRACE_NATIVE") != "0" and DIGEST.exists():
        warnings.warn(
            "formats: the compiled parsers were built from other sources than these; running the "
            "sources (slower). `make native` rebuilds them.",
            RuntimeWarning,
            stacklevel=2,
        )
    return compiled


def compiled() -> bool:
    """Whether the parsers imported in this process are the compiled ones."""
    module = sys.modules.get("formats.common")
    return module is not None and not str(getattr(module, "__file__", "")).endswith(".py")
