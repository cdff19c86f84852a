r"""Fennec's per-target time in the images protocol, measured on its own.

The images protocol charges `fennec` one proxy pass over 100 probe images plus
the recommendation. This script fits Fennec on the offline benchmark without
one target, then times both (median of 15 warm calls) for three targets, so two
checkouts can be compared side by side on an idle machine:

  python experiments/benchmarks/fennec_target_time.py --out=DIR

Writes DIR/fennec_target_time.json.
"""

import json
import os
import time

from absl import app
from absl import flags
import numpy as np

from fennec_jax import recommender
from fennec_jax.benchmarks import offline
from fennec_jax.benchmarks.offline import source as source_lib
from fennec_jax.proxy import embed

_OUT = flags.DEFINE_string('out', None, 'Output directory.')
_TARGETS = flags.DEFINE_list(
    'targets', ['texture_frequency', 'glyph_hebrew', 'count_dots'],
    'Held-out targets.')
_REPEATS = flags.DEFINE_integer('repeats', 15, 'Timed calls per target.')


def _median_seconds(fn, repeats):
  fn()
  fn()  # Warm: compiled, as in the protocol.
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return float(np.median(times))


def main(argv):
  del argv
  history = offline.load()
  source = source_lib.OfflineSource()
  feats, _ = source_lib.proxy_task_features(source, history.task_ids, 100, 0)
  out = {}
  for target in _TARGETS.value:
    j = history.task_index(target)
    train = history.subset(tasks=np.arange(history.num_tasks) != j)
    fennec = recommender.Fennec().fit(
        train, task_embeddings={t: feats[t] for t in train.task_ids})
    images, labels = source.probe(target)
    probe = images[embed.probe_indices(len(images), labels, budget=100,
                                       seed=0)]
    cached = np.asarray(source.proxy_features(probe.copy()))

    def proxy_and_recommend():
      f = np.asarray(source.proxy_features(probe.copy()))
      return fennec.recommend(task_embeddings=[f], top=5)

    def recommend_only():
      return fennec.recommend(task_embeddings=[cached], top=5)

    out[target] = {
        'proxy_plus_recommend_s': _median_seconds(proxy_and_recommend,
                                                  _REPEATS.value),
        'recommend_s': _median_seconds(recommend_only, _REPEATS.value)}
    print(target, out[target])
  if _OUT.value:
    os.makedirs(_OUT.value, exist_ok=True)
    with open(os.path.join(_OUT.value, 'fennec_target_time.json'), 'w') as f:
      json.dump(out, f, indent=1)


if __name__ == '__main__':
  app.run(main)
