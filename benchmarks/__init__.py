"""Benchmark scripts (python benchmarks/NAME.py), importable so tests reuse their logic."""
