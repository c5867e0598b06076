"""Fuzzing helpers shared by tests/test_fuzz.py (hypothesis) and fuzz_parsers.py (atheris)."""
