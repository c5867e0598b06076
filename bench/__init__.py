"""`make bench`: Millrace end to end against its own baselines.

Run as `python -m bench` from the repository root (bench is not an installed package).
"""
