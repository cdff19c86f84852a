r"""Speed of the paper-faithful Fennec's parts on this CPU (not a test).

Measures (wall and process CPU seconds; the machine may be shared, so CPU
time is the steadier number):

* the 25-tree forest on 3,000 images (30 tasks x 100) x 768 dims -> 5
  outputs: all features (the paper), 'sqrt' features, and after PCA to 64
  dims (`PaperConfig.embedding_pca`, the default);
* the masked NMF (k = 5, 1,000 multiplicative updates, one jitted loop) of
  a 100 x 50 matrix, compiled and warm;
* `FennecPaper.fit` end to end (30 models x 30 tasks, 100 x 768 images per
  task, default config) and `predict` for one new task of 100 images.

Command (about 2 CPU minutes; --quick runs 3 trees per forest):

  .venv/bin/python experiments/benchmarks/paper_speed.py --out=/tmp/paper_speed

Writes `results.json` and `results.md` to --out.
"""

import json
import os
import time

from absl import app
from absl import flags
from absl import logging
import numpy as np

from fennec_jax import forest
from fennec_jax import history as history_lib
from fennec_jax import paper

_OUT = flags.DEFINE_string('out', None, 'Directory for results.json/.md.',
                           required=True)
_QUICK = flags.DEFINE_bool('quick', False, '3 trees per forest.')


def _timed(fn):
  wall, cpu = time.perf_counter(), time.process_time()
  out = fn()
  return out, time.perf_counter() - wall, time.process_time() - cpu


def _world(num_models, num_tasks, images, dim, rng):
  u = rng.uniform(0.1, 1.0, size=(num_models, 5))
  v = rng.uniform(0.1, 1.0, size=(num_tasks, 5))
  mix = rng.normal(size=(5, dim))
  emb = {f't{j}': v[j] @ mix + rng.normal(size=(images, dim))
         for j in range(num_tasks)}
  hist = history_lib.History(
      model_ids=[f'm{i}' for i in range(num_models)],
      task_ids=[f't{j}' for j in range(num_tasks)],
      scores=u @ v.T, mask=np.ones((num_models, num_tasks), bool))
  return hist, emb, v


def main(argv):
  del argv
  rng = np.random.default_rng(0)
  trees = 3 if _QUICK.value else 25
  rows = []
  hist, emb, v = _world(30, 30, 100, 768, rng)
  x = np.concatenate([emb[t] for t in hist.task_ids])
  y = np.repeat(v, 100, 0)
  xc = x - x.mean(0)
  x64 = xc @ np.linalg.eigh(xc.T @ xc)[1][:, ::-1][:, :64]
  for name, inputs, max_features in (('raw768_all_features', x, None),
                                     ('raw768_sqrt_features', x, 'sqrt'),
                                     ('pca64_all_features', x64, None)):
    config = forest.ForestConfig(num_trees=trees, max_features=max_features)
    _, wall, cpu = _timed(
        lambda: forest.RandomForestRegressor(config).fit(inputs, y))  # pylint: disable=cell-var-from-loop
    rows.append(dict(what=f'forest_fit_{name}', trees=trees,
                     shape=list(inputs.shape), wall_s=wall, cpu_s=cpu))
    logging.info('%s', rows[-1])

  scores = rng.uniform(size=(100, 50))
  mask = rng.uniform(size=scores.shape) < 0.8
  _timed(lambda: paper.nmf(scores, mask, num_iterations=1000))  # Compile.
  res, wall, cpu = _timed(lambda: paper.nmf(scores, mask,
                                            num_iterations=1000))
  rows.append(dict(what='nmf_100x50_k5_1000it_warm', wall_s=wall, cpu_s=cpu,
                   loss=res.loss))

  meta = {m: {'num_params': 1e6 * (i + 1), 'num_layers': 10 + i % 5,
              'cluster': i % 3} for i, m in enumerate(hist.model_ids)}
  config = paper.PaperConfig(num_trees=trees)
  fit, wall, cpu = _timed(
      lambda: paper.FennecPaper(config).fit(hist, emb, model_meta=meta))
  rows.append(dict(what='fennec_paper_fit_30x30_100x768', trees=trees,
                   wall_s=wall, cpu_s=cpu))
  new = rng.normal(size=(100, 768))
  fit.predict([new])
  _, wall, cpu = _timed(lambda: fit.predict([new]))
  rows.append(dict(what='fennec_paper_predict_1task_100img', wall_s=wall,
                   cpu_s=cpu))

  os.makedirs(_OUT.value, exist_ok=True)
  with open(os.path.join(_OUT.value, 'results.json'), 'w') as f:
    json.dump(rows, f, indent=1)
  lines = ['| what | wall s | CPU s |', '|---|---|---|']
  lines += [f'| {r["what"]} | {r["wall_s"]:.3f} | {r["cpu_s"]:.3f} |'
            for r in rows]
  with open(os.path.join(_OUT.value, 'results.md'), 'w') as f:
    f.write('\n'.join(lines) + '\n')
  logging.info('\n%s', '\n'.join(lines))


if __name__ == '__main__':
  app.run(main)
