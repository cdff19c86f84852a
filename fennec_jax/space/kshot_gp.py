"""A conditional-Gaussian source of the K-shot fold-in: models co-vary.

The space's fold-in sees a new task through its rank-k model factors, so two
models that always move together but are not explained by the factors look
independent to it. Here a task's normalized score vector over the models is
a draw from a Gaussian whose mean mu and model-model covariance S are those
of the history's (completed, normalized) task columns C [M, T], shrunk
towards the diagonal:

  S_a = (1 - a) D D^T / T + a diag(D D^T / T),    D = C - mu

and the K observed scores are the draw at K models plus a nugget n times
the mean model variance. The prediction of every model is the conditional
mean

  mu + S_a[:, o] (S_a[o, o] + n v I)^-1 (x_o - mu_o - l)

with the new task's level l unknown (a flat prior: its generalized
least-squares estimate) and its scale matched by moments: the K raw scores
are divided by s, their spread over the observed models over the spread the
historical columns have over the same models, so x_o are in the history's
normalized units. With K < 2 or K equal scores nothing is known about the
shape and the prediction is mu.

D is kept as [M, T]: S_a[:, o] is one [M, T] x [T, K] matmul, so the cost is
O(M T K) per task and S is never formed. The shrinkage a and the nugget n
are candidates of `kshot`'s inner validation (leave training tasks out).
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp


class GaussianStats(NamedTuple):
  """The history's task distribution over models (normalized units).

  Attributes:
    mean: [M] mu, the mean column.
    dev: [M, T] D / sqrt(T), so that D D^T / T = dev dev^T.
    var: [M] the diagonal of dev dev^T.
  """
  mean: jax.Array
  dev: jax.Array
  var: jax.Array


def stats(columns: jax.Array) -> GaussianStats:
  """The Gaussian of the [M, T] completed normalized columns."""
  columns = jnp.asarray(columns, jnp.float32)
  mean = columns.mean(1)
  dev = (columns - mean[:, None]) / jnp.sqrt(columns.shape[1])
  return GaussianStats(mean=mean, dev=dev, var=(dev ** 2).sum(1))


def _scale(stats_: GaussianStats, idx, y, valid):
  """[B] s: the observed scores' spread over the history's at those models.

  Both spreads are sums of squared deviations from the mean over the valid
  observed models; the history's is averaged over its tasks. 0 where the
  scores carry no shape (fewer than 2 valid, or all equal).
  """
  v = valid.astype(y.dtype)
  n = jnp.maximum(v.sum(-1, keepdims=True), 1.0)
  yc = (y - (y * v).sum(-1, keepdims=True) / n) * v
  ss_y = (yc ** 2).sum(-1)
  cols = (stats_.mean[:, None] + stats_.dev * jnp.sqrt(stats_.dev.shape[1])
          )[idx]  # [B, K, T]
  cc = (cols - (cols * v[..., None]).sum(1, keepdims=True) / n[..., None])
  ss_h = ((cc * v[..., None]) ** 2).sum(1).mean(-1)
  ok = (v.sum(-1) >= 2) & (ss_y > 0) & (ss_h > 0)
  return jnp.where(ok, jnp.sqrt(ss_y / jnp.where(ok, ss_h, 1.0)), 0.0)


def condition(stats_: GaussianStats, idx: jax.Array, y: jax.Array,
              valid: jax.Array, shrink: Any, nugget: Any) -> jax.Array:
  """[B, M] conditional mean (normalized units) from K raw scores per row.

  Args:
    stats_: `stats` of the history.
    idx: [B, K] observed model indices.
    y: [B, K] their raw scores.
    valid: [B, K] bool (padding False).
    shrink: a in [0, 1], the weight of the diagonal target.
    nugget: n >= 0, the observation noise in units of the mean model
      variance.

  Returns:
    The prediction of every model; mu on rows whose scores carry no shape.
  """
  v = valid.astype(jnp.float32)
  s = _scale(stats_, idx, y, valid)
  shaped = s > 0
  x = jnp.where(shaped[:, None], y / jnp.where(shaped, s, 1.0)[:, None], 0.0)
  r = (x - stats_.mean[idx]) * v
  dev_o = stats_.dev[idx] * v[..., None]  # [B, K, T]
  k = idx.shape[1]
  eye = jnp.eye(k, dtype=jnp.float32)
  same = (idx[:, :, None] == idx[:, None, :]).astype(jnp.float32)
  diag_o = stats_.var[idx] * v
  noise = nugget * stats_.var.mean()
  s_oo = ((1.0 - shrink) * jnp.einsum('bit,bjt->bij', dev_o, dev_o)
          + shrink * same * diag_o[:, :, None] * v[:, None, :]
          + noise * eye * v[:, :, None])
  # Padding rows/columns: identity, zero residual, so they drop out.
  s_oo = s_oo + eye * (1.0 - v)[:, :, None]
  chol = jnp.linalg.cholesky(s_oo + 1e-6 * stats_.var.mean() * eye)

  solve = jax.vmap(lambda c, b: jax.scipy.linalg.cho_solve((c, True), b))
  a_r = solve(chol, r)
  a_1 = solve(chol, v)
  level = (v * a_r).sum(-1) / jnp.maximum((v * a_1).sum(-1), 1e-12)
  alpha = solve(chol, (r - level[:, None]) * v) * v  # [B, K]
  s_mo = (1.0 - shrink) * jnp.einsum('mt,bkt->bmk', stats_.dev, dev_o)
  onehot = jax.nn.one_hot(idx, stats_.mean.shape[0], dtype=jnp.float32)
  s_mo = s_mo + shrink * jnp.einsum('bkm,bk->bmk', onehot, diag_o)
  pred = stats_.mean + jnp.einsum('bmk,bk->bm', s_mo, alpha)
  return jnp.where(shaped[:, None], pred, stats_.mean)
