"""Benchmarks for eventfold: realistic batches and a load driver (see docs/performance.md)."""
