"""Benchmarks: peers and baselines measured side by side in one run (``python -m bench``)."""
