"""Writes evaluation results: CSV, markdown with bootstrap intervals, PNG plot.

The 95% intervals are percentile bootstraps over targets: targets are the
unit of replication of the protocol (seeds are already averaged within a
target), so the interval says how much the mean would move with another
sample of tasks.
"""

from collections.abc import Sequence
import csv
import os
from typing import Any

from absl import logging
import numpy as np

# The protocol's metrics, in CSV column order; `MEAN` is the across-target row.
METRICS = ('pearson', 'weighted_tau', 'top1_regret')
MEAN = 'MEAN'
CSV_COLUMNS = ('method', 'k_shot', 'target') + METRICS


def bootstrap_ci(values: Sequence[float], num_resamples: int = 2000,
                 level: float = 0.95, seed: int = 0) -> tuple[float, float]:
  """Percentile bootstrap interval of the mean.

  Args:
    values: per-target values.
    num_resamples: bootstrap resamples.
    level: coverage of the interval.
    seed: RNG seed (the interval is deterministic given it).

  Returns:
    `(low, high)`; both equal the value for a single target.

  Raises:
    ValueError: if `values` is empty or not finite.
  """
  values = np.asarray(values, np.float64)
  if values.ndim != 1 or not values.size:
    raise ValueError(f'need a non-empty 1-D list of values, got {values!r}.')
  if not np.isfinite(values).all():
    raise ValueError(f'values must be finite, got {values!r}.')
  rng = np.random.default_rng(seed)
  idx = rng.integers(0, len(values), size=(num_resamples, len(values)))
  means = values[idx].mean(1)
  alpha = (1.0 - level) / 2.0
  return (float(np.quantile(means, alpha)),
          float(np.quantile(means, 1.0 - alpha)))


