"""Bench cases; each module exposes ``cases(device, quick) -> list[bench.harness.Case]``."""
