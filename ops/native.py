"""`python -m ops.native` (`make native`): compile the parsers with mypyc (formats/native.py).

A no-op when the build is current. The extensions are built into a staging directory and
then renamed into `build/native/<interpreter>/`, so a process running the previous ones keeps
the files it mapped. The digest is computed before the build and written last, and only if
the sources did not change meanwhile: until then, and when the build cannot run (no C
compiler, say: checked first, so it costs nothing each time), the parsers run from source and
this says why.

`formats/native.py` is loaded from its file, not imported: importing `formats` would load the
compiled parsers this build is about to replace.

It works on an installed package too (the container image runs it on its wheel): the
extensions then go to `build/native/` beside the installed `formats`, and `--config` names
the pyproject.toml whose `[tool.mypy]` the parsers are checked with (a checkout's own by
default; an installed package has none beside it). `--tools-from uv.lock`
prints the build tools (mypy, its dependencies and setuptools) pinned as the lock pins them,
with their environment markers, for an environment that installs them only to build.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shlex
import shutil
import sys
import sysconfig
import time
import tomllib
from pathlib import Path
from types import ModuleType
from typing import Any

REPO = Path(__file__).resolve().parent.parent


def _native() -> ModuleType:
    spec = importlib.util.spec_from_file_location("_formats_native", REPO / "formats" / "native.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def compiler() -> str | None:
    """The C compiler the build would call, when it is installed."""
    command = os.environ.get("CC") or str(sysconfig.get_config_var("CC") or "cc")
    words = shlex.split(command)
    return shutil.which(words[0]) if words else None


def _drop_old_layout() -> None:
    """Extensions an earlier build left inside `formats/` (they are never imported now)."""
    for stray in (*(REPO / "formats").rglob("*.so"), REPO / "formats" / "native.sha256"):
        stray.unlink(missing_ok=True)


def build(config: Path = REPO / "pyproject.toml") -> bool:
    """Compile the parsers unless the build is current; `config` holds the `[tool.mypy]` the
    parsers are type-checked with (an installed package has none beside it)."""
    native = _native()
    _drop_old_layout()
    if native.built():
        return True
    if not config.is_file():
        print(
            f"native: no mypy configuration at {config} (--config): the parsers run from source",
            file=sys.stderr,
        )
        return False
    if compiler() is None:
        print("native: no C compiler (cc, or $CC): the parsers run from source", file=sys.stderr)
        return False
    try:
        from mypyc.build import mypycify
        from setuptools import Distribution  # type: ignore[import-untyped]
    except ImportError as exc:
        print(f"native: cannot compile the parsers ({exc}); they run from source", file=sys.stderr)
        return False
    started = time.monotonic()
    before = native.digest()
    native.DIGEST.unlink(missing_ok=True)
    staging = native.BUILT.with_name(native.BUILT.name + ".staging")
    shutil.rmtree(staging, ignore_errors=True)
    os.chdir(REPO)  # mypyc names modules by their paths from here
    sources = [str(native.source(m).relative_to(REPO)) for m in native.MODULES]
    temp = native.BUILT.with_name(native.BUILT.name + ".temp")
    try:
        # mypy's cache goes with the build's other scratch files, not into the package's folder.
        options = ["--config-file", str(config.resolve()), "--cache-dir", str(temp / "mypy-cache")]
        extensions = mypycify([*options, *sources], opt_level="3", group_name=native.GROUP, verbose=False)
        dist = Distribution({"name": "millrace-native", "ext_modules": extensions})
        command = dist.get_command_obj("build_ext")
        command.build_lib = str(staging)
        command.build_temp = str(temp)
        dist.run_command("build_ext")
    except (Exception, SystemExit) as exc:  # missing headers, a mypyc refusal (it exits): source it is
        print(f"native: compiling the parsers failed ({exc}); they run from source", file=sys.stderr)
        return False
    for built in staging.rglob("*" + native.SUFFIX):
        target = native.BUILT / built.relative_to(staging)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(built, target)
    shutil.rmtree(staging, ignore_errors=True)
    if native.digest() != before:
        print("native: a source changed during the build; run it again", file=sys.stderr)
        return False
    native.DIGEST.write_text(before + "\n")
    print(f"native: {len(native.MODULES)} parser modules compiled in {time.monotonic() - started:.0f} s")
    return True


# What the build imports: mypy (whose mypyc writes the C) and setuptools (whose build_ext compiles it).
TOOLS = ("mypy", "setuptools")


def tool_requirements(lock: Path) -> list[str]:
    """`TOOLS` and everything they depend on, as `name==version` pins from uv's lock file, each
    with the environment marker of the paths that need it (`pip install -r` evaluates it, so a
    dependency of another platform or interpreter is left out)."""
    entries: list[dict[str, Any]] = tomllib.loads(lock.read_text())["package"]
    by_name = {p["name"]: p for p in entries}
    by_version = {(p["name"], p["version"]): p for p in entries}  # a name locked at two versions
    needed: dict[tuple[str, str], set[str | None]] = {}  # (name, version) -> markers; None: always
    wanted: list[tuple[dict[str, Any], str | None]] = [(by_name[t], None) for t in TOOLS]
    while wanted:
        package, marker = wanted.pop()
        markers = needed.setdefault((package["name"], package["version"]), set())
        if len(markers) >= _MAX_MARKERS:
            # Past a few paths (or round a dependency cycle, where the markers would only grow) it
            # is needed whenever the tools are: installing one package too many is harmless.
            marker = None
        if None in markers or marker in markers:
            continue
        markers.add(marker)
        for dependency in package.get("dependencies", []):
            key = (dependency["name"], dependency.get("version"))
            found = by_version[key] if key in by_version else by_name[dependency["name"]]
            wanted.append((found, _both(marker, dependency.get("marker"))))
    return sorted(_pin(name, version, markers) for (name, version), markers in needed.items())


_MAX_MARKERS = 8


def _both(outer: str | None, inner: str | None) -> str | None:
    if outer is None or inner is None:
        return inner if outer is None else outer
    return f"({outer}) and ({inner})"


def _pin(name: str, version: str, markers: set[str | None]) -> str:
    if None in markers:
        return f"{name}=={version}"
    return f"{name}=={version} ; " + " or ".join(f"({m})" for m in sorted(m for m in markers if m))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ops.native", description=(__doc__ or "").split("\n\n")[0]
    )
    parser.add_argument(
        "--tools-from", type=Path, metavar="LOCK", help="print the build tools pinned by LOCK, build nothing"
    )
    parser.add_argument(
        "--config",
        type=Path,
        default=REPO / "pyproject.toml",
        help="the pyproject.toml whose [tool.mypy] the parsers are checked with (default: the checkout's)",
    )
    args = parser.parse_args(argv)
    if args.tools_from is not None:
        print("\n".join(tool_requirements(args.tools_from)))
        return 0
    build(args.config)
    return 0


if __name__ == "__main__":
    sys.exit(main())
