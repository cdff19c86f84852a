"""Fold-in and scoring kernels of a transfer space (jitted, batched over tasks).

A fitted task t maps back to raw scores through its affine normalization, so
its raw scores are linear in the model features phi[m] = [U[m], 1,
model_bias[m]] with weight vector w_t = [scale_t V[t], loc_t + scale_t
(offset + task_bias[t]), scale_t] (`features`, `task_weights`). A new task's
w has a Gaussian prior (the fitted tasks' empirical Bayes mean and
covariance) and K observed raw scores give the closed-form Bayesian linear
regression posterior (`fennec_jax.posterior.fold_in_posterior`, shared with
the recommender), computed in whitened coordinates.
For the nonlinear normalizations the predicted scores finally go through the
population link (`posterior.apply_link`). Ranking many tasks over a large repository is
one chunked matmul with a per-chunk `lax.top_k` (`top_k_impl`).

The kernels take the space as a pytree with the `TransferSpace` fields; the
compiled entry points (`fold_in_dense`, `fold_in_gather`, `score`,
`top_k_chunked`) are module attributes, so a test can wrap the impls with a
trace counter and check that repeated calls do not recompile.
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from fennec_jax import posterior as posterior_lib


class FoldIn(NamedTuple):
  """Posterior of new tasks' weight vectors and their predicted scores.

  Attributes:
    vectors: [B, d] posterior mean task weight vectors (d = rank + 2), in the
      raw score domain; `TransferSpace.score(vectors)` gives `predicted`.
    cov: [B, d, d] posterior covariances of the vectors.
    predicted: [B, M] predicted raw score of every model: the predictive
      mean phi @ w; for normalization 'rank'/'robust' mapped through
      `apply_link` (same ranking, mean and spread; the shape of a typical
      task's scores).
    std: [B, M] predictive standard deviation of a model's raw score
      (posterior uncertainty of the vector plus the noise variance).
  """
  vectors: jax.Array
  cov: jax.Array
  predicted: jax.Array
  std: jax.Array


class WhitenedPrior(NamedTuple):
  """The fold-in prior of a space in whitened coordinates.

  Attributes:
    phi: [M, d] model features.
    phi_white: [M, d] phi @ chol.
    mean: [d] prior mean of a task weight vector.
    chol: [d, d] lower Cholesky factor of the prior covariance.
    noise_var: [] noise variance of a raw score.
    link: [L] population link, or [0].
  """
  phi: jax.Array
  phi_white: jax.Array
  mean: jax.Array
  chol: jax.Array
  noise_var: jax.Array
  link: jax.Array


def features(model_factors: jax.Array, model_bias: jax.Array) -> jax.Array:
  """[M, d] phi = [U, 1, model_bias]: raw scores are phi @ w."""
  m = model_factors.shape[0]
  return jnp.concatenate([model_factors, jnp.ones((m, 1)),
                          model_bias[:, None]], axis=1)


def task_weights(task_factors: jax.Array, task_bias: jax.Array,
                 offset: jax.Array, loc: jax.Array, scale: jax.Array
                 ) -> jax.Array:
  """[T, d] raw-domain weight vectors w_t of fitted tasks."""
  intercept = loc + scale * (offset + task_bias)
  return jnp.concatenate([scale[:, None] * task_factors, intercept[:, None],
                          scale[:, None]], axis=1)


def _prior_chol(cov):
  """Lower Cholesky factor of cov + a small jitter (cov may be singular)."""
  d = cov.shape[0]
  jitter = 1e-6 * jnp.maximum(jnp.trace(cov) / d, 1e-12)
  return jnp.linalg.cholesky(cov + jitter * jnp.eye(d, dtype=cov.dtype))


def whitened_prior(space: Any) -> WhitenedPrior:
  """The fold-in prior of `space` (a `TransferSpace`), whitened."""
  phi = features(space.model_factors, space.model_bias)
  chol = _prior_chol(space.prior_cov)
  return WhitenedPrior(phi=phi, phi_white=phi @ chol, mean=space.prior_mean,
                       chol=chol, noise_var=space.noise_var, link=space.link)


def _posterior_outputs(prior, z, chol_a, return_std, return_predicted=True,
                       return_cov=True):
  w = prior.mean + z @ prior.chol.T
  if return_cov:
    # cov_w = chol A^-1 chol^T = (chol_a^-1 chol^T)^T (chol_a^-1 chol^T).
    g = jax.scipy.linalg.solve_triangular(
        chol_a, jnp.broadcast_to(prior.chol.T, chol_a.shape), lower=True)
    cov = jnp.einsum('bki,bkj->bij', g, g)
  else:
    cov = jnp.zeros((z.shape[0], 0, 0))
  if return_predicted:
    predicted = posterior_lib.apply_link(w @ prior.phi.T, prior.link)
  else:
    predicted = jnp.zeros((z.shape[0], 0))
  if return_std:
    # Var of phi_m . w = |chol_a^-1 phi_white_m|^2.
    h = jax.scipy.linalg.solve_triangular(
        chol_a, jnp.broadcast_to(prior.phi_white.T,
                                 (z.shape[0],) + prior.phi_white.T.shape),
        lower=True)
    std = jnp.sqrt(jnp.sum(h ** 2, axis=1) + prior.noise_var)
  else:
    std = jnp.zeros((z.shape[0], 0))
  return FoldIn(vectors=w, cov=cov, predicted=predicted, std=std)


def fold_in_dense_impl(space: Any, scores: jax.Array, mask: jax.Array
                       ) -> FoldIn:
  """Dense fold-in: every model is a potential observation (masked)."""
  prior = whitened_prior(space)
  mask = mask.astype(prior.phi.dtype)
  resid = (scores - (prior.phi @ prior.mean)[None, :]) * mask
  x = prior.phi_white
  gram = jnp.einsum('bm,mi,mj->bij', mask, x, x)
  z, chol_a = posterior_lib.fold_in_posterior(gram, resid @ x, prior.noise_var)
  return _posterior_outputs(prior, z, chol_a, return_std=True)


def fold_in_gather_impl(space: Any, idx: jax.Array, scores: jax.Array,
                        valid: jax.Array, *, return_std: bool,
                        return_predicted: bool, return_cov: bool) -> FoldIn:
  """Gathered fold-in: K observed model indices per task."""
  prior = whitened_prior(space)
  valid = valid.astype(prior.phi.dtype)
  resid = (scores - (prior.phi @ prior.mean)[idx]) * valid
  x = prior.phi_white[idx] * valid[..., None]
  gram = jnp.einsum('bki,bkj->bij', x, x)
  z, chol_a = posterior_lib.fold_in_posterior(gram, jnp.einsum('bki,bk->bi', x, resid),
                                prior.noise_var)
  return _posterior_outputs(prior, z, chol_a, return_std=return_std,
                            return_predicted=return_predicted,
                            return_cov=return_cov)


def top_k_impl(space: Any, w: jax.Array, *, k: int, chunk_size: int
               ) -> tuple[jax.Array, jax.Array]:
  """Top-k of w @ phi.T over models, chunk by chunk.

  Each chunk's [B, chunk_size] score tile (small enough to stay in cache)
  is reduced to its top-k at once; the per-chunk winners, [B, num_chunks *
  k], are merged by one final top-k (a running merge per chunk would double
  the per-row top-k overhead).
  """
  phi = features(space.model_factors, space.model_bias)
  m, d = phi.shape
  num_chunks = -(-m // chunk_size)
  pad = num_chunks * chunk_size - m
  chunks = jnp.pad(phi, ((0, pad), (0, 0))).reshape(num_chunks, chunk_size, d)
  b = w.shape[0]
  kc = min(k, chunk_size)

  def body(_, inputs):
    c, phi_c = inputs
    s = w @ phi_c.T
    ids = c * chunk_size + jnp.arange(chunk_size, dtype=jnp.int32)
    s = jnp.where(ids[None, :] < m, s, -jnp.inf)
    v, i = jax.lax.top_k(s, kc)
    return None, (v, ids[i])

  _, (vals, idx) = jax.lax.scan(
      body, None, (jnp.arange(num_chunks, dtype=jnp.int32), chunks))
  vals = jnp.moveaxis(vals, 0, 1).reshape(b, num_chunks * kc)
  idx = jnp.moveaxis(idx, 0, 1).reshape(b, num_chunks * kc)
  top_v, pos = jax.lax.top_k(vals, k)
  return top_v, jnp.take_along_axis(idx, pos, axis=1)


fold_in_dense = jax.jit(fold_in_dense_impl)
fold_in_gather = jax.jit(fold_in_gather_impl,
                         static_argnames=('return_std', 'return_predicted',
                                          'return_cov'))
score = jax.jit(lambda space, w: w @ features(space.model_factors,
                                              space.model_bias).T)
top_k_chunked = jax.jit(top_k_impl, static_argnames=('k', 'chunk_size'))
