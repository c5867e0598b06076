"""`python -m ops.native` (`make native`): compile the parsers with mypyc (formats/native.py).

The extensions are built under `build/native/` and then moved into `formats/` with a rename,
so a process running the previous ones keeps the files it mapped. The digest is written last:
until then, and when the build fails (no C compiler, say), the parsers run from source and
this says so; nothing else changes.

`formats/native.py` is loaded from its file, not imported: importing `formats` would load the
compiled parsers this build is about to replace.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import sysconfig
import time
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parent.parent
BUILD = REPO / "build" / "native"


def _native() -> ModuleType:
    spec = importlib.util.spec_from_file_location("_formats_native", REPO / "formats" / "native.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build() -> bool:
    native = _native()
    if native.built():
        native.DIGEST.touch()  # newer than the sources again (a checkout may have touched them)
        print("native: the compiled parsers are current")
        return True
    started = time.monotonic()
    try:
        from mypyc.build import mypycify
        from setuptools import Distribution  # type: ignore[import-untyped]
    except ImportError as exc:
        print(f"native: cannot compile the parsers ({exc}); they run from source", file=sys.stderr)
        return False
    native.DIGEST.unlink(missing_ok=True)
    os.chdir(REPO)  # mypyc names modules by their paths from here
    sources = [str(native.source(m).relative_to(REPO)) for m in native.MODULES]
    try:
        extensions = mypycify(sources, opt_level="3", group_name=native.GROUP, verbose=False)
        dist = Distribution({"name": "millrace-native", "ext_modules": extensions})
        command = dist.get_command_obj("build_ext")
        command.build_lib = str(BUILD / "lib")
        command.build_temp = str(BUILD / "temp")
        dist.run_command("build_ext")
    except Exception as exc:  # a missing compiler or headers, a mypyc refusal: source it is
        print(f"native: compiling the parsers failed ({exc}); they run from source", file=sys.stderr)
        return False
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    for ext in extensions:
        relative = Path(*ext.name.split(".")).with_suffix("")
        built = BUILD / "lib" / f"{relative}{suffix}"
        target = REPO / f"{relative}{suffix}"
        staged = target.with_name(target.name + ".new")
        staged.write_bytes(built.read_bytes())
        os.replace(staged, target)
    native.DIGEST.write_text(native.digest() + "\n")
    print(f"native: {len(native.MODULES)} parser modules compiled in {time.monotonic() - started:.0f} s")
    return True


if __name__ == "__main__":
    build()
