r"""Tunes the transfer space's defaults on TransferGraph image (leave one out).

For each of the 8 targets TransferGraph reports, the space is fit on the
other 12 tasks; for K in --k_shots and --seeds random draws of K observed
models (among those with a score on the target), the K scores are folded in
and the predicted ranking of the UNOBSERVED models is scored against the
true fine-tuning accuracy with `scipy.stats.weightedtau(predicted, true)` and
Pearson. The baseline `popularity` is each model's mean per-task z-score on
the other tasks (it ignores the K scores). Every configuration in --grid
(a JSON list of SpaceConfig overrides) sees the same draws, drawn exactly as
`fennec evaluate` draws them (`benchmarks.protocol.draw_observed`).

Command (about 1-3 minutes per configuration on the 2-core CPU):

  .venv/bin/python experiments/benchmarks/space_tune.py \
      --out=/tmp/space_tune --grid='[{}]'

Writes `results.json` (every configuration's per-target, per-K means) and
`results.md` (the mean over targets, one row per configuration and K).
"""

import collections
import csv
import json
import os
import time

from absl import app
from absl import flags
from absl import logging
import numpy as np
import scipy.stats

from fennec_jax import space as space_lib
from fennec_jax.benchmarks import protocol

_CSV = flags.DEFINE_string(
    'csv', None, 'TransferGraph image records.csv (model, finetuned_dataset, '
    'eval_accuracy); default: the bundled benchmark via '
    'fennec_jax.benchmarks.load_benchmark("transfergraph_image").')
_OUT = flags.DEFINE_string('out', None, 'Output directory.', required=True)
_GRID = flags.DEFINE_string('grid', '[{}]', 'JSON list of SpaceConfig '
                            'overrides, one configuration each.')
_K_SHOTS = flags.DEFINE_list('k_shots', ['0', '1', '3', '5', '10'],
                             'Observed models per target.')
_SEEDS = flags.DEFINE_integer('seeds', 10, 'Random draws per (target, K).')
_DRAW_SEED = flags.DEFINE_integer('draw_seed', 0, 'Root seed of the draws '
                                  '(as `fennec evaluate --seed`).')

TARGETS = ('stanfordcars', 'svhn', 'caltech101', 'pets', 'cifar100',
           'flowers', 'smallnorb_label_elevation', 'dtd')


def load_csv(path):
  """[M, T] accuracy matrix (NaN = missing) from a TransferGraph records.csv.

  Duplicate (model, task) records are averaged (there are none in the
  published file); rows with an empty accuracy are counted and skipped.
  """
  cells = collections.defaultdict(list)
  skipped = 0
  with open(path) as f:
    for row in csv.DictReader(f):
      if not row['eval_accuracy']:
        skipped += 1
        continue
      cells[(row['model'], row['finetuned_dataset'])].append(
          float(row['eval_accuracy']))
  logging.info('%s: %d cells, %d rows without accuracy skipped.', path,
               len(cells), skipped)
  models = sorted({m for m, _ in cells})
  tasks = sorted({t for _, t in cells})
  scores = np.full((len(models), len(tasks)), np.nan)
  for (m, t), v in cells.items():
    scores[models.index(m), tasks.index(t)] = np.mean(v)
  return scores, list(tasks)


def load():
  if _CSV.value:
    return load_csv(_CSV.value)
  from fennec_jax import benchmarks  # pylint: disable=g-import-not-at-top
  history = benchmarks.load_benchmark('transfergraph_image')
  scores = np.where(history.mask, history.scores, np.nan)
  return scores, list(history.task_ids)


def popularity(train):
  """Mean per-task z-score (population std) over observed entries."""
  mask = np.isfinite(train)
  mean = np.nanmean(train, 0)
  std = np.nanstd(train, 0)
  z = (train - mean) / np.where(std > 0, std, 1.0)
  return np.where(mask, z, 0).sum(1) / np.maximum(mask.sum(1), 1)


def draws(true, k, seeds, target):
  """[seeds, M] observed masks: the same draws as `fennec evaluate`."""
  return protocol.draw_observed(np.isfinite(true), k, seeds, target,
                                    seed=_DRAW_SEED.value)


def metrics(pred, true, eval_idx):
  return (scipy.stats.weightedtau(pred[eval_idx], true[eval_idx])[0],
          scipy.stats.pearsonr(pred[eval_idx], true[eval_idx])[0])


def evaluate(scores, tasks, overrides, k_shots, seeds):
  """Per-target, per-K mean (weighted tau, pearson) for space + popularity."""
  config = space_lib.SpaceConfig(**overrides)
  res = {'fennec_space': {}, 'popularity': {}}
  fit_s = []
  for target in TARGETS:
    j = tasks.index(target)
    true = scores[:, j]
    train = np.delete(scores, j, axis=1)
    t0 = time.perf_counter()
    space = space_lib.fit(train, np.isfinite(train), config)
    fit_s.append(time.perf_counter() - t0)
    pop = popularity(train)
    for k in k_shots:
      obs = draws(true, k, seeds, target)
      vals = np.where(obs, true[None, :], 0.0)
      pred = np.asarray(space.fold_in(vals, obs).predicted, np.float64)
      for name, p in (('fennec_space', pred),
                      ('popularity', np.broadcast_to(pop, pred.shape))):
        per_seed = [metrics(p[s], true, np.flatnonzero(
            np.isfinite(true) & ~obs[s])) for s in range(seeds)]
        res[name].setdefault(str(k), {})[target] = np.mean(per_seed,
                                                           0).tolist()
  return res, float(np.median(fit_s))


def main(argv):
  del argv
  scores, tasks = load()
  grid = json.loads(_GRID.value)
  k_shots = [int(k) for k in _K_SHOTS.value]
  os.makedirs(_OUT.value, exist_ok=True)
  results = []
  lines = ['| config | K | space wtau | space pearson | popularity wtau | '
           'popularity pearson |', '|---|---|---|---|---|---|']
  for overrides in grid:
    res, fit_s = evaluate(scores, tasks, overrides, k_shots, _SEEDS.value)
    results.append({'overrides': overrides, 'results': res,
                    'median_fit_s': fit_s})
    for k in k_shots:
      sp = np.mean(list(res['fennec_space'][str(k)].values()), 0)
      pp = np.mean(list(res['popularity'][str(k)].values()), 0)
      line = (f'| {json.dumps(overrides)} | {k} | {sp[0]:.3f} | {sp[1]:.3f} '
              f'| {pp[0]:.3f} | {pp[1]:.3f} |')
      lines.append(line)
      logging.info('%s', line)
  with open(os.path.join(_OUT.value, 'results.json'), 'w') as f:
    json.dump({'k_shots': k_shots, 'seeds': _SEEDS.value,
               'targets': list(TARGETS), 'runs': results}, f, indent=1)
  with open(os.path.join(_OUT.value, 'results.md'), 'w') as f:
    f.write('\n'.join(lines) + '\n')
  print('\n'.join(lines))


if __name__ == '__main__':
  app.run(main)
