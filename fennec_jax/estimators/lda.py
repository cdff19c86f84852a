"""LDA-posterior scores: SFDA (with ConfMix) and FDA (Fennec's score).

SFDA (Shao et al., "Not All Models Are Equal: Predicting Model Transferability
in a Self-challenging Fisher Space", ECCV 2022). One regularised Fisher/LDA fit:

  S_w = sum_c (n_c/n) cov_c (biased per-class covariances),
  lambda = largest eigenvalue of S_w (3 power iterations started at S_w 1),
  a = max(exp(-5 lambda), 1e-10),  S = (1 - a) S_w + a tr(S_w)/d I,
  p(y | x) = softmax_c(x' S^-1 mu_c - 1/2 mu_c' S^-1 mu_c + log pi_c).

(The released code projects on the generalised eigenvectors E of (S_b, S);
E E' = S^-1, so its coefficients are exactly mu S^-1 and S_b drops out.)
ConfMix, the self-challenging step: p is softened once more with a softmax; each
sample moves towards the mean of the *other* classes,
x <- p_y x + (1 - p_y) mean_{c != y} mu_c, and a second fit with the same a
gives the score = mean_i p(y_i | x_i) (no log, as in the paper).

Degeneracy guard: with n - C < d the within-class scatter is singular and a is
~1e-10 for any features whose top eigenvalue exceeds ~5, so every sample is
classified perfectly and every model scores 1.0 (the known SFDA failure at
n = 500, d = 2048). `guard='auto'` (default) raises a to at least the
Ledoit-Wolf shrinkage of the within-class-centred features exactly in that
regime (n - C < d); `guard=True` always, `guard=False` never (the paper's
formula).

FDA (the score Fennec's released code uses to fill its performance matrix):
features are PCA'd to `dim` = 32 components, then plain LDA with the pooled
unbiased within-class covariance S_w = sum_c sum_{i in c} (x - mu_c)(x - mu_c)'
/ (n - C) and class priors pi_c = n_c / n; the score is the mean posterior
of the true class. A ridge of 1e-6 tr(S_w)/d (plus `shrinkage` toward
tr(S_w)/d I, default 0) keeps S_w invertible for duplicated or constant
features. FDA is invariant to a global feature scale and to an orthogonal
change of feature basis; SFDA is not scale invariant (exp(-5 lambda)).

Both run on a class axis of `max_classes`: a padding class has prior 0, so its
log prior is -inf and its posterior exactly 0 (SFDA's softening step masks it
too), and it is left out of ConfMix's mean of the other classes.
"""

import jax
import jax.numpy as jnp
import numpy as np

from fennec_jax.estimators import _batch
from fennec_jax.estimators import _common
from fennec_jax.estimators import hscore as hscore_lib
from fennec_jax.estimators import preprocess


def power_top_eigenvalue(a: jnp.ndarray, iters: int = 3) -> jnp.ndarray:
  """SFDA's `iterative_A`: a few power iterations started at a @ 1."""
  def unit(v):  # A zero scatter (constant features) gives 0, not NaN.
    norm = jnp.linalg.norm(v)
    return v / jnp.where(norm > 0, norm, 1.0)

  x = a.sum(1)
  y = x
  for _ in range(iters):
    y = unit(a @ x)
    x = unit(a @ y)
  return x @ (a @ y)


def _lda_posterior(x, means, priors, cov):
  """Posterior softmax(x S^-1 mu' - 1/2 diag(mu S^-1 mu') + log pi).

  A class with prior 0 (padding) has log prior -inf: posterior exactly 0.

  S^-1 is an eigendecomposition pseudo-inverse, not a Cholesky solve: with
  shrinkage 1e-10 on a singular scatter (unguarded SFDA, n < d) float32
  Cholesky fails and returns NaN, while the pseudo-inverse stays finite.
  """
  coef = means @ _common.pinv_sym(cov)  # [C, d] = mu S^-1.
  log_priors = jnp.where(priors > 0, jnp.log(jnp.where(priors > 0, priors,
                                                       1.0)), -jnp.inf)
  intercept = -0.5 * jnp.sum(means * coef, 1) + log_priors
  return jax.nn.softmax(x @ coef.T + intercept[None, :], axis=-1)


