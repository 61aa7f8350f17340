"""Reference implementations in other frameworks, used only by the benchmarks."""
