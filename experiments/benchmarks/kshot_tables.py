r"""The K-shot table of the README: every bundled benchmark, K = 0 and 5.

For each benchmark this runs exactly `fennec evaluate --benchmark=B
--all_targets --k_shots=0,5 --methods=popularity,fennec_space --seeds=10
--out=OUT/B` (the same library calls, so the same numbers and files) and,
from the same K-shot calibrations, the coverage of the fold-in's 68% / 95%
intervals on the held-out targets
(`fennec_jax.benchmarks.comparisons.coverage_of_intervals`). A benchmark
whose `OUT/B/summary.json` exists is skipped (resumable).

Command:

  python experiments/benchmarks/kshot_tables.py --out=runs/kshot_tables

Prints one Markdown row per benchmark done in OUT and writes them to
OUT/summary.md.
"""

import json
import os
import time

from absl import app
from absl import flags

from fennec_jax import files
from fennec_jax.benchmarks import comparisons
from fennec_jax.benchmarks import methods as methods_lib
from fennec_jax.benchmarks import protocol
from fennec_jax.benchmarks import report

BENCHMARKS = ('transfergraph_image', 'transfergraph_text', 'sfda_group1',
              'model_spider_single', 'model_spider_multi', 'parc_all',
              'parc_controlled')

_OUT = flags.DEFINE_string('out', None, 'Output directory.', required=True)
_BENCHMARKS = flags.DEFINE_list('benchmarks', list(BENCHMARKS),
                                'Benchmarks to run.')
_SEEDS = flags.DEFINE_integer('seeds', 10, 'Draws per (target, K).')


def run_one(name: str, out_dir: str, seeds: int) -> dict:
  """One benchmark: the evaluation, the paired leads and the coverage."""
  start = time.perf_counter()
  history, baseline_scores = protocol.load_history(name)
  intervals = {}
  methods = methods_lib.build_methods(
      history, ['popularity', 'fennec_space'], baseline_scores,
      intervals=intervals)
  results = protocol.evaluate(history, methods, k_shots=(0, 5),
                              num_seeds=seeds,
                              targets=protocol.default_targets(history, True))
  report.write_all(results, out_dir)
  summary = {'benchmark': name, 'seconds': time.perf_counter() - start,
             'load': os.getloadavg()}
  for method in ('popularity', 'fennec_space'):
    for k in (0, 5):
      for metric in ('pearson', 'weighted_tau'):
        summary[f'{method}_{k}_{metric}'] = results.mean(method, k, metric)
  for k in (0, 5):
    space = results.per_target('fennec_space', k, 'weighted_tau')
    pop = results.per_target('popularity', k, 'weighted_tau')
    summary[f'lead_{k}'] = float(sum(s - p for s, p in zip(space, pop))
                                 / len(space))
  cover = comparisons.coverage_of_intervals(history, intervals)
  summary['coverage_68'] = cover['coverage_68']
  summary['coverage_95'] = cover['coverage_95']
  summary['coverage_per_target'] = cover['per_target']
  return summary


def row(s: dict) -> str:
  return (f"| {s['benchmark']} | {s['popularity_0_pearson']:.3f} / "
          f"{s['popularity_0_weighted_tau']:.3f} | "
          f"{s['popularity_5_pearson']:.3f} / "
          f"{s['popularity_5_weighted_tau']:.3f} | "
          f"{s['fennec_space_0_pearson']:.3f} / "
          f"{s['fennec_space_0_weighted_tau']:.3f} | "
          f"{s['fennec_space_5_pearson']:.3f} / "
          f"{s['fennec_space_5_weighted_tau']:.3f} | "
          f"{s['lead_0']:+.3f} → {s['lead_5']:+.3f} | "
          f"{s['coverage_68']:.2f} / {s['coverage_95']:.2f} | "
          f"{s['seconds']:.0f} s (load {s['load'][0]:.1f}) |")


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments {argv[1:]}')
  for name in _BENCHMARKS.value:
    out_dir = os.path.join(_OUT.value, name)
    path = os.path.join(out_dir, 'summary.json')
    if not os.path.exists(path):
      summary = run_one(name, out_dir, _SEEDS.value)
      files.write_text(path, json.dumps(summary, indent=1))
  # Every benchmark done so far (runs of subsets may share OUT).
  rows = []
  for name in BENCHMARKS:
    path = os.path.join(_OUT.value, name, 'summary.json')
    if os.path.exists(path):
      with open(path) as f:
        rows.append(row(json.load(f)))
  table = '\n'.join([
      '| benchmark | popularity K=0 | popularity K=5 | fennec_space K=0 | '
      'fennec_space K=5 | lead K=0 → K=5 | coverage 68% / 95% (K=5) | '
      'wall |', '|---|---|---|---|---|---|---|---|', *rows])
  files.write_text(os.path.join(_OUT.value, 'summary.md'),
                          table + '\n')
  print(table)


if __name__ == '__main__':
  app.run(main)
