"""`make test` installs Debian's Chromium when it is missing, and says why when it cannot."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def make_chromium(chromium: str) -> subprocess.CompletedProcess[str]:
    make = shutil.which("make")
    assert make is not None
    # No PATH: no apt-get, no sudo. What `make chromium` does on a machine without them.
    return subprocess.run(
        [make, "-s", "-C", str(ROOT), "chromium", f"CHROMIUM={chromium}"],
        env={"PATH": "/nonexistent"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_missing_chromium_without_apt_fails_and_says_so() -> None:
    done = make_chromium("/nonexistent/chromium")
    assert done.returncode != 0
    assert "need Chromium at /nonexistent/chromium" in done.stderr
    assert "no apt-get" in done.stderr


def test_a_present_chromium_needs_nothing() -> None:
    done = make_chromium("/bin/sh")  # any executable stands in: the target only checks it is there
    assert (done.returncode, done.stderr) == (0, "")