def read_metric_csv(path: str, metric: str = 'weighted_tau', k_shot: int = 0
                    ) -> dict[str, dict[str, float]]:
  """`{method: {target: value}}` from a results CSV (`write_csv`).

  The `MEAN` rows, other K and undefined (empty or NaN) values are left out.

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
      if row['target'] == MEAN or int(row['k_shot']) != k_shot:
        continue
      value = float(row[metric]) if row[metric] else float('nan')
      if np.isfinite(value):
        out.setdefault(row['method'], {})[row['target']] = value
  return out


def paired_differences(values: dict[str, dict[str, float]], method: str,
                       num_resamples: int = 10_000, seed: int = 0
                       ) -> list[dict[str, Any]]:
  """`method` minus each other method, target by target.

  Two methods' own intervals overlap even when one is better on most
  targets; the paired difference removes the targets' shared difficulty.

  Args:
    values: `{method: {target: value}}` (`read_metric_csv`).
    method: the method compared with all others.
    num_resamples: bootstrap resamples of the mean difference.
    seed: bootstrap seed.

  Returns:
    One dict per other method, best other first: `other`, `mean_diff`,
    `low`, `high` (percentile bootstrap over the common targets), `won`
    (targets where `method` is higher), `targets`.

  Raises:
    ValueError: `method` not in `values`, or no common target.
  """
  if method not in values:
    raise ValueError(f'method {method!r} not in the results; methods: '
                     f'{sorted(values)}')
  rows = []
  for other in sorted(values, key=lambda m: -np.mean(list(values[m].values()))):
    if other == method:
      continue
    targets = sorted(set(values[method]) & set(values[other]))
    if not targets:
      raise ValueError(f'{method!r} and {other!r} share no target.')
    d = np.array([values[method][t] - values[other][t] for t in targets])
    low, high = bootstrap_ci(d, num_resamples, seed=seed)
    rows.append({'other': other, 'mean_diff': float(d.mean()), 'low': low,
                 'high': high, 'won': int((d > 0).sum()),
                 'targets': len(targets)})
  return rows


def _has_seconds(results: Any) -> bool:
  return any(np.isfinite(getattr(r, 'seconds_per_target', np.nan))
             for r in results.rows)


def write_csv(results: Any, path: str) -> None:
  """Writes one row per (method, K, target) plus the `MEAN` rows.

  A `seconds_per_target` column is added when methods report timings (the
  images protocol).
  """
  timed = _has_seconds(results)
  with open(path, 'w', newline='') as f:
    w = csv.writer(f)
    w.writerow(CSV_COLUMNS + (('seconds_per_target',) if timed else ()))
    for r in results.rows:
      w.writerow([r.method, r.k_shot, r.target] +
                 [f'{getattr(r, m):.6f}' for m in METRICS] +
                 ([f'{r.seconds_per_target:.6f}'] if timed else []))


def markdown_table(results: Any) -> str:
  """One line per method and K: mean [95% CI] of each metric over targets."""
  timed = _has_seconds(results)
  head = ['method', 'K'] + [f'{m} (mean [95% CI])'
                            for m in METRICS] + ['targets', 'models scored']
  if timed:
    head.append('seconds per target')
  lines = [
      f'Leave-one-task-out on `{results.benchmark}`: metrics on the unobserved '
      f'models, averaged over seeds, then over targets '
      f'({", ".join(results.targets)}); 95% percentile bootstrap over '
      'targets. Column "targets": targets where the metric is defined '
      "(the scored models' true scores are not all equal). Column "
      '"models scored": mean fraction of the unobserved models a method '
      'could score (estimator scores and metadata cover only some models; '
      'such a method is scored on the ones it covers).',
      '',
      '| ' + ' | '.join(head) + ' |',
      '|' + '---|' * len(head),
  ]
  for k in results.k_shots:
    for method in results.methods:
      vals = {m: results.per_target(method, k, m)
              for m in METRICS}
      if not len(vals['pearson']):
        continue
      cells = [method, str(k)]
      for m in METRICS:
        finite = vals[m][np.isfinite(vals[m])]
        if not len(finite):
          cells.append('undefined')
          continue
        lo, hi = bootstrap_ci(finite)
        cells.append(f'{results.mean(method, k, m):.3f} [{lo:.3f}, {hi:.3f}]')
      defined = int(np.isfinite(vals['pearson']).sum())
      total = len(vals['pearson'])
      cells.append(str(total) if defined == total else f'{defined}/{total}')
      cov = getattr(results, 'mean_coverage', lambda *_: float('nan'))(
          method, k)
      cells.append(f'{cov:.0%}' if np.isfinite(cov) else '')
      if timed:
        sec = [r.seconds_per_target for r in results.rows
               if r.method == method and r.k_shot == k and r.target == MEAN]
        cells.append(f'{sec[0]:.3g}' if sec and np.isfinite(sec[0]) else '')
      lines.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines) + '\n'


def k_shot_gains(results: Any, metric: str = 'weighted_tau',
                 reference: str = 'popularity', num_resamples: int = 10_000,
                 seed: int = 0) -> list[dict[str, Any]]:
  """For each method and K > 0: paired gains over K = 0 and over `reference`.

  `vs_k0` is K minus the method's own K = 0 prediction scored on the same
  unobserved models (`Results.paired_k0`); `vs_reference` is the method
  minus `reference` at the same K (same targets, draws and unobserved
  models). Both are means over targets of seed-averaged differences, with a
  percentile bootstrap interval over targets.

  Returns:
    Rows `{method, k_shot, vs_k0, vs_k0_low, vs_k0_high, vs_reference,
    vs_reference_low, vs_reference_high, targets}` (NaN where a side is
    missing).
  """
  nan = float('nan')
  rows = []
  for k in results.k_shots:
    if k == 0:
      continue
    ref = {}
    if reference in results.methods:
      ref = {t: v for t, v in zip(results.targets, results.per_target(
          reference, k, metric)) if np.isfinite(v)}
    for method in results.methods:
      row = {'method': method, 'k_shot': k}
      paired = getattr(results, 'paired_k0', lambda *_: {})(method, k, metric)
      vals = {t: v for t, v in zip(results.targets, results.per_target(
          method, k, metric)) if np.isfinite(v)}
      diffs = {'vs_k0': list(paired.values()),
               'vs_reference': ([vals[t] - ref[t] for t in vals if t in ref]
                                if method != reference else [])}
      for name, d in diffs.items():
        if d:
          low, high = bootstrap_ci(d, num_resamples, seed=seed)
          row.update({name: float(np.mean(d)), f'{name}_low': low,
                      f'{name}_high': high})
        else:
          row.update({name: nan, f'{name}_low': nan, f'{name}_high': nan})
      row['targets'] = len(vals)
      rows.append(row)
  return rows


def gains_table(results: Any, reference: str = 'popularity') -> str:
  """Markdown of `k_shot_gains` for weighted tau and Pearson ('' if no K>0)."""
  lines = []
  for metric in ('weighted_tau', 'pearson'):
    rows = k_shot_gains(results, metric, reference)
    if not rows:
      return ''
    if not lines:
      lines += [
          '',
          f'Gains at K > 0, paired: "vs K=0" is K minus the same method\'s '
          f'K = 0 prediction scored on the same unobserved models; "vs '
          f'{reference}" is the method minus {reference} at the same K '
          '(same targets, draws and unobserved models). Mean over targets '
          '[95% percentile bootstrap over targets].',
          '',
          '| metric | method | K | vs K=0 | vs ' + reference + ' |',
          '|---|---|---|---|---|']

    def cell(r, name):
      if not np.isfinite(r[name]):
        return ''
      return (f'{r[name]:+.3f} [{r[name + "_low"]:+.3f}, '
              f'{r[name + "_high"]:+.3f}]')

    lines += [f'| {metric} | {r["method"]} | {r["k_shot"]} | '
              f'{cell(r, "vs_k0")} | {cell(r, "vs_reference")} |'
              for r in rows]
  return '\n'.join(lines) + '\n'


def write_markdown(results: Any, path: str) -> None:
  with open(path, 'w') as f:
    f.write(markdown_table(results))
    if hasattr(results, 'same_models'):
      f.write(gains_table(results))


def write_plot(results: Any, path: str) -> None:
  """Mean weighted tau and Pearson vs K per method, with bootstrap bands."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top

  ks = results.k_shots
  fig, axes = plt.subplots(1, 2, figsize=(10, 4))
  for ax, metric in zip(axes, ('weighted_tau', 'pearson')):
    for method in results.methods:
      xs, ys, lo, hi = [], [], [], []
      for k in ks:
        v = results.per_target(method, k, metric)
        v = v[np.isfinite(v)]
        if not len(v):
          continue
        a, b = bootstrap_ci(v)
        xs.append(k)
        ys.append(results.mean(method, k, metric))
        lo.append(a)
        hi.append(b)
      if not xs:
        continue
      (line,) = ax.plot(xs, ys, marker='o', label=method)
      ax.fill_between(xs, lo, hi, color=line.get_color(), alpha=0.15)
    ax.set_xlabel('K (observed models of the target)')
    ax.set_ylabel(f'mean {metric}')
    ax.grid(alpha=0.3)
  axes[0].legend(fontsize=7)
  fig.suptitle(f'{results.benchmark}: leave one task out')
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def write_all(results: Any, out_dir: str) -> dict[str, str]:
  """Writes `results.csv`, `results.md` and `results.png` into `out_dir`.

  Returns:
    `{'csv': path, 'md': path, 'png': path}`.
  """
  os.makedirs(out_dir, exist_ok=True)
  paths = {ext: os.path.join(out_dir, f'results.{ext}')
           for ext in ('csv', 'md', 'png')}
  write_csv(results, paths['csv'])
  write_markdown(results, paths['md'])
  write_plot(results, paths['png'])
  logging.info('wrote %s', ', '.join(paths.values()))
  return paths


