"""Tests of the conditional-Gaussian K-shot source (`space.kshot_gp`)."""

from absl.testing import absltest
import jax.numpy as jnp
import numpy as np

from fennec_jax.space import kshot_gp


def _reference(columns, idx, y, shrink, nugget):
  """The conditioning formula on the full [M, M] covariance, one task."""
  columns = np.asarray(columns, np.float64)
  m, t = columns.shape
  mu = columns.mean(1)
  d = columns - mu[:, None]
  full = d @ d.T / t
  cov = (1 - shrink) * full + shrink * np.diag(np.diag(full))
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
