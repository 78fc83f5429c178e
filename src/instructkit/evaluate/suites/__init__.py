"""Benchmark loaders (local files or the hub) and suite definitions (YAML)."""

from .registry import BENCHMARKS, builtin_suites, load_benchmark, read_suite

__all__ = ["BENCHMARKS", "builtin_suites", "load_benchmark", "read_suite"]
