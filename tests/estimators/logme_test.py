"""LogME against a direct float64 NumPy implementation of You et al. 2021."""

from absl.testing import absltest
from absl.testing import parameterized
import jax
import numpy as np

from fennec_jax import estimators


def reference_logme_column(f, y, max_iter=11, tol=1e-3, eps=1e-5):
  """Evidence / n of one target column, straight from the paper's formulas.

  A = alpha I + beta F'F, m = beta A^-1 F'y, gamma = sum beta s / (alpha +
  beta s); alpha <- gamma / m'm, beta <- (n - gamma) / ||Fm - y||^2, from
  alpha = beta = 1; then the evidence with an explicit log-determinant.
  """
  f = f.astype(np.float64)
  y = y.astype(np.float64)
  n, d = f.shape
  s = np.clip(np.linalg.eigvalsh(f.T @ f), 0, None)
  alpha, beta = 1.0, 1.0

  def fit(alpha, beta):
    a = alpha * np.eye(d) + beta * f.T @ f
    m = beta * np.linalg.solve(a, f.T @ y)
    return a, m, m @ m, np.sum((f @ m - y) ** 2)

  for _ in range(max_iter):
    _, _, m2, res2 = fit(alpha, beta)
    gamma = np.sum(beta * s / (alpha + beta * s))
    new_alpha = gamma / (m2 + eps)
    new_beta = (n - gamma) / (res2 + eps)
    done = abs(new_alpha / new_beta - alpha / beta) / (alpha / beta) <= tol
    alpha, beta = new_alpha, new_beta
    if done:
      break
  a, _, m2, res2 = fit(alpha, beta)
  _, logdet = np.linalg.slogdet(a)
  ev = (d / 2 * np.log(alpha) + n / 2 * np.log(beta) - n / 2 * np.log(
      2 * np.pi) - beta / 2 * res2 - alpha / 2 * m2 - 0.5 * logdet)
  return ev / n


def reference_logme(f, labels):
  c = labels.max() + 1
  return np.mean([reference_logme_column(f, (labels == k).astype(float))
                  for k in range(c)])


def _data(n, d, c, seed=0, signal=2.0):
  rng = np.random.default_rng(seed)
  labels = np.arange(n) % c
  centers = rng.normal(size=(c, d)) * signal
  return centers[labels] + rng.normal(size=(n, d)), labels


class LogMETest(parameterized.TestCase):

  @parameterized.named_parameters(
      dict(testcase_name='n_gt_d', n=40, d=6),
      dict(testcase_name='n_lt_d', n=12, d=20),
  )
  def test_matches_reference_float64(self, n, d):
    f, y = _data(n, d, 3)
    with jax.enable_x64(True):
      got = estimators.get_estimator('logme')(f, y)
    self.assertAlmostEqual(got, reference_logme(f, y), delta=1e-8)

  def test_matches_reference_float32(self):
    f, y = _data(40, 6, 3)
    got = estimators.get_estimator('logme')(f.astype(np.float32), y)
    np.testing.assert_allclose(got, reference_logme(f, y), rtol=2e-3)

  def test_regression_targets(self):
    f, _ = _data(40, 6, 3, seed=1)
    rng = np.random.default_rng(5)
    targets = np.stack([f @ rng.normal(size=6) + 0.1 * rng.normal(size=40),
                        rng.normal(size=40)], 1)
    want = np.mean([reference_logme_column(f, targets[:, j])
                    for j in range(2)])
    with jax.enable_x64(True):
      got = estimators.get_estimator('logme')(f, targets, regression=True)
    self.assertAlmostEqual(got, want, delta=1e-8)

  def test_separable_beats_shuffled_and_class_permutation(self):
    f, y = _data(40, 6, 4)
    fn = estimators.get_estimator('logme')
    shuffled = np.random.default_rng(0).permutation(y)
    self.assertGreater(fn(f, y), fn(f, shuffled) + 0.1)
    perm = np.array([2, 0, 3, 1])
    np.testing.assert_allclose(fn(f, perm[y]), fn(f, y), rtol=1e-5)


if __name__ == '__main__':
  absltest.main()