def _sfda_fit(x, onehot, shrinkage, guard_floor):
  """One SFDA fit: returns (posteriors [n, C], shrinkage used, means)."""
  n, d = x.shape
  counts = onehot.sum(0)
  priors = counts / n
  means = _common.class_means(x, onehot)
  centred = x - onehot @ means
  sw = centred.T @ centred / n
  if shrinkage is None:
    lam = power_top_eigenvalue(sw)
    shrinkage = jnp.maximum(jnp.exp(-5.0 * lam), 1e-10)
    # guard_floor is one flag for all models (not vmapped): a real branch.
    shrinkage = jax.lax.cond(
        guard_floor,
        lambda s: jnp.maximum(s, hscore_lib.ledoit_wolf(centred)[1]),
        lambda s: s, shrinkage)
  mu = jnp.trace(sw) / d
  cov = (1.0 - shrinkage) * sw + shrinkage * mu * jnp.eye(d, dtype=x.dtype)
  return _lda_posterior(x, means, priors, cov), shrinkage, means


def _sfda_core(f, *, labels, num_classes, guard_floor, max_classes):
  x = f.astype(_common.float_dtype(f))
  onehot = _common.one_hot(labels, max_classes, x.dtype)
  prob, shrinkage, means = _sfda_fit(x, onehot, None, guard_floor)
  live = _common.class_mask(num_classes, max_classes, x.dtype) > 0
  # The paper's softening step, over the real classes only.
  prob = jax.nn.softmax(jnp.where(live[None, :], prob, -jnp.inf), axis=-1)
  others = (means.sum(0, keepdims=True) - means) / (num_classes - 1)
  p_true = jnp.sum(prob * onehot, 1, keepdims=True)
  mixed = p_true * x + (1.0 - p_true) * (onehot @ others)
  prob2, _, _ = _sfda_fit(mixed, onehot, shrinkage, guard_floor)
  return jnp.mean(jnp.sum(prob2 * onehot, 1))


def _sfda_prepare(stack, labels, *, num_classes=None, max_classes=None,
                  guard='auto'):
  n, d = stack.shape[1], stack.shape[2]
  bound, arrays = _common.class_arrays(labels, n, num_classes, max_classes)
  if guard == 'auto':
    guard_floor = n - int(arrays['num_classes']) < d
  elif isinstance(guard, bool):
    guard_floor = guard
  else:
    raise ValueError(f"guard must be 'auto', True or False, got {guard!r}.")
  # The guard depends on C, so it is data too (one compilation for every C).
  return dict(max_classes=bound), dict(arrays,
                                       guard_floor=np.bool_(guard_floor))


def _fda_core(f, *, labels, key, num_classes, max_classes, dim, pca_method,
              shrinkage):
  x = f.astype(_common.float_dtype(f))
  x = preprocess.pca(x, dim, method=pca_method, key=key)
  n, k = x.shape
  onehot = _common.one_hot(labels, max_classes, x.dtype)
  counts = onehot.sum(0)
  means = _common.class_means(x, onehot)
  centred = x - onehot @ means
  dof = jnp.maximum(n - num_classes, 1).astype(x.dtype)
  sw = centred.T @ centred / dof
  mu = jnp.trace(sw) / k
  total_mu = jnp.sum(x * x) / (n * k)
  ridge = 1e-6 * jnp.maximum(jnp.maximum(mu, total_mu),
                             jnp.finfo(x.dtype).tiny)
  eye = jnp.eye(k, dtype=x.dtype)
  cov = (1.0 - shrinkage) * sw + shrinkage * mu * eye + ridge * eye
  prob = _lda_posterior(x, means, counts / n, cov)
  return jnp.mean(jnp.sum(prob * onehot, 1))


def _fda_prepare(stack, labels, *, num_classes=None, max_classes=None, dim=32,
                 pca_method='exact', shrinkage=0.0, seed=0):
  bound, arrays = _common.class_arrays(labels, stack.shape[1], num_classes,
                                       max_classes)
  if pca_method not in ('exact', 'randomized'):
    raise ValueError(
        f"pca_method must be 'exact' or 'randomized', got {pca_method!r}.")
  if not 0.0 <= float(shrinkage) <= 1.0:
    raise ValueError(f'shrinkage must be in [0, 1], got {shrinkage}.')
  if int(dim) < 1:
    raise ValueError(f'dim must be >= 1, got {dim}.')
  key = np.asarray(jax.random.key_data(jax.random.key(int(seed))))
  return (dict(max_classes=bound, dim=int(dim), pca_method=pca_method,
               shrinkage=float(shrinkage)),
          dict(arrays, key=key))


def _fda_core_rawkey(f, *, key, **kwargs):
  return _fda_core(f, key=jax.random.wrap_key_data(key), **kwargs)


SFDA = _batch.Spec('sfda', _sfda_core, _sfda_prepare, doc=__doc__)
FDA = _batch.Spec('fda', _fda_core_rawkey, _fda_prepare, doc=__doc__)
