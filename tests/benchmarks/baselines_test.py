"""Tests of the baseline rankers against independent NumPy/SciPy code."""

from absl.testing import absltest
import numpy as np
from scipy import stats

from fennec_jax import history as history_lib
from fennec_jax.benchmarks import baselines


def _reference_popularity(scores):
  """Mean over tasks of scipy z-scores of each task's observed models."""
  m, t = scores.shape
  z = np.full((m, t), np.nan)
  for j in range(t):
    seen = ~np.isnan(scores[:, j])
    if seen.sum() >= 2 and np.std(scores[seen, j]) > 0:
      z[seen, j] = stats.zscore(scores[seen, j])
  out = np.zeros(m)
  for i in range(m):
    vals = [v for v in z[i] if not np.isnan(v)]
    out[i] = np.mean(vals) if vals else 0.0
  return out


class PopularityTest(absltest.TestCase):

  def test_matches_reference_on_sparse_matrix(self):
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(15, 6)) * rng.uniform(0.1, 5, size=6) + 3
    scores[rng.uniform(size=scores.shape) < 0.3] = np.nan
    scores[:, 5] = np.nan
    scores[2, 5] = 1.0  # A task with one observed model: no information.
    scores[7, :] = np.nan  # A model never observed: the prior 0.
    got = baselines.popularity_scores(np.nan_to_num(scores),
                                      ~np.isnan(scores))
    np.testing.assert_allclose(got, _reference_popularity(scores), atol=1e-12)
    self.assertEqual(got[7], 0.0)

  def test_is_invariant_to_per_task_affine_maps(self):
    # A wrong implementation averaging raw scores would change the ranking.
    rng = np.random.default_rng(1)
    scores = rng.normal(size=(10, 4))
    mask = np.ones_like(scores, bool)
    scaled = scores * np.array([1.0, 100.0, 0.01, 7.0]) + np.array(
        [0.0, -50.0, 3.0, 1.0])
    np.testing.assert_allclose(
        baselines.popularity_scores(scores, mask),
        baselines.popularity_scores(scaled, mask), atol=1e-9)

  def test_method_broadcasts_over_draws(self):
    h = history_lib.History.from_matrix(
        np.array([[1.0, 2.0], [3.0, 1.0], [2.0, 3.0]]))
    out = baselines.popularity(h, 'x', np.full((4, 3), np.nan))
    self.assertEqual(out.shape, (4, 3))
    np.testing.assert_allclose(out[0], out[3])


class MetadataAndEstimatorTest(absltest.TestCase):

  def test_imagenet_acc_leaves_missing_unscored(self):
    method = baselines.imagenet_acc_method(
        {'imagenet_acc': np.array([0.7, np.nan, 0.9])})
    out = method.predict(None, 't', np.zeros((2, 3)))
    np.testing.assert_allclose(out, [[0.7, np.nan, 0.9]] * 2)
    self.assertTrue(method.partial)
    self.assertFalse(baselines.as_method(baselines.popularity).partial)

  def test_imagenet_acc_missing_key_is_clear_error(self):
    with self.assertRaisesRegex(ValueError, 'imagenet_acc.*keys'):
      baselines.imagenet_acc_method({'params': np.ones(3)})

  def test_estimator_aligns_by_model_id(self):
    est = history_lib.History.from_matrix(
        np.array([[5.0, np.nan], [1.0, 2.0], [3.0, np.nan]]),
        model_ids=['c', 'a', 'b'], task_ids=['t1', 't2'])
    method = baselines.estimator_method('logme', est, ['a', 'b', 'c', 'd'])
    out = method.predict(None, 't1', np.zeros((1, 4)))
    np.testing.assert_allclose(out, [[1.0, 3.0, 5.0, np.nan]])
    self.assertTrue(method.covers('t2'))
    self.assertFalse(method.covers('t3'))
    with self.assertRaisesRegex(KeyError, "logme has no scores for task 't3'"):
      method.predict(None, 't3', np.zeros((1, 4)))
    self.assertTrue(baselines.as_method(baselines.popularity).covers('t3'))

  def test_baseline_methods_lists_what_applies(self):
    h = history_lib.History.from_matrix(
        np.ones((3, 2)), model_metadata={'imagenet_acc': [np.nan] * 3})
    self.assertEqual(list(baselines.baseline_methods(h)), ['popularity'])
    h = h.replace(model_metadata={'imagenet_acc': np.array([0.1, 0.2, 0.3])})
    est = history_lib.History.from_matrix(np.ones((3, 2)))
    self.assertEqual(list(baselines.baseline_methods(h, {'logme': est})),
                     ['popularity', 'imagenet_acc', 'logme'])


if __name__ == '__main__':
  absltest.main()
