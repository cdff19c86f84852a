"""Ground-truth benchmarks (public tables, offline benchmark) and evaluation.

`load_benchmark(name)` returns a `fennec_jax.History`; `list_benchmarks()` the
valid names; `load_baseline_scores(name)` the raw estimator scores a benchmark
ships. Loading reads bundled CSVs only (no network, no JAX).
"""

from fennec_jax.benchmarks import public

list_benchmarks = public.list_benchmarks
load_benchmark = public.load_benchmark
load_baseline_scores = public.load_baseline_scores
third_party_path = public.third_party_path
