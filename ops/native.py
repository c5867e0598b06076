"""`python -m ops.native` (`make native`): compile the parsers with mypyc (formats/native.py).

A no-op when the build is current. The extensions are built into a staging directory and
then renamed into `build/native/<interpreter>/`, so a process running the previous ones keeps
the files it mapped. The digest is computed before the build and written last, and only if
the sources did not change meanwhile: until then, and when the build cannot run (no C
compiler, say: checked first, so it costs nothing each time), the parsers run from source and
this says why.

`formats/native.py` is loaded from its file, not imported: importing `formats` would load the
compiled parsers this build is about to replace.
"""

from __future__ import annotations

import importlib.util
import os
import shlex
import shutil
import sys
import sysconfig
import time
from pathlib import Path
from types import ModuleType

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


def build() -> bool:
    native = _native()
    _drop_old_layout()
    if native.built():
        return True
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
    try:
        extensions = mypycify(sources, opt_level="3", group_name=native.GROUP, verbose=False)
        dist = Distribution({"name": "millrace-native", "ext_modules": extensions})
        command = dist.get_command_obj("build_ext")
        command.build_lib = str(staging)
        command.build_temp = str(native.BUILT.with_name(native.BUILT.name + ".temp"))
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


if __name__ == "__main__":
    build()
