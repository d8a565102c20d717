"""The benchmark harness: `bench/run` (full) or `bench/run --quick` (smoke). See docs/BENCHMARKS.md."""
