"""Benchmark scripts that print figures; run one with `python -m benchmarks.<name> --help`."""
