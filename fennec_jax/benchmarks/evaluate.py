"""`fennec evaluate` on a history: load it, build its methods, run the
leave-one-task-out protocol and write the report.

The protocol is `fennec_jax.benchmarks.protocol`, the methods
`fennec_jax.benchmarks.methods`; the images and leave-one-model-out
protocols are `fennec_jax.benchmarks.images` and
`fennec_jax.benchmarks.models_out`.
"""

from collections.abc import Mapping, Sequence
import time
from typing import Any

from absl import logging

from fennec_jax.benchmarks import methods as methods_lib
from fennec_jax.benchmarks import protocol
from fennec_jax.benchmarks import report


def run(
    out_dir: str,
    benchmark: str | None = None,
    history_path: str | None = None,
    k_shots: Sequence[int] = protocol.DEFAULT_K_SHOTS,
    num_seeds: int = protocol.DEFAULT_NUM_SEEDS,
    targets: Sequence[str] | None = None,
    all_targets: bool = False,
    methods: Sequence[str] | None = None,
    space_config: Mapping[str, Any] | None = None,
    seed: int = 0,
    duplicates: str = 'error',
) -> tuple[protocol.Results, dict[str, str]]:
  """Loads a history, runs the protocol and writes CSV, markdown and PNG.

  This is the one library function behind `fennec evaluate` and
  `experiments/main.py --config=experiments/configs/evaluate.py`.

  Args:
    out_dir: where `results.{csv,md,png}` go (created).
    benchmark: bundled benchmark name (exclusive with `history_path`).
    history_path: long-format CSV file.
    k_shots: K values.
    num_seeds: draws per (target, K).
    targets: task ids; default: the benchmark's reported targets, or all.
    all_targets: evaluate every task (ignored if `targets` is given).
    methods: method names to run (default all that apply).
    space_config: `SpaceConfig` overrides.
    seed: root seed (draws and space).
    duplicates: with `history_path`, how differing scores of one pair are
      resolved (`fennec_jax.history.DUPLICATE_POLICIES`).

  Returns:
    `(results, paths)`.
  """
  start = time.perf_counter()
  history, baseline_scores = protocol.load_history(benchmark, history_path,
                                                   duplicates)
  logging.info('evaluating %r', history)
  ranking_methods = methods_lib.build_methods(
      history, methods, baseline_scores, space_config, seed)
  if not targets:
    targets = protocol.default_targets(history, all_targets)
  results = protocol.evaluate(history, ranking_methods, k_shots=k_shots,
                              num_seeds=num_seeds, targets=targets, seed=seed)
  paths = report.write_all(results, out_dir)
  logging.info('evaluate: %d targets, %d methods in %.1fs', len(targets),
               len(ranking_methods), time.perf_counter() - start)
  return results, paths
