"""Garbage-collector settings for the long-running processes (gateway and worker)."""

from __future__ import annotations

import gc

# Allocations (net of frees) before a young collection. Request bodies decode into
# thousands of short-lived objects that reference counting frees anyway; with the default
# of 700 the gateway spent ~11% of its CPU in collections that found nothing, rescanning
# everything start-up allocated each time (bench/RESULTS.md). The worker keeps ~10^5 row
# dicts alive per batch, which default thresholds rescan again and again.
YOUNG_THRESHOLD = 50_000


def tune_gc() -> None:
    """Freeze what start-up allocated (never scanned again) and collect less often."""
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, 20, 100)
