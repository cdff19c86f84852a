"""The K-shot posterior of task weight vectors and the predictive scores.

A task's raw scores are linear in the models' features: y[m] = phi[m] . w
+ noise (variance s2). Given a Gaussian prior w ~ N(mean, chol chol^T) and
K observed scores, the posterior is Bayesian linear regression, computed in
whitened coordinates (w = mean + chol z, z ~ N(0, I)) so it stays well
conditioned even when the prior covariance is singular. Every function here
works on a batch of B tasks at once, with K padded (a `valid` mask), so calls
with different numbers of observed scores share compiled shapes.

An optional per-task `shift` [B, M] moves each model's bias feature (the last
column of phi) for that task: task b sees phi_b[m] = phi[m] + shift[b, m]
e_last. The neighbour task map uses it for its averaged residuals; None is a
separate compilation that does no shift work.

Pure jax.numpy with no package imports, so any learned module (the
recommender; the transfer space's fold-in) can build on it.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np


def batch_bucket(n: int) -> int:
  """The padded size of a batch of n rows: the next power of two (>= 1).

  Padding the task batch (or K) to a bucket keeps the number of compiled
  shapes logarithmic in the largest batch.
  """
  return 1 << max(int(n) - 1, 0).bit_length()


def jittered_cholesky(cov: np.ndarray) -> np.ndarray:
  """Lower Cholesky factor of `cov` plus a 1e-6 relative diagonal jitter.

  The jitter (1e-6 of the mean variance) lets a singular covariance (e.g. a
  task scale fixed at 1) be factored; float64 NumPy.
  """
  cov = np.asarray(cov, np.float64)
  d = cov.shape[0]
  jitter = 1e-6 * max(np.trace(cov) / d, 1e-12)
  return np.linalg.cholesky(cov + jitter * np.eye(d))


def fold_in_posterior(gram: jax.Array, xtr: jax.Array, noise_var: jax.Array
                      ) -> tuple[jax.Array, jax.Array]:
  """Posterior of whitened task weights z (w = mean + chol @ z, z ~ N(0, I)).

  With X the whitened features (phi @ chol) of a task's observed models and
  r = y - phi @ mean its residuals from the prior mean prediction:
  A = I + X^T X / s2 and z | y ~ N(A^-1 X^T r / s2, A^-1). Working in the
  whitened coordinates keeps A well conditioned (eigenvalues >= 1) even when
  the prior covariance is singular (e.g. a task scale fixed at 1).

  Args:
    gram: [B, d, d] X^T X over each task's observed models.
    xtr: [B, d] X^T r.
    noise_var: [] s2.

  Returns:
    (z_mean [B, d], lower Cholesky factor of A [B, d, d]).
  """
  d = gram.shape[-1]
  chol_a = jnp.linalg.cholesky(jnp.eye(d) + gram / noise_var)
  z = jax.scipy.linalg.cho_solve((chol_a, True), xtr[..., None] / noise_var)
  return z[..., 0], chol_a


def apply_link(linear: jax.Array, link: jax.Array) -> jax.Array:
  """Maps linear predictions [B, M] through the population link (if any).

  Each row keeps its mean, standard deviation and ranking; the values become
  the population quantile function at each model's rank quantile, so the
  predicted scores have the shape of a typical task (e.g. the long tail of
  failed fine-tunes) rather than the rank-normal shape. Identity when `link`
  is empty (normalization 'none' or 'zscore').

  Args:
    linear: [B, M] linear predictions phi @ w.
    link: [L] quantile function values, or [0].

  Returns:
    [B, M] predictions.
  """
  if link.shape[0] == 0:
    return linear
  num_models = linear.shape[-1]
  ranks = jnp.argsort(jnp.argsort(linear, axis=-1), axis=-1)
  q = (ranks + 0.5) / num_models
  grid = (jnp.arange(link.shape[0]) + 0.5) / link.shape[0]
  shaped = jnp.interp(q, grid, link)
  shaped = shaped - shaped.mean(-1, keepdims=True)
  shaped = shaped / jnp.maximum(shaped.std(-1, keepdims=True), 1e-12)
  return (linear.mean(-1, keepdims=True)
          + linear.std(-1, keepdims=True) * shaped)


def shifted_features(features: jax.Array, shift: jax.Array | None,
                     idx: jax.Array) -> jax.Array:
  """[B, K, d] features of models `idx` [B, K], bias column (last) shifted.

  Args:
    features: [B, K, d] phi[idx].
    shift: [B, M] per-task bias shifts, or None (features returned as is).
    idx: [B, K] the models' indices (to read their shifts).

  Returns:
    The shifted [B, K, d] features.
  """
  if shift is None:
    return features
  return features.at[..., -1].add(jnp.take_along_axis(shift, idx, axis=1))


@jax.jit
def posterior(phi: jax.Array, chol: jax.Array, noise_var: jax.Array,
              mean: jax.Array, idx: jax.Array, scores: jax.Array,
              valid: jax.Array, shift: jax.Array | None = None
              ) -> tuple[jax.Array, jax.Array]:
  """Per-task Gaussian prior N(mean[b], chol chol^T) updated by K scores.

  Args:
    phi: [M, d] model features.
    chol: [d, d] lower Cholesky factor of the prior covariance (shared).
    noise_var: [] noise variance of a score.
    mean: [B, d] prior means, or one [d] mean shared by every task.
    idx: [B, K] observed models (any index where not valid).
    scores: [B, K] their scores.
    valid: [B, K] bool; False entries are padding.
    shift: optional [B, M] per-task shift of the models' bias feature (see
      the module docstring); None is its own compilation.

  Returns:
    (w [B, d] posterior means, cov [B, d, d] posterior covariances). The
    cost is O(B K d^2): independent of the number of models.
  """
  mean = jnp.broadcast_to(mean, (idx.shape[0], phi.shape[1]))
  v = valid.astype(phi.dtype)
  sel = shifted_features(phi[idx], shift, idx)
  x = (sel @ chol) * v[..., None]
  resid = (scores - jnp.einsum('bkd,bd->bk', sel, mean)) * v
  gram = jnp.einsum('bki,bkj->bij', x, x)
  z, chol_a = fold_in_posterior(
      gram, jnp.einsum('bki,bk->bi', x, resid), noise_var)
  w = mean + z @ chol.T
  # cov_w = chol A^-1 chol^T = G^T G with G = chol_a^-1 chol^T.
  g = jax.scipy.linalg.solve_triangular(
      chol_a, jnp.broadcast_to(chol.T, chol_a.shape), lower=True)
  return w, jnp.einsum('bki,bkj->bij', g, g)


def cold_variance(w: jax.Array, cov: jax.Array, sigma_phi: jax.Array
                  ) -> jax.Array:
  """[B] extra variance of a model whose features are uncertain.

  A cold-start model's features are phi + e with e ~ N(0, sigma_phi), so its
  score phi' w gains E[(e' w)^2] = w' S w + tr(S cov_w).

  Args:
    w: [B, d] posterior means.
    cov: [B, d, d] posterior covariances.
    sigma_phi: [d, d] covariance S of the features' error.

  Returns:
    [B] the added variances.
  """
  return (jnp.einsum('bi,ij,bj->b', w, sigma_phi, w)
          + jnp.einsum('ij,bji->b', sigma_phi, cov))


@jax.jit
def predict_all(phi: jax.Array, w: jax.Array, cov: jax.Array,
                noise_var: jax.Array, link: jax.Array, cold: jax.Array,
                sigma_phi: jax.Array, shift: jax.Array | None = None
                ) -> tuple[jax.Array, jax.Array]:
  """[B, M] predictive means and standard deviations (one batched matmul).

  Args:
    phi: [M, d] model features.
    w: [B, d] posterior means.
    cov: [B, d, d] posterior covariances.
    noise_var: [] noise variance of a score.
    link: [L] the population link (see `apply_link`), or [0].
    cold: [M] 1.0 for models whose features carry `sigma_phi`'s error.
    sigma_phi: [d, d] that error's covariance (see `cold_variance`).
    shift: optional [B, M] bias shifts (see the module docstring).

  Returns:
    (mean [B, M] through the link (same ranking, mean and spread as the
    linear prediction), std [B, M] including the noise).
  """
  linear = w @ phi.T
  var = (jnp.einsum('md,bde,me->bm', phi, cov, phi) + noise_var
         + cold_variance(w, cov, sigma_phi)[:, None] * cold[None, :])
  if shift is not None:
    linear = linear + w[:, -1:] * shift
    var = (var + 2 * shift * jnp.einsum('md,bd->bm', phi, cov[:, :, -1])
           + shift ** 2 * cov[:, -1, -1][:, None])
  return apply_link(linear, link), jnp.sqrt(var)


@functools.partial(jax.jit, static_argnames=('k',))
def top_k(phi: jax.Array, w: jax.Array, cov: jax.Array, noise_var: jax.Array,
          link: jax.Array, cold: jax.Array, sigma_phi: jax.Array,
          shift: jax.Array | None = None, *, k: int
          ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Top-k models per task with `predict_all`'s mean and std, no [B, M] sort.

  The linked value of the r-th best model only depends on its rank, the
  row's mean and std and the link, so `apply_link` of the full row is not
  needed: the values equal `predict_all`'s on the top k.

  Args:
    phi, w, cov, noise_var, link, cold, sigma_phi, shift: as `predict_all`.
    k: how many models per task.

  Returns:
    (mean [B, k], std [B, k], indices [B, k]), best model first.
  """
  linear = w @ phi.T
  if shift is not None:
    linear = linear + w[:, -1:] * shift
  values, idx = jax.lax.top_k(linear, k)
  if link.shape[0]:
    m = linear.shape[-1]
    grid = (jnp.arange(link.shape[0]) + 0.5) / link.shape[0]
    shaped_all = jnp.interp((jnp.arange(m) + 0.5) / m, grid, link)
    q_top = (m - 1 - jnp.arange(k) + 0.5) / m
    shaped = (jnp.interp(q_top, grid, link) - shaped_all.mean()) / jnp.maximum(
        shaped_all.std(), 1e-12)
    values = (linear.mean(-1, keepdims=True)
              + linear.std(-1, keepdims=True) * shaped[None, :])
  sel = shifted_features(phi[idx], shift, idx)
  var = (jnp.einsum('bkd,bde,bke->bk', sel, cov, sel) + noise_var
         + cold_variance(w, cov, sigma_phi)[:, None] * cold[idx])
  return values, jnp.sqrt(var), idx
