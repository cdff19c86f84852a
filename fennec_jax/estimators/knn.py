"""k-nearest-neighbour leave-one-out accuracy of the features.

Each sample is classified by a majority vote of its k nearest other samples
(Euclidean, or cosine with `metric='cosine'`); the score is the fraction
classified correctly. Ties in the vote go to the class whose voters are nearer:
a voter at rank r (0 = nearest) adds 1 + (k - r) / (k (k + 1)) votes, and the
tie-break part sums to less than 1/2, so it never overrides a real majority.
Invariant to permuting class ids, to a global feature scale and to rotations.
"""

import jax
import jax.numpy as jnp

from fennec_jax.estimators import _batch
from fennec_jax.estimators import _common


def _core(f, *, labels, num_classes, max_classes, k, metric):
  del num_classes  # Padding classes get no vote.
  x = f.astype(_common.float_dtype(f))
  n = x.shape[0]
  if metric == 'cosine':
    norm = jnp.linalg.norm(x, axis=1, keepdims=True)
    x = x / jnp.where(norm > 0, norm, 1.0)
  sq = jnp.sum(x * x, 1)
  d2 = sq[:, None] - 2.0 * x @ x.T + sq[None, :]
  d2 = jnp.where(jnp.eye(n, dtype=bool), jnp.inf, d2)
  _, nbr = jax.lax.top_k(-d2, k)  # [n, k], nearest first.
  weights = 1.0 + (k - jnp.arange(k, dtype=x.dtype)) / (k * (k + 1.0))
  votes = jnp.sum(
      _common.one_hot(labels[nbr].reshape(-1), max_classes, x.dtype).reshape(
          n, k, max_classes) * weights[None, :, None], 1)
  return jnp.mean((jnp.argmax(votes, 1) == labels).astype(x.dtype))


def _prepare(stack, labels, *, num_classes=None, max_classes=None, k=5,
             metric='euclidean'):
  n = stack.shape[1]
  bound, arrays = _common.class_arrays(labels, n, num_classes, max_classes)
  if not 1 <= int(k) <= n - 1:
    raise ValueError(f'k must be in 1..n-1 = 1..{n - 1}, got {k}.')
  if metric not in ('euclidean', 'cosine'):
    raise ValueError(
        f"metric must be 'euclidean' or 'cosine', got {metric!r}.")
  return dict(max_classes=bound, k=int(k), metric=metric), arrays


SPEC = _batch.Spec('knn', _core, _prepare, doc=__doc__)
