r"""Fennec's task maps on the offline benchmark, over probe draws (an evaluation).

Leave one task out on all 26 offline targets at K = 0, as `fennec evaluate
--benchmark=offline --protocol=images`, but only the methods that need no
zoo forward pass, so several probe draws (`--seeds`) fit in minutes: Fennec
with the 'neighbors' task map (the default), with the 'ridge' map, and
popularity. Each seed draws another 100-image class-balanced probe subset
per task for the proxy and seeds the space; the weighted tau of a seed is
the mean over the targets.

With `--k_shot=K` (default 5) each target also gets K observed fine-tuning
scores (K models drawn with the seed), and the metrics on the other models
compare: images and scores together (`fennec_k`, the neighbour prior updated
by the scores), scores only (`space_k`, the population prior updated by
them), and the K = 0 `fennec` ranking restricted to the same models
(`fennec_0_same_models`).

Command (35 s for 4 seeds on the idle 2-core CPU):

  .venv/bin/python experiments/benchmarks/task_maps.py --seeds=4 \
      --out=experiments/benchmarks/results

Writes `DIR/task_maps_offline.json`.
"""

import json
import os
import time

from absl import app
from absl import flags
from absl import logging
import numpy as np
from scipy import stats

from fennec_jax import recommender
from fennec_jax import space as space_lib
from fennec_jax.benchmarks import baselines
from fennec_jax.benchmarks import evaluate
from fennec_jax.benchmarks import offline
from fennec_jax.benchmarks.offline import source as offline_source

_SEEDS = flags.DEFINE_integer('seeds', 4, 'Probe draws (seeds 0..N-1).')
_NUM_IMAGES = flags.DEFINE_integer('num_images', 100,
                                   'Probe images per task through the proxy.')
_K_SHOT = flags.DEFINE_integer('k_shot', 5, 'Observed scores per target in '
                               'the images + scores comparison; 0 skips it.')
_OUT = flags.DEFINE_string('out', 'runs/task_maps', 'Output directory.')


def evaluate_seed(history, source, seed: int, num_images: int, k_shot: int
                  ) -> dict[str, list[float]]:
  """Per-target weighted tau of each method for one probe draw."""
  feats, _ = offline_source.proxy_task_features(source, history.task_ids,
                                          num_images, seed)
  rng = np.random.default_rng(seed)
  out = {'fennec': [], 'fennec_ridge': [], 'popularity': []}
  if k_shot:
    out.update({f'fennec_{k_shot}': [], f'space_{k_shot}': [],
                'fennec_0_same_models': []})
  for j, target in enumerate(history.task_ids):
    train = evaluate.without_task(history, j)
    true = history.scores[:, j]
    for name, task_map in (('fennec', 'neighbors'), ('fennec_ridge', 'ridge')):
      config = recommender.FennecConfig(
          space=space_lib.SpaceConfig(seed=seed), task_map=task_map)
      fennec = recommender.Fennec(config).fit(
          train, task_embeddings={t: feats[t] for t in train.task_ids})
      pred = fennec.predict(task_embeddings=[feats[target]])[0][0]
      out[name].append(float(stats.weightedtau(pred, true)[0]))
      if name == 'fennec' and k_shot:
        seen = rng.choice(len(true), k_shot, replace=False)
        rest = np.setdiff1d(np.arange(len(true)), seen)
        obs = [{history.model_ids[i]: float(true[i]) for i in seen}]
        both = fennec.predict(task_embeddings=[feats[target]],
                              observed=obs)[0][0]
        scores_only = fennec.predict(observed=obs)[0][0]
        for key, p in ((f'fennec_{k_shot}', both),
                       (f'space_{k_shot}', scores_only),
                       ('fennec_0_same_models', pred)):
          out[key].append(float(stats.weightedtau(p[rest], true[rest])[0]))
    pop = baselines.popularity_scores(train.scores, train.mask)
    out['popularity'].append(float(stats.weightedtau(pop, true)[0]))
  return out


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments {argv[1:]}')
  history = offline.load()
  source = offline_source.OfflineSource()
  start = time.time()
  per_seed = {}
  for seed in range(_SEEDS.value):
    per_seed[seed] = evaluate_seed(history, source, seed, _NUM_IMAGES.value,
                                   _K_SHOT.value)
    logging.info('seed %d: %s', seed, {k: round(float(np.mean(v)), 3)
                                        for k, v in per_seed[seed].items()})
  means = {m: [float(np.mean(per_seed[s][m])) for s in per_seed]
           for m in per_seed[0]}
  result = {
      'targets': list(history.task_ids),
      'seeds': _SEEDS.value,
      'num_images': _NUM_IMAGES.value,
      'k_shot': _K_SHOT.value,
      'mean_weighted_tau_per_seed': means,
      'mean_weighted_tau': {m: float(np.mean(v)) for m, v in means.items()},
      'min_over_seeds': {m: float(np.min(v)) for m, v in means.items()},
      'per_target': {m: {s: per_seed[s][m] for s in per_seed}
                     for m in means},
      'seconds': time.time() - start,
  }
  os.makedirs(_OUT.value, exist_ok=True)
  path = os.path.join(_OUT.value, 'task_maps_offline.json')
  with open(path, 'w') as f:
    json.dump(result, f, indent=1)
  print(json.dumps({k: result[k] for k in (
      'mean_weighted_tau_per_seed', 'mean_weighted_tau', 'min_over_seeds',
      'seconds')}, indent=1))
  logging.info('wrote %s', path)


if __name__ == '__main__':
  app.run(main)
