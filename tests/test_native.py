"""The compiled parsers (formats/native.py): in use where they can be built, never stale, the same rows.

The rest of the suite runs whichever the build gave (compiled wherever a C compiler exists:
`make test` builds them first); these tests run the other side too, in child processes over
a copy of the package, so the repository's own files are never touched.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import formats
from formats import native
from ops.native import compiler, tool_requirements
from tests.conftest import shipped_packages

REPO = Path(__file__).resolve().parent.parent

# Parses one body of each shape the bench sends and prints how the parsers were imported and
# what they gave, as JSON.
PROBE = """
import json, random, sys, warnings
warnings.simplefilter("always")
import formats
from formats import PARSERS, native
from formats.base import ParseContext, ParseError
sys.path.append(sys.argv[1])
from bench import payloads
rng = random.Random(7)
events = payloads.events(rng, 50, now_ms=1_796_600_000_000)
out = {"native": formats.NATIVE, "compiled": native.compiled(), "rows": {}}
for name, dialect in sorted(payloads.DIALECTS.items()):
    body = dialect.render(events)
    ctx = ParseContext(received_at_ns=1_796_600_000_000_000_000, path=dialect.path,
                       content_type=dialect.content_type)
    try:
        parsed = PARSERS[dialect.parser](body, ctx)
        out["rows"][name] = [parsed.rows, [(r.index, r.reason) for r in parsed.rejected]]
    except ParseError as exc:
        out["rows"][name] = [exc.code, exc.message]
