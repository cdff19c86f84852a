"""LogME: log marginal evidence of a Bayesian linear model on the features.

You et al., "LogME: Practical Assessment of Pre-trained Models for Transfer
Learning", ICML 2021 (and the TPAMI 2022 version's fixed-point solver). For each
target column y (one-hot class indicator, or a regression target) the model
y = F w + noise with priors w ~ N(0, 1/alpha I), noise ~ N(0, 1/beta) has the
evidence

  L(a, b) = d/2 log a + n/2 log b - n/2 log 2pi - b/2 ||F m - y||^2
            - a/2 m'm - 1/2 log|a I + b F'F|,   m = b (a I + b F'F)^-1 F' y.

alpha and beta are set by the fixed-point iteration gamma = sum b s/(a + b s),
a = gamma / m'm, b = (n - gamma) / ||F m - y||^2 (s: eigenvalues of F'F),
starting from a = b = 1, at most `max_iter` steps, stopping a column when
t = a/b changes by less than `tol` relatively. LogME = mean over columns of
L / n at the fixed point.

Vectorisation: one eigendecomposition of the smaller Gram matrix (F'F when
n >= d, FF' otherwise) serves every column; each iteration is O(k * t) for
k = min(n, d) and t columns, with no further matrix products. The residual uses
the part of y outside the column space of F, so numerically null directions
(eigenvalue <= eps * k * s_max) are treated as exactly null everywhere.

Departures from the released code, on purpose: the log-determinant counts the
d - k zero eigenvalues of F'F when n < d (the TPAMI code drops them), and the
evidence is evaluated at the final (a, b) rather than one half-step earlier.

Properties: not invariant to feature scale (the prior on w is isotropic); the
score is invariant to permuting class ids (a mean over columns).
"""

import jax
import jax.numpy as jnp
import numpy as np

from fennec_jax.estimators import _batch
from fennec_jax.estimators import _common


def _spectrum(f: jnp.ndarray, y: jnp.ndarray):
  """(s [k], x2 [k, t], res_x2 [t]): eigenvalues of F'F and |U'y|^2."""
  n, d = f.shape
  if n >= d:
    s, v = jnp.linalg.eigh(f.T @ f)
    z2 = (v.T @ (f.T @ y)) ** 2  # = s * x2.
  else:
    s, u = jnp.linalg.eigh(f @ f.T)
    z2 = None
    x2_direct = (u.T @ y) ** 2
  cutoff = jnp.finfo(f.dtype).eps * max(n, d) * jnp.max(jnp.abs(s))
  keep = s > cutoff
  s = jnp.where(keep, s, 0.0)
  if z2 is not None:
    x2 = jnp.where(keep[:, None], z2 / jnp.where(keep, s, 1.0)[:, None], 0.0)
  else:
    x2 = jnp.where(keep[:, None], x2_direct, 0.0)
  res_x2 = jnp.clip(jnp.sum(y * y, 0) - jnp.sum(x2, 0), 0.0)
  return s, x2, res_x2


def _evidence(alpha, beta, s, x2, res_x2, n: int, d: int):
  """Per-column evidence / n and the fit terms, at (alpha, beta) [t]."""
  t = alpha / beta
  denom = (t[None, :] + s[:, None]) ** 2
  m2 = jnp.sum(s[:, None] * x2 / denom, 0)
  res2 = jnp.sum(x2 * t[None, :] ** 2 / denom, 0) + res_x2
  logdet = jnp.sum(jnp.log(alpha[None, :] + beta[None, :] * s[:, None]), 0)
  logdet += (d - s.shape[0]) * jnp.log(alpha)
  ev = (d / 2.0 * jnp.log(alpha) + n / 2.0 * jnp.log(beta)
        - n / 2.0 * jnp.log(2 * jnp.pi) - beta / 2.0 * res2
        - alpha / 2.0 * m2 - 0.5 * logdet)
  return ev / n, m2, res2


def logme_columns(f: jnp.ndarray, y: jnp.ndarray, *, max_iter: int = 11,
                  tol: float = 1e-3, eps: float = 1e-5) -> jnp.ndarray:
  """Per-column LogME evidence ([t]) of targets y [n, t] on features f [n, d].

  `eps` is the released code's stabiliser in a = gamma / (m'm + eps) and
  b = (n - gamma) / (res + eps).
  """
  n, d = f.shape
  s, x2, res_x2 = _spectrum(f, y)
  num_cols = y.shape[1]
  ones = jnp.ones((num_cols,), f.dtype)

  def step(_, carry):
    alpha, beta, done = carry
    t = alpha / beta
    gamma = jnp.sum(s[:, None] / (s[:, None] + t[None, :]), 0)
    _, m2, res2 = _evidence(alpha, beta, s, x2, res_x2, n, d)
    new_alpha = gamma / (m2 + eps)
    new_beta = (n - gamma) / (res2 + eps)
    converged = jnp.abs(new_alpha / new_beta - t) / t <= tol
    alpha = jnp.where(done, alpha, new_alpha)
    beta = jnp.where(done, beta, new_beta)
    return alpha, beta, done | converged

  alpha, beta, _ = jax.lax.fori_loop(
      0, max_iter, step, (ones, ones, jnp.zeros((num_cols,), bool)))
  ev, _, _ = _evidence(alpha, beta, s, x2, res_x2, n, d)
  return ev


def _core(f, *, labels, targets, num_classes, max_classes, regression,
          max_iter, tol):
  dtype = _common.float_dtype(f)
  f = f.astype(dtype)
  if regression:
    y = targets.astype(dtype)
    return jnp.mean(logme_columns(f, y, max_iter=max_iter, tol=tol))
  # Padding classes are all-zero columns, evaluated and then left out.
  y = _common.one_hot(labels, max_classes, dtype)
  mask = _common.class_mask(num_classes, max_classes, dtype)
  evidence = logme_columns(f, y, max_iter=max_iter, tol=tol)
  return jnp.sum(jnp.where(mask > 0, evidence, 0.0)) / num_classes


def _prepare(stack, labels, *, num_classes=None, max_classes=None,
             regression=False, max_iter=11, tol=1e-3):
  n = stack.shape[1]
  if regression:
    targets = np.asarray(labels, dtype=np.float64)
    if targets.ndim == 1:
      targets = targets[:, None]
    if targets.ndim != 2 or targets.shape[0] != n:
      raise ValueError(
          f'regression targets must be [n] or [n, t] with n={n}, got shape '
          f'{np.shape(labels)}.')
    if not np.all(np.isfinite(targets)):
      raise ValueError('regression targets hold NaN or inf.')
    arrays = dict(labels=np.zeros((n,), np.int32),
                  targets=targets.astype(stack.dtype),
                  num_classes=np.int32(0))
    bound = 0
  else:
    bound, arrays = _common.class_arrays(labels, n, num_classes, max_classes)
    arrays['targets'] = np.zeros((n, 1), stack.dtype)
  if int(max_iter) < 1:
    raise ValueError(f'max_iter must be >= 1, got {max_iter}.')
  static = dict(max_classes=bound, regression=bool(regression),
                max_iter=int(max_iter), tol=float(tol))
  return static, arrays


SPEC = _batch.Spec('logme', _core, _prepare, doc=__doc__)