def write_time_plot(results: Any, path: str) -> None:
  """Mean weighted tau at the smallest K vs seconds per target, per method."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top

  k = results.k_shots[0]
  fig, ax = plt.subplots(figsize=(6, 4))
  for r in results.rows:
    if r.target != MEAN or r.k_shot != k:
      continue
    if not (np.isfinite(r.seconds_per_target) and np.isfinite(
        r.weighted_tau)):
      continue
    ax.scatter(max(r.seconds_per_target, 1e-6), r.weighted_tau)
    ax.annotate(r.method, (max(r.seconds_per_target, 1e-6), r.weighted_tau),
                fontsize=7, xytext=(3, 3), textcoords='offset points')
  ax.set_xscale('log')
  ax.set_xlabel('seconds per target (log)')
  ax.set_ylabel(f'mean weighted tau (K={k})')
  ax.grid(alpha=0.3)
  ax.set_title(f'{results.benchmark}: quality vs time')
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def write_prediction_plot(predictions: dict[str, dict[str, np.ndarray]],
                          true: dict[str, np.ndarray], path: str,
                          title: str = '') -> None:
  """Predicted vs true accuracy, one panel per method, all targets pooled.

  Predictions are z-scored within each target (estimators' raw scores have
  no accuracy scale; the rankings are what is compared), true accuracies
  are shown as they are.

  Args:
    predictions: `{method: {target: [M] prediction}}`.
    true: `{target: [M] true accuracy}` (NaN = unobserved, not drawn).
    path: PNG file to write.
    title: figure title.
  """
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top

  methods = [m for m in predictions if predictions[m]]
  cols = min(4, max(1, len(methods)))
  rows = -(-len(methods) // cols) if methods else 1
  fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3 * rows),
                           squeeze=False)
  for ax in axes.ravel()[len(methods):]:
    ax.axis('off')
  for ax, method in zip(axes.ravel(), methods):
    for target, pred in predictions[method].items():
      y = np.asarray(true[target], np.float64)
      ok = np.isfinite(y) & np.isfinite(pred)
      if ok.sum() < 2:
        continue
      p = pred[ok]
      z = (p - p.mean()) / (p.std() if p.std() > 0 else 1.0)
      ax.scatter(z, y[ok], s=6, alpha=0.6)
    ax.set_title(method, fontsize=8)
    ax.set_xlabel('prediction (z-scored per target)', fontsize=7)
    ax.set_ylabel('true accuracy', fontsize=7)
    ax.grid(alpha=0.3)
  fig.suptitle(title or 'predicted vs true accuracy (one color per target)')
  fig.tight_layout()
  fig.savefig(path, dpi=90)
  plt.close(fig)
