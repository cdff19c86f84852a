"""Linear probe against a SciPy L-BFGS fit of the same convex objective."""

from absl.testing import absltest
import jax
import jax.numpy as jnp
import numpy as np
import scipy.optimize
import scipy.special

from fennec_jax import estimators
from fennec_jax.data import probe
from fennec_jax.estimators import linear_probe


def reference_fit(x, y, train, l2):
  """Minimises mean train CE + l2/2 ||W||^2 with scipy; returns (W, b, f*)."""
  d, c = x.shape[1], y.max() + 1
  onehot = np.eye(c)[y]

  def loss_grad(theta):
    w, b = theta[:d * c].reshape(d, c), theta[d * c:]
    logits = x[train] @ w + b
    p = scipy.special.softmax(logits, axis=1)
    logp = scipy.special.log_softmax(logits, axis=1)
    nt = train.sum()
    loss = -np.sum(onehot[train] * logp) / nt + 0.5 * l2 * np.sum(w * w)
    g = (p - onehot[train]) / nt
    return loss, np.concatenate([(x[train].T @ g + l2 * w).ravel(),
                                 g.sum(0)])

  res = scipy.optimize.minimize(loss_grad, np.zeros(d * c + c), jac=True,
                                method='L-BFGS-B',
                                options=dict(gtol=1e-10, maxiter=2000))
  return res.x[:d * c].reshape(d, c), res.x[d * c:], res.fun


class LinearProbeTest(absltest.TestCase):

  def test_fit_reaches_the_reference_optimum(self):
    rng = np.random.default_rng(0)
    y = np.arange(60) % 3
    f = rng.normal(size=(3, 5))[y] + rng.normal(size=(60, 5))
    train = probe.balanced_split(y, 0.2, seed=0)
    mean, std = f[train].mean(0), f[train].std(0)
    x = (f - mean) / std
    w_ref, b_ref, f_ref = reference_fit(x, y, train, 1e-2)
    with jax.enable_x64(True):
      xs = linear_probe.standardise(jnp.asarray(f), jnp.asarray(train, float))
      np.testing.assert_allclose(xs, x, atol=1e-10)
      onehot = jnp.eye(3)[y]
      w, b = linear_probe.fit(xs, onehot, jnp.asarray(train, float), 1e-2,
                              100)
      got = linear_probe.objective((w, b), xs, onehot,
                                   jnp.asarray(train, float), 1e-2)
      self.assertAlmostEqual(float(got), f_ref, delta=1e-8)
      np.testing.assert_allclose(w, w_ref, atol=1e-4)
      score = estimators.get_estimator('linear_probe')(f, y)
    want = np.mean((np.argmax(x @ w_ref + b_ref, 1) == y)[~train])
    self.assertAlmostEqual(score, want, delta=1e-12)

  def test_separable_beats_shuffled_and_permutation(self):
    rng = np.random.default_rng(1)
    y = np.arange(60) % 3
    f = rng.normal(size=(3, 5))[y] * 2 + rng.normal(size=(60, 5))
    fn = estimators.get_estimator('linear_probe')
    base = fn(f, y)
    self.assertGreater(base, 0.8)
    self.assertLess(fn(f, rng.permutation(y)), 0.6)
    self.assertAlmostEqual(fn(f, np.array([2, 0, 1])[y]), base, delta=1e-6)
    self.assertAlmostEqual(fn(f * 1e3, y), base, delta=1e-6)


if __name__ == '__main__':
  absltest.main()
