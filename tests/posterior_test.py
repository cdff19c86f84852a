"""Tests of the K-shot posterior against a NumPy Bayesian linear regression."""

from absl.testing import absltest
from absl.testing import parameterized
import jax.numpy as jnp
import numpy as np

from fennec_jax import posterior


def _blr(phi, mean, cov, noise_var, idx, scores):
  """Bayesian linear regression y = phi[idx] w + e: (w mean, w cov)."""
  x = phi[idx]
  prec = np.linalg.inv(cov) + x.T @ x / noise_var
  post_cov = np.linalg.inv(prec)
  w = post_cov @ (np.linalg.solve(cov, mean) + x.T @ scores / noise_var)
  return w, post_cov


def _numpy_link(linear, link):
  """Each row's values replaced by the link's quantiles at the rank quantile,
  rescaled to the row's mean and std."""
  out = np.empty_like(linear)
  grid = (np.arange(len(link)) + 0.5) / len(link)
  for b, row in enumerate(linear):
    q = (np.argsort(np.argsort(row)) + 0.5) / len(row)
    shaped = np.interp(q, grid, link)
    shaped = (shaped - shaped.mean()) / shaped.std()
    out[b] = row.mean() + row.std() * shaped
  return out


class PosteriorTest(parameterized.TestCase):

  def setUp(self):
    super().setUp()
    rng = np.random.default_rng(0)
    self.m, self.d, self.b = 15, 4, 3
    self.phi = rng.normal(size=(self.m, self.d))
    a = rng.normal(size=(self.d, self.d))
    self.cov = a @ a.T + 0.5 * np.eye(self.d)
    self.mean = rng.normal(size=(self.b, self.d))
    self.noise = 0.05
    # Task 0 observes 3 models, task 1 none, task 2 five (K padded to 8).
    self.obs = [[1, 4, 9], [], [0, 2, 3, 11, 14]]
    self.scores = [rng.normal(size=len(i)) for i in self.obs]
    self.shift = 0.3 * rng.normal(size=(self.b, self.m))
    self.idx = np.zeros((self.b, 8), np.int32)
    self.y = np.zeros((self.b, 8), np.float32)
    self.valid = np.zeros((self.b, 8), bool)
    for b, (i, s) in enumerate(zip(self.obs, self.scores)):
      self.idx[b, :len(i)], self.y[b, :len(i)] = i, s
      self.valid[b, :len(i)] = True
    # Padding entries point at a real model with a large score: the mask
    # must keep them out.
    self.idx[~self.valid] = 5
    self.y[~self.valid] = 100.0

  def _posterior(self, shift=None, mean=None):
    return posterior.posterior(
        jnp.asarray(self.phi, jnp.float32),
        jnp.asarray(np.linalg.cholesky(self.cov), jnp.float32),
        jnp.float32(self.noise),
        jnp.asarray(self.mean if mean is None else mean, jnp.float32),
        jnp.asarray(self.idx), jnp.asarray(self.y), jnp.asarray(self.valid),
        None if shift is None else jnp.asarray(shift, jnp.float32))

  def _phi_of(self, b, shift):
    phi = self.phi.copy()
    if shift is not None:
      phi[:, -1] += shift[b]
    return phi

  @parameterized.named_parameters(('plain', False), ('shifted', True))
  def test_posterior_matches_numpy(self, shifted):
    shift = self.shift if shifted else None
    w, cov = map(np.asarray, self._posterior(shift))
    for b in range(self.b):
      w_ref, cov_ref = _blr(self._phi_of(b, shift), self.mean[b], self.cov,
                            self.noise, self.obs[b], self.scores[b])
      np.testing.assert_allclose(w[b], w_ref, rtol=1e-3, atol=1e-4)
      np.testing.assert_allclose(cov[b], cov_ref, rtol=1e-3, atol=1e-4)
    # No scores: the prior itself.
    np.testing.assert_allclose(w[1], self.mean[1], atol=1e-5)
    np.testing.assert_allclose(cov[1], self.cov, rtol=1e-4, atol=1e-4)

  def test_one_shared_prior_mean(self):
    shared = self._posterior(mean=self.mean[0])
    each = self._posterior(mean=np.broadcast_to(self.mean[0],
                                                (self.b, self.d)))
    for a, b in zip(shared, each):
      np.testing.assert_allclose(a, b, atol=1e-6)

  @parameterized.named_parameters(('plain', False), ('shifted', True))
  def test_predictive_mean_and_std_match_numpy(self, shifted):
    shift = self.shift if shifted else None
    w, cov = self._posterior(shift)
    rng = np.random.default_rng(1)
    a = rng.normal(size=(self.d, self.d))
    sigma_phi = 0.1 * a @ a.T
    cold = (np.arange(self.m) % 4 == 0).astype(np.float32)
    args = (jnp.asarray(self.phi, jnp.float32), w, cov,
            jnp.float32(self.noise), jnp.zeros((0,)), jnp.asarray(cold),
            jnp.asarray(sigma_phi, jnp.float32),
            None if shift is None else jnp.asarray(shift, jnp.float32))
    pred, std = map(np.asarray, posterior.predict_all(*args))
    w, cov = np.asarray(w, np.float64), np.asarray(cov, np.float64)
    for b in range(self.b):
      phi = self._phi_of(b, shift)
      np.testing.assert_allclose(pred[b], phi @ w[b], rtol=1e-4, atol=1e-4)
      # A cold model's features are phi + e, e ~ N(0, S) independent of w.
      var = (np.einsum('md,de,me->m', phi, cov[b], phi) + self.noise
             + cold * (w[b] @ sigma_phi @ w[b] + np.trace(sigma_phi @ cov[b])))
      np.testing.assert_allclose(std[b], np.sqrt(var), rtol=1e-4)
    values, top_std, idx = map(np.asarray, posterior.top_k(*args, k=4))
    for b in range(self.b):
      np.testing.assert_array_equal(idx[b], np.argsort(-pred[b])[:4])
      np.testing.assert_allclose(values[b], pred[b][idx[b]], atol=1e-5)
      np.testing.assert_allclose(top_std[b], std[b][idx[b]], rtol=1e-5)

  def test_link_reshapes_rows_and_top_k_agrees(self):
    rng = np.random.default_rng(2)
    link = np.sort(rng.exponential(size=64))  # A skewed population.
    w, cov = self._posterior(self.shift)
    args = (jnp.asarray(self.phi, jnp.float32), w, cov,
            jnp.float32(self.noise), jnp.asarray(link, jnp.float32),
            jnp.zeros((self.m,)), jnp.zeros((self.d, self.d)),
            jnp.asarray(self.shift, jnp.float32))
    pred, _ = map(np.asarray, posterior.predict_all(*args))
    linear = np.stack([self._phi_of(b, self.shift) @ np.asarray(w[b])
                       for b in range(self.b)])
    np.testing.assert_allclose(pred, _numpy_link(linear, link), rtol=1e-4,
                               atol=1e-4)
    values, _, idx = map(np.asarray, posterior.top_k(*args, k=5))
    for b in range(self.b):
      np.testing.assert_allclose(values[b], pred[b][idx[b]], atol=1e-5)
    np.testing.assert_array_equal(
        np.asarray(posterior.apply_link(jnp.asarray(linear), jnp.zeros((0,)))),
        linear.astype(np.float32))

  def test_fold_in_posterior_is_whitened_blr(self):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2, 6, self.d))
    r = rng.normal(size=(2, 6))
    gram = np.einsum('bki,bkj->bij', x, x)
    xtr = np.einsum('bki,bk->bi', x, r)
    z, chol_a = map(np.asarray, posterior.fold_in_posterior(
        jnp.asarray(gram, jnp.float32), jnp.asarray(xtr, jnp.float32),
        jnp.float32(self.noise)))
    for b in range(2):
      a = np.eye(self.d) + gram[b] / self.noise
      np.testing.assert_allclose(chol_a[b] @ chol_a[b].T, a, rtol=1e-4)
      np.testing.assert_allclose(z[b], np.linalg.solve(a, xtr[b]) / self.noise,
                                 rtol=1e-3, atol=1e-5)

  def test_buckets_and_jittered_cholesky(self):
    self.assertEqual([posterior.batch_bucket(n) for n in (0, 1, 2, 3, 5, 8, 9)],
                     [1, 1, 2, 4, 8, 8, 16])
    singular = np.diag([1.0, 2.0, 0.0])
    chol = posterior.jittered_cholesky(singular)
    jitter = 1e-6 * np.trace(singular) / 3
    np.testing.assert_allclose(chol @ chol.T, singular + jitter * np.eye(3),
                               atol=1e-12)
    self.assertTrue(np.allclose(chol, np.tril(chol)))


if __name__ == '__main__':
  absltest.main()
