"""Side-by-side throughput and quality scripts (python -m benchmarks.<name>)."""
