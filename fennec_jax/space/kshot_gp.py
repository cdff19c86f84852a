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

With model metadata (`feature_factor`: family, source data set, size, ...),
S_a gains a term w F F^T, F the models' centred metadata features scaled so
that a model's mean F F^T diagonal is the mean model variance: models that
share metadata co-vary even where the history has too few tasks to show it
(13 tasks cannot estimate the covariance of 180 models beyond rank 12).
The weight w is a candidate of the same inner validation (w = 0: none).

The prediction uses the new task's level l unknown (a flat prior: its generalized
least-squares estimate) and its scale matched by moments: the K raw scores
are divided by s, their spread over the observed models over the spread the
historical columns have over the same models, so x_o are in the history's
normalized units. With K < 2 or K equal scores nothing is known about the
shape and the prediction is mu.

D is kept as [M, T] (and F as [M, P]): S_a[:, o] is one [M, T] x [T, K]
matmul, so the cost is O(M (T + P) K) per task and S is never formed. The shrinkage a and the nugget n
are candidates of `kshot`'s inner validation (leave training tasks out).
"""

from collections.abc import Mapping
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from fennec_jax import model_metadata as model_metadata_lib


class GaussianStats(NamedTuple):
  """The history's task distribution over models (normalized units).

  Attributes:
    mean: [M] mu, the mean column.
    dev: [M, T] D / sqrt(T), so that D D^T / T = dev dev^T.
    var: [M] the diagonal of dev dev^T.
    meta: [M, P] the metadata factor F (P = 0 without metadata).
  """
  mean: jax.Array
  dev: jax.Array
  var: jax.Array
  meta: jax.Array


def feature_factor(features: Any, names: Sequence[str] | None = None
                   ) -> np.ndarray:
  """[M, P] F from [M, P] model metadata features (`metadata_features`).

  Each column is centred over the models; numeric columns (not 0/1) are
  also scaled to unit variance. Columns of one metadata key (by `names`:
  'family=vit' and 'family=resnet' are both 'family', 'num_params:missing'
  is 'num_params') are scaled together so that every key carries the same
  total variance, and F is scaled so that the mean of
  diag(F F^T) is 1 (`condition` multiplies it by the mean model variance).
  A matrix with no variance gives [M, 0].
  """
  x = np.asarray(features, np.float64)
  if x.ndim != 2:
    raise ValueError(f'model features must be [M, P], got shape {x.shape}.')
  if not np.isfinite(x).all():
    raise ValueError('model features must be finite (fill missing values '
                     'first, as `metadata_features` does).')
  if not x.shape[1]:
    return np.zeros((x.shape[0], 0), np.float32)
  binary = np.isin(x, (0.0, 1.0)).all(0)
  x = x - x.mean(0)
  std = x.std(0)
  keep = std > 1e-12
  x = np.where(binary | ~keep, x, x / np.where(keep, std, 1.0))
  names = list(names) if names is not None else [str(i) for i in
                                                  range(x.shape[1])]
  if len(names) != x.shape[1]:
    raise ValueError(f'{len(names)} feature names for {x.shape[1]} feature '
                     'columns.')
  groups = [n.split('=')[0].split(':')[0] for n in names]
  x, groups = x[:, keep], [g for g, k in zip(groups, keep) if k]
  for g in set(groups):
    cols = [i for i, h in enumerate(groups) if h == g]
    x[:, cols] /= np.sqrt((x[:, cols] ** 2).sum(1).mean())
  if not x.shape[1]:
    return np.zeros((x.shape[0], 0), np.float32)
  return (x / np.sqrt((x ** 2).sum(1).mean())).astype(np.float32)


def metadata_factor(model_metadata: Mapping[str, Any], num_models: int,
                    name: str = '') -> np.ndarray:
  """[M, P] F of a history's model metadata (P = 0 if none is usable)."""
  features, names = model_metadata_lib.model_features(
      model_metadata, name, required=False)
  if not names:
    return np.zeros((num_models, 0), np.float32)
  return feature_factor(features, names)


def stats(columns: jax.Array, meta: jax.Array | None = None
          ) -> GaussianStats:
  """The Gaussian of the [M, T] completed normalized columns.

  meta: `feature_factor` [M, P] of the models' metadata, or None.
  """
  columns = jnp.asarray(columns, jnp.float32)
  mean = columns.mean(1)
  dev = (columns - mean[:, None]) / jnp.sqrt(columns.shape[1])
  var = (dev ** 2).sum(1)
  if meta is None:
    meta = jnp.zeros((columns.shape[0], 0), jnp.float32)
  meta = jnp.asarray(meta, jnp.float32) * jnp.sqrt(var.mean())
  return GaussianStats(mean=mean, dev=dev, var=var, meta=meta)


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
              valid: jax.Array, shrink: Any, nugget: Any,
              meta_weight: Any = 0.0) -> jax.Array:
  """[B, M] conditional mean (normalized units) from K raw scores per row.

  Args:
    stats_: `stats` of the history.
    idx: [B, K] observed model indices.
    y: [B, K] their raw scores.
    valid: [B, K] bool (padding False).
    shrink: a in [0, 1], the weight of the diagonal target.
    nugget: n >= 0, the observation noise in units of the mean model
      variance.
    meta_weight: w >= 0, the weight of the metadata term w F F^T.

  Returns:
    The prediction of every model; mu on rows whose scores carry no shape.
  """
  v = valid.astype(jnp.float32)
  s = _scale(stats_, idx, y, valid)
  shaped = s > 0
  x = jnp.where(shaped[:, None], y / jnp.where(shaped, s, 1.0)[:, None], 0.0)
  r = (x - stats_.mean[idx]) * v
  dev_o = stats_.dev[idx] * v[..., None]  # [B, K, T]
  meta_o = stats_.meta[idx] * v[..., None]  # [B, K, P]
  k = idx.shape[1]
  eye = jnp.eye(k, dtype=jnp.float32)
  same = (idx[:, :, None] == idx[:, None, :]).astype(jnp.float32)
  diag_o = stats_.var[idx] * v
  noise = nugget * stats_.var.mean()
  s_oo = ((1.0 - shrink) * jnp.einsum('bit,bjt->bij', dev_o, dev_o)
          + shrink * same * diag_o[:, :, None] * v[:, None, :]
          + meta_weight * jnp.einsum('bip,bjp->bij', meta_o, meta_o)
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
  s_mo = s_mo + meta_weight * jnp.einsum('mp,bkp->bmk', stats_.meta, meta_o)
  pred = stats_.mean + jnp.einsum('bmk,bk->bm', s_mo, alpha)
  return jnp.where(shaped[:, None], pred, stats_.mean)
