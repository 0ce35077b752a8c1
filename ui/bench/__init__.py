"""`firstline bench`: the benchmark suite (core figures and statistics, a runner, a shared harness, the sections)."""
