"""Tests of the conditional-Gaussian K-shot source (`space.kshot_gp`)."""

from absl.testing import absltest
import jax.numpy as jnp
import numpy as np

from fennec_jax.space import kshot_gp


def _reference(columns, idx, y, shrink, nugget, meta=None, meta_weight=0.0):
  """The conditioning formula on the full [M, M] covariance, one task."""
  columns = np.asarray(columns, np.float64)
  m, t = columns.shape
  mu = columns.mean(1)
  d = columns - mu[:, None]
  full = d @ d.T / t
  cov = (1 - shrink) * full + shrink * np.diag(np.diag(full))
  if meta is not None:
    cov = cov + meta_weight * np.diag(full).mean() * meta @ meta.T
  o = np.asarray(idx)
  y = np.asarray(y, np.float64)
  yc = y - y.mean()
  hist = columns[o] - columns[o].mean(0)
  s = np.sqrt((yc ** 2).sum() / (hist ** 2).sum(0).mean())
  r = y / s - mu[o]
  mean_var = np.diag(full).mean()
  s_oo = cov[np.ix_(o, o)] + (nugget + 1e-6) * mean_var * np.eye(len(o))
  inv = np.linalg.inv(s_oo)
  ones = np.ones(len(o))
  level = ones @ inv @ r / (ones @ inv @ ones)
  return mu + cov[:, o] @ inv @ (r - level)


class ConditionTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    rng = np.random.default_rng(0)
    self.columns = rng.normal(size=(9, 6)).astype(np.float32)
    self.stats = kshot_gp.stats(jnp.asarray(self.columns))

  def test_equals_the_full_covariance_formula_with_padding(self):
    idx = np.array([[0, 3, 5, 7], [1, 2, 8, 0]], np.int32)
    y = np.array([[0.7, 0.2, 0.9, 0.4], [3.0, 1.0, 2.0, 0.0]], np.float32)
    valid = np.array([[True] * 4, [True, True, True, False]])
    for shrink, nugget in ((0.0, 0.1), (0.3, 1.0), (1.0, 0.5)):
      got = np.asarray(kshot_gp.condition(
          self.stats, jnp.asarray(idx), jnp.asarray(y), jnp.asarray(valid),
          shrink, nugget))
      for b in range(2):
        ok = valid[b]
        want = _reference(self.columns, idx[b, ok], y[b, ok], shrink, nugget)
        np.testing.assert_allclose(got[b], want, rtol=2e-3, atol=2e-3)

  def test_metadata_term_equals_the_full_covariance_formula(self):
    meta = kshot_gp.feature_factor(np.random.default_rng(1).normal(
        size=(9, 3)))
    stats = kshot_gp.stats(jnp.asarray(self.columns), jnp.asarray(meta))
    idx = np.array([[0, 3, 5, 7], [1, 2, 8, 0]], np.int32)
    y = np.array([[0.7, 0.2, 0.9, 0.4], [3.0, 1.0, 2.0, 0.0]], np.float32)
    valid = np.array([[True] * 4, [True, True, True, False]])
    for shrink, nugget, w in ((0.0, 0.1, 0.5), (0.3, 1.0, 3.0)):
      got = np.asarray(kshot_gp.condition(
          stats, jnp.asarray(idx), jnp.asarray(y), jnp.asarray(valid),
          shrink, nugget, w))
      for b in range(2):
        ok = valid[b]
        want = _reference(self.columns, idx[b, ok], y[b, ok], shrink, nugget,
                          meta.astype(np.float64), w)
        np.testing.assert_allclose(got[b], want, rtol=2e-3, atol=2e-3)

  def test_models_sharing_metadata_follow_each_other(self):
    # Independent columns: only the metadata says that models 0-3 (family
    # 'a') move together. A high score of model 0 lifts its unobserved
    # family member 1 above the unobserved model 6 of the other family.
    columns = np.random.default_rng(2).normal(size=(8, 40)).astype(np.float32)
    family = np.array([[1.0, 0.0]] * 4 + [[0.0, 1.0]] * 4)
    meta = kshot_gp.feature_factor(family, ['family=a', 'family=b'])
    stats = kshot_gp.stats(jnp.asarray(columns), jnp.asarray(meta))
    idx = jnp.asarray([[0, 4, 5]], jnp.int32)
    y = jnp.asarray([[3.0, -1.0, -1.2]], jnp.float32)
    valid = jnp.ones((1, 3), bool)
    without = np.asarray(kshot_gp.condition(stats, idx, y, valid, 0.0, 0.1))
    with_meta = np.asarray(kshot_gp.condition(stats, idx, y, valid, 0.0, 0.1,
                                              3.0))
    lift = (with_meta - without)[0]
    self.assertGreater(lift[1], 0.3)
    self.assertLess(lift[6], -0.3)

  def test_feature_factor_scales_each_metadata_key_alike(self):
    x = np.array([[1, 0, 0, 10.0], [0, 1, 0, 20.0], [0, 0, 1, 30.0],
                  [1, 0, 0, 40.0]])
    f = kshot_gp.feature_factor(x, ['family=a', 'family=b', 'family=c',
                                    'num_params'])
    np.testing.assert_allclose(f.mean(0), 0.0, atol=1e-6)
    np.testing.assert_allclose((f ** 2).sum(1).mean(), 1.0, rtol=1e-5)
    family = (f[:, :3] ** 2).sum(1).mean()
    np.testing.assert_allclose(family, (f[:, 3] ** 2).mean(), rtol=1e-5)
    # Binary columns are centred, not standardized: a rare category keeps
    # its small variance.
    np.testing.assert_allclose(f[:, 1] / f[1, 1], [-1 / 3, 1, -1 / 3, -1 / 3],
                               rtol=1e-5)
    self.assertEqual(kshot_gp.feature_factor(np.ones((4, 2))).shape, (4, 0))
    with self.assertRaisesRegex(ValueError, 'finite'):
      kshot_gp.feature_factor(np.array([[np.nan], [1.0]]))
    with self.assertRaisesRegex(ValueError, '3 feature names for 4'):
      kshot_gp.feature_factor(x, ['a', 'b', 'c'])

  def test_blind_to_the_new_task_level_and_scale(self):
    idx = jnp.asarray([[0, 3, 5, 7]], jnp.int32)
    y = jnp.asarray([[0.7, 0.2, 0.9, 0.4]], jnp.float32)
    valid = jnp.ones((1, 4), bool)
    a = kshot_gp.condition(self.stats, idx, y, valid, 0.2, 0.3)
    b = kshot_gp.condition(self.stats, idx, 50.0 + 7.0 * y, valid, 0.2, 0.3)
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)

  def test_one_score_or_equal_scores_give_the_mean_task(self):
    idx = jnp.asarray([[2, 0, 0], [1, 4, 5]], jnp.int32)
    y = jnp.asarray([[0.7, 0.0, 0.0], [0.5, 0.5, 0.5]], jnp.float32)
    valid = jnp.asarray([[True, False, False], [True, True, True]])
    got = np.asarray(kshot_gp.condition(self.stats, idx, y, valid, 0.1, 1.0))
    self.assertTrue(np.isfinite(got).all())
    np.testing.assert_allclose(got, np.broadcast_to(self.columns.mean(1),
                                                    (2, 9)), atol=1e-6)

  def test_a_duplicate_model_follows_its_observed_twin(self):
    # Models 0 and 1 are the same in every task: with no shrinkage the
    # unobserved twin gets the observed one's conditional mean, high when
    # it is observed high, low when low.
    columns = np.array(self.columns)
    columns[1] = columns[0]
    stats = kshot_gp.stats(jnp.asarray(columns))
    idx = jnp.asarray([[0, 2, 3, 4], [0, 2, 3, 4]], jnp.int32)
    y = jnp.asarray([[5.0, 0.0, 0.1, -0.1], [-5.0, 0.0, 0.1, -0.1]],
                    jnp.float32)
    got = np.asarray(kshot_gp.condition(stats, idx, y, jnp.ones((2, 4), bool),
                                        0.0, 0.01))
    np.testing.assert_allclose(got[:, 1], got[:, 0], rtol=1e-5, atol=1e-5)
    self.assertGreater(got[0, 1], got[1, 1] + 1.0)


if __name__ == '__main__':
  absltest.main()
