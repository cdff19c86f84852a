"""Tests of the images protocol on a fake image source."""

import csv
import os
import tempfile

from absl.testing import absltest
import numpy as np

from fennec_jax import history as history_lib
from fennec_jax.benchmarks import baselines
from fennec_jax.benchmarks import images
from fennec_jax.benchmarks import protocol
from fennec_jax.benchmarks.offline import source as offline_source
from fennec_jax.estimators import _batch


class _FakeImages(offline_source.ImageSource):
  """Probes tagged by task; proxy features are a linear image of the task's
  latent vector (so a working embedding path can recover the ranking)."""

  def __init__(self, history, task_vectors, seed=0):
    self.history = history
    self.task_vectors = task_vectors
    self.proj = np.random.default_rng(seed).normal(size=(2, 8))
    self.proxy_batches = []
    self.forwards = []

  def probe(self, task):
    j = self.history.task_index(task)
    images = np.random.default_rng(j).integers(0, 255, (40, 4, 4, 3),
                                               dtype=np.uint8)
    images[:, 0, 0, 0] = j
    return images, np.arange(40) % 4

  def proxy_features(self, images):
    self.proxy_batches.append(len(images))
    j = int(images[0, 0, 0, 0])
    noise = np.random.default_rng(j + 100).normal(size=(len(images), 8))
    return self.task_vectors[j] @ self.proj + 0.01 * noise

  def model_features(self, model_id, images):
    self.forwards.append(model_id)
    j = int(images[0, 0, 0, 0])
    return np.random.default_rng([int(model_id[1:]), j]).normal(
        size=(len(images), 5))


class _ClassCountImages(_FakeImages):
  """Probes of 48 images whose class count differs per target."""

  def __init__(self, history, class_counts):
    super().__init__(history, np.zeros((history.num_tasks, 2)))
    self.class_counts = class_counts

  def probe(self, task):
    images, _ = super().probe(task)
    images = np.concatenate([images, images[:8]])
    return images, np.arange(48) % self.class_counts[task]

  def model_features(self, model_id, images):
    # A width no other test uses, so no other test's compilation is reused.
    j = int(images[0, 0, 0, 0])
    return np.random.default_rng([int(model_id[1:]), j]).normal(
        size=(len(images), 11))


class ImagesProtocolTest(absltest.TestCase):

  def test_estimators_compile_once_per_class_bucket_across_targets(self):
    # Class counts 3, 4 share the bucket 4; 5, 7 the bucket 8: four targets,
    # two compilations of each estimator, and nothing is recompiled for a
    # target whose bucket was seen (no cache is dropped between targets).
    h = history_lib.History.from_matrix(
        np.random.default_rng(0).normal(size=(6, 4)))
    counts = {'t0': 3, 't1': 5, 't2': 4, 't3': 7}
    source = _ClassCountImages(h, counts)
    names = ('logme', 'hscore', 'sfda')
    before = {n: _batch.trace_count(n) for n in names}
    scores, _ = images.zoo_estimator_scores(h.model_ids, source,
                                            list(counts), names)
    for n in names:
      self.assertEqual(_batch.trace_count(n) - before[n], 2, n)
      self.assertEqual(sorted(scores[n]), sorted(counts))
    # The same four targets again: nothing new to compile.
    images.zoo_estimator_scores(h.model_ids, source, list(counts), names)
    for n in names:
      self.assertEqual(_batch.trace_count(n) - before[n], 2, n)

  def test_methods_see_images_and_are_timed(self):
    rng = np.random.default_rng(0)
    m, t = 12, 6
    u, v = rng.normal(size=(m, 2)), rng.normal(size=(t, 2))
    h = history_lib.History.from_matrix(
        0.7 + 0.1 * u @ v.T,
        model_metadata={'num_params': rng.uniform(1e5, 1e6, m),
                        'num_layers': rng.integers(2, 9, m).astype(float),
                        'cluster': (np.arange(m) % 2).astype(float)},
        task_metadata={'num_classes': np.full(t, 4.0),
                       'train_size': np.full(t, 100.0)}, name='fake')
    source = _FakeImages(h, v)
    out = self.enterContext(tempfile.TemporaryDirectory())
    targets = ['t0', 't2', 't3', 't5']
    res, paths = images.run_images(
        out, source=source, history=h, k_shots=(0,), num_seeds=1,
        targets=targets, estimators=('logme',),
        space_config={'rank': 2, 'max_steps': 300})  # The world is rank 2.
    self.assertEqual(res.methods,
                     ['popularity', 'fennec', 'fennec_ridge', 'fennec_paper',
                      'logme'])
    # The proxy saw a class-balanced budget (all 40 here, < 100) per task;
    # the zoo ran forward on the evaluated targets only.
    self.assertEqual(source.proxy_batches, [40] * t)
    self.assertLen(source.forwards, m * len(targets))
    with open(paths['csv']) as f:
      rows = list(csv.DictReader(f))
    # Every method reports its per-target time (NaN where it does not).
    self.assertIn('seconds_per_target', rows[0])
    for r in rows:
      self.assertTrue(np.isfinite(float(r['seconds_per_target'])), r)
    # The kept first-draw predictions are each method's raw output on every
    # target; popularity's is the training tasks' popularity.
    self.assertEqual(set(res.predictions), set(res.methods))
    for method in res.methods:
      self.assertEqual(sorted(res.predictions[method]), targets)
    for t in targets:
      train = protocol.without_task(h, h.task_index(t))
      np.testing.assert_allclose(
          res.predictions['popularity'][t],
          baselines.popularity_scores(train.scores, train.mask))
    # Embeddings carry the task factors: both task maps beat the (here
    # misleading) popularity prior, which a broken embedding path would not.
    for method in ('fennec', 'fennec_ridge'):
      self.assertGreater(res.mean(method, 0, 'weighted_tau'),
                         res.mean('popularity', 0, 'weighted_tau') + 0.2,
                         method)
    self.assertTrue(os.path.exists(paths['time_png']))


if __name__ == '__main__':
  absltest.main()
