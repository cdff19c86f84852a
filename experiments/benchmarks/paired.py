r"""Paired differences between one method and the others in a results.csv.

`fennec evaluate` reports each method's mean over targets with its own
bootstrap interval; two methods' intervals overlap even when one is better
on most targets. This compares them on the same targets: per target, the
method's metric minus the other's, then the mean difference, a 95%
percentile bootstrap over targets (10,000 resamples, seeded) and the number
of targets won.

Command:

  python experiments/benchmarks/paired.py \
      --results=runs/offline_images/results.csv --method=fennec

Prints a Markdown table (and writes it with --out).
"""

import csv

from absl import app
from absl import flags
import numpy as np

_RESULTS = flags.DEFINE_string('results', None, 'A results.csv of `fennec '
                               'evaluate`.', required=True)
_METHOD = flags.DEFINE_string('method', 'fennec', 'The method compared.')
_METRIC = flags.DEFINE_string('metric', 'weighted_tau', 'Column compared.')
_K_SHOT = flags.DEFINE_integer('k_shot', 0, 'Rows with this K.')
_RESAMPLES = flags.DEFINE_integer('resamples', 10_000, 'Bootstrap resamples.')
_OUT = flags.DEFINE_string('out', None, 'Also write the table here.')


def read_metric(path: str, metric: str, k_shot: int
                ) -> dict[str, dict[str, float]]:
  """{method: {target: value}} (the MEAN rows and undefined values left out).

  Raises:
    ValueError: a missing column.
  """
  with open(path, newline='') as f:
    reader = csv.DictReader(f)
    missing = {'method', 'k_shot', 'target', metric} - set(
        reader.fieldnames or ())
    if missing:
      raise ValueError(f'{path}: no column(s) {sorted(missing)}; columns: '
                       f'{reader.fieldnames}')
    out: dict[str, dict[str, float]] = {}
    for row in reader:
      if row['target'] == 'MEAN' or int(row['k_shot']) != k_shot:
        continue
      value = float(row[metric]) if row[metric] else float('nan')
      if np.isfinite(value):
        out.setdefault(row['method'], {})[row['target']] = value
  return out


def paired(values: dict[str, dict[str, float]], method: str,
           resamples: int, seed: int = 0) -> list[dict[str, float | str]]:
  """One row per other method: mean difference, interval, targets won."""
  if method not in values:
    raise ValueError(f'method {method!r} not in the results; methods: '
                     f'{sorted(values)}')
  rows = []
  rng = np.random.default_rng(seed)
  for other in sorted(values, key=lambda m: -np.mean(
      list(values[m].values()))):
    if other == method:
      continue
    targets = sorted(set(values[method]) & set(values[other]))
    d = np.array([values[method][t] - values[other][t] for t in targets])
    boot = d[rng.integers(0, len(d), (resamples, len(d)))].mean(1)
    lo, hi = np.percentile(boot, [2.5, 97.5])
    rows.append({'other': other, 'mean_diff': float(d.mean()),
                 'low': float(lo), 'high': float(hi),
                 'won': int((d > 0).sum()), 'targets': len(d)})
  return rows


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments {argv[1:]}')
  values = read_metric(_RESULTS.value, _METRIC.value, _K_SHOT.value)
  rows = paired(values, _METHOD.value, _RESAMPLES.value)
  lines = [f'{_METHOD.value} minus each method, {_METRIC.value}, K = '
           f'{_K_SHOT.value} ({_RESULTS.value}):', '',
           '| other | mean difference [95% CI] | targets won |',
           '|---|---|---|']
  lines += [f"| {r['other']} | {r['mean_diff']:+.3f} [{r['low']:.3f}, "
            f"{r['high']:.3f}] | {r['won']} / {r['targets']} |" for r in rows]
  text = '\n'.join(lines)
  print(text)
  if _OUT.value:
    with open(_OUT.value, 'w') as f:
      f.write(text + '\n')


if __name__ == '__main__':
  app.run(main)