print(json.dumps(out, default=repr))
"""


def probe(package_root: Path, env: dict[str, str] | None = None) -> tuple[dict[str, object], str]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(REPO)],
        cwd=package_root,
        env={**os.environ, "PYTHONPATH": str(package_root), **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1]), done.stderr


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    """The formats and schemas packages as they are here, with their compiled build and digest."""
    for package in ("formats", "schemas"):
        shutil.copytree(REPO / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    if native.BUILT.exists():
        shutil.copytree(native.BUILT, tmp_path / native.BUILT.relative_to(REPO))
    return tmp_path


def test_the_parsers_run_compiled_where_they_can_be_built() -> None:
    if os.environ.get("MILLRACE_NATIVE") == "0":
        pytest.skip("MILLRACE_NATIVE=0: the suite runs the parsers from source")
    if compiler() is None:  # the build's own test
        pytest.skip("no C compiler here: the parsers run from source")
    assert native.built(), "the compiled parsers are missing or stale: `make native` builds them"
    assert formats.NATIVE and native.compiled()
    for module in native.MODULES:
        assert not str(sys.modules[module].__file__).endswith(".py"), module


def test_compiled_and_source_parsers_give_the_same_rows(copy: Path) -> None:
    source, _ = probe(copy, {"MILLRACE_NATIVE": "0"})
    assert source["native"] is False and source["compiled"] is False
    if not native.built():
        pytest.skip("no compiled parsers to compare with")
    compiled, _ = probe(copy)
    assert compiled["native"] is True and compiled["compiled"] is True
    assert compiled["rows"] == source["rows"]
    assert len(source["rows"]) == 10 and all(isinstance(v[0], list) and v[0] for v in source["rows"].values())


@pytest.mark.parametrize(
    ("edited", "old", "new", "dataset"),
    [
        # A parser's own source.
        ("formats/es_bulk.py", '"dataset": index,', '"dataset": index + "-edited",', "logs-bench-edited"),
        # A module the compiled code read a constant of (mypyc copies it into the extension).
        ("schemas/record.py", 'LOGS_TABLE: Final = "logs"', 'LOGS_TABLE: Final = "logs2"', "logs-bench"),
    ],
)
def test_a_source_edited_after_the_build_runs_from_source(
    copy: Path, edited: str, old: str, new: str, dataset: str
) -> None:
    if not native.built():
        pytest.skip("no compiled parsers to go stale")
    path = copy / edited
    assert old in path.read_text()
    path.write_text(path.read_text().replace(old, new))
    result, stderr = probe(copy)
    assert result["native"] is False and result["compiled"] is False
    assert "`make native` rebuilds them" in stderr
    assert {row["dataset"] for row in result["rows"]["es_bulk"][0]} == {dataset}


def test_an_extension_left_inside_the_package_is_never_loaded(copy: Path) -> None:
    """What an older build or checkout leaves in `formats/` (git ignores it): the sources win."""
    if not native.built():
        pytest.skip("no compiled parsers to misplace")
    for module in native.MODULES:
        stray = native.extension(module)
        shutil.copy(stray, copy / "formats" / stray.relative_to(native.BUILT / "formats"))
    shutil.rmtree(copy / native.BUILT.relative_to(REPO))  # no current build: sources only
    result, stderr = probe(copy)
    assert result["native"] is False and result["compiled"] is False
    assert "make native" not in stderr  # nothing was built here: no build to call stale
    assert any((copy / "formats").glob("*.so"))
    source, _ = probe(copy, {"MILLRACE_NATIVE": "0"})
    assert result["rows"] == source["rows"]


def test_an_installed_wheel_compiles_its_parsers_as_the_image_does(tmp_path: Path) -> None:
    """The Dockerfile's builder: the wheel installed, then `python -m ops.native` run on the
    installed package (no checkout), with the build tools uv.lock pins; the parsers it serves
    from there are the compiled ones."""
    if compiler() is None:
        pytest.skip("no C compiler here: nothing to build")
    if os.environ.get("MILLRACE_NATIVE") == "0":
        pytest.skip("MILLRACE_NATIVE=0: the parsers run from source")
    site, wheels, src = tmp_path / "site", tmp_path / "wheels", tmp_path / "src"
    # What the builder copies (the packages the wheel is made of), so the build leaves the
    # checkout alone.
    for package in shipped_packages():
        shutil.copytree(REPO / package, src / package, ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(src)],
        cwd=tmp_path,
        capture_output=True,
        timeout=300,
        check=True,
    )
    (wheel,) = wheels.glob("millrace-*.whl")
    subprocess.run([*pip, "install", "--no-deps", "--target", str(site), str(wheel)], timeout=300, check=True)
    env = {**os.environ, "PYTHONPATH": str(site)}
    env.pop("MILLRACE_NATIVE", None)

    def ops_native(*args: str) -> subprocess.CompletedProcess[str]:
        """`python -m ops.native ARGS` as the image's builder runs it: the installed package's."""
        command = [sys.executable, "-m", "ops.native", *args]
        return subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)

    tools = ops_native("--tools-from", str(REPO / "uv.lock")).stdout.splitlines()
    assert {t.split("==")[0] for t in tools} >= {"mypy", "setuptools", "mypy-extensions"}
    assert all("==" in t for t in tools), tools
    assert "no mypy configuration" in ops_native().stderr  # nothing beside an installed package
    built = ops_native("--config", str(REPO / "pyproject.toml"))
    assert "parser modules compiled" in built.stdout, built.stderr
    assert (site / native.BUILT.relative_to(REPO) / "digest").exists()  # beside the installed package
    assert not (site / ".mypy_cache").exists()  # the image keeps what is in site-packages
    result, stderr = probe(site, {"PYTHONPATH": str(site)})
    assert result["native"] is True and result["compiled"] is True, stderr


def test_the_build_tools_carry_the_markers_of_the_paths_that_need_them(tmp_path: Path) -> None:
    """`--tools-from` pins what the tools need, each under the markers of its paths (pip evaluates
    them): a dependency of another interpreter stays out here, and so does what only it needs."""
    lock = tmp_path / "uv.lock"
    lock.write_text(
        """
[[package]]
name = "mypy"
version = "2.0"
dependencies = [
    { name = "librt", marker = "platform_python_implementation != 'PyPy'" },
    { name = "shared" },
    { name = "twice", version = "2.0", marker = "python_version >= '3.12'" },
]

[[package]]
name = "librt"
version = "0.1"
dependencies = [{ name = "shared" }, { name = "only-librt" }]

[[package]]
name = "only-librt"
version = "1.0"

[[package]]
name = "shared"
version = "3.0"
dependencies = [{ name = "mypy" }]

[[package]]
name = "twice"
version = "1.0"

[[package]]
name = "twice"
version = "2.0"

[[package]]
name = "setuptools"
version = "80.0"
"""
    )
    assert tool_requirements(lock) == [
        "librt==0.1 ; (platform_python_implementation != 'PyPy')",
        "mypy==2.0",
        "only-librt==1.0 ; (platform_python_implementation != 'PyPy')",
        "setuptools==80.0",
        "shared==3.0",  # needed always (through mypy), whatever else also needs it
        "twice==2.0 ; (python_version >= '3.12')",  # the version the dependency names
    ]
