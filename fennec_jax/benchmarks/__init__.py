"""Ground-truth benchmarks (public tables, the offline benchmark) and evaluation."""
