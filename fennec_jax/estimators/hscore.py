"""H-score and its Ledoit-Wolf regularised variant.

H-score (Bao et al., "An Information-Theoretic Approach to Transferability in
Task Transfer Learning", ICIP 2019):

  H(f) = tr(cov(f)^+ cov(E[f | y])),

with unbiased (1/(n-1)) covariances and the pseudo-inverse cut at
eps * d * lambda_max (an eigendecomposition of the symmetric cov(f)). Because
cov(E[f|y]) = sum_c n_c mu_c mu_c' / (n-1) (mu_c: centred class means), the
trace is sum_c n_c / (n-1) mu_c' cov(f)^+ mu_c: no d x d product is formed.
Invariant to any invertible linear map of the features (so to scale) while
n > d; with n <= d the pseudo-inverse makes it large and unstable, which is
why the regularised version exists.

Regularised H-score (Ibrahim, Ponomareva, Mazumder, "Newer is not always
better: rethinking transferability metrics ...", 2022): cov(f) is replaced by
the Ledoit-Wolf shrunk estimate S_a = (1 - a) S + a mu I (S = f'f / n on centred
f, mu = tr(S) / d, a the Ledoit-Wolf optimal shrinkage, clipped to [0, 1]) and
the between-class term is scaled by (1 - a):

  H_a(f) = tr(S_a^-1 (1 - a) cov(E[f | y])).

Invariant to a global feature scale (a is scale-free), not to per-dimension
scaling.

The class axis has `max_classes` entries; padding classes have no sample, a
zero mean and a zero weight n_c, so they add nothing to the trace.
"""

import jax.numpy as jnp

from fennec_jax.estimators import _batch
from fennec_jax.estimators import _common


def ledoit_wolf(x: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
  """Ledoit-Wolf shrunk covariance of centred x [n, d].

  Returns:
    (shrunk covariance [d, d], shrinkage a in [0, 1]).
  """
  n, d = x.shape
  gram = x.T @ x
  emp = gram / n
  x2 = x * x
  trace_terms = jnp.sum(x2, 0) / n
  mu = jnp.sum(trace_terms) / d
  beta_ = jnp.sum(x2.T @ x2)
  delta_ = jnp.sum(gram * gram) / n**2
  beta = (beta_ / n - delta_) / (d * n)
  delta = (delta_ - 2.0 * mu * jnp.sum(trace_terms) + d * mu**2) / d
  beta = jnp.minimum(beta, delta)
  shrink = jnp.where(delta > 0, beta / jnp.where(delta > 0, delta, 1.0), 0.0)
  shrink = jnp.clip(shrink, 0.0, 1.0)
  cov = (1.0 - shrink) * emp + shrink * mu * jnp.eye(d, dtype=x.dtype)
  return cov, shrink


def _between(fc, labels, max_classes):
  """(centred class means [K, d], counts [K]; 0 for padding classes)."""
  onehot = _common.one_hot(labels, max_classes, fc.dtype)
  return _common.class_means(fc, onehot), onehot.sum(0)


def _hscore_core(f, *, labels, num_classes, max_classes):
  del num_classes  # Padding classes have zero weight.
  f = f.astype(_common.float_dtype(f))
  n = f.shape[0]
  fc = f - f.mean(0, keepdims=True)
  cov_f = fc.T @ fc / (n - 1)
  means, counts = _between(fc, labels, max_classes)
  quad = _common.pinv_quadratic_forms(cov_f, means)
  return jnp.sum(counts * quad) / (n - 1)


def _reg_hscore_core(f, *, labels, num_classes, max_classes):
  del num_classes  # Padding classes have zero weight.
  f = f.astype(_common.float_dtype(f))
  n = f.shape[0]
  fc = f - f.mean(0, keepdims=True)
  cov_a, shrink = ledoit_wolf(fc)
  means, counts = _between(fc, labels, max_classes)
  quad = _common.pinv_quadratic_forms(cov_a, means)
  return (1.0 - shrink) * jnp.sum(counts * quad) / (n - 1)


def _prepare(stack, labels, *, num_classes=None, max_classes=None):
  bound, arrays = _common.class_arrays(labels, stack.shape[1], num_classes,
                                       max_classes)
  if stack.shape[1] < 2:
    raise ValueError('H-score needs at least two samples.')
  return dict(max_classes=bound), arrays


HSCORE = _batch.Spec('hscore', _hscore_core, _prepare, doc=__doc__)
REG_HSCORE = _batch.Spec('reg_hscore', _reg_hscore_core, _prepare, doc=__doc__)
