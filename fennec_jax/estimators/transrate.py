"""TransRate: mutual information between features and labels via coding rate.

Huang et al., "Frustratingly Easy Transferability Estimation", ICML 2022. With
features centred once, the coding rate R(Z, eps) = 1/2 logdet(I + Z'Z / (n eps))
and, as in the released code,

  TransRate = R(Z, eps) - 1/C sum_c R(Z_c, eps)   (Z_c: rows of class c, its own
  n_c in the coefficient; eps = 1e-4).

Each log-determinant comes from the eigenvalues of the smaller Gram matrix
(logdet(I_d + A'A) = logdet(I_n + AA')), and the per-class rates are batched
over a [K, L] class-index table built on the host, with padded rows equal
to zero (a zero row adds an eigenvalue 0, i.e. log 1 = 0, so padding is exact).
K is the class bound (`max_classes`; padding classes are all-zero, rate 0, left
out of the mean) and L the next power of two >= the largest class, so TransRate
compiles once per (K, L) pair: per-class Gram matrices must stay L x L, since a
fixed L = n would cost K eigendecompositions of min(n, d)^2 matrices instead of
C small ones.
Not scale invariant (eps is absolute). Invariant to permuting class ids.
"""

import jax
import jax.numpy as jnp
import numpy as np

from fennec_jax.estimators import _batch
from fennec_jax.estimators import _common


def coding_rate(z: jnp.ndarray, count, eps: float) -> jnp.ndarray:
  """1/2 logdet(I + z'z / (count eps)) for z [r, d] (zero rows allowed)."""
  r, d = z.shape
  gram = z @ z.T if r <= d else z.T @ z
  evals = jnp.clip(jnp.linalg.eigvalsh(gram), 0.0)
  return 0.5 * jnp.sum(jnp.log1p(evals / (count * eps)))


def class_index_table(labels: np.ndarray, max_classes: int) -> np.ndarray:
  """[K, L] row indices per class, padded with n (an out-of-range row).

  L is the next power of two >= the largest class (at most n).
  """
  n = labels.shape[0]
  counts = np.bincount(labels, minlength=max_classes)
  width = min(n, _common.class_bound(int(counts.max())))
  table = np.full((max_classes, width), n, np.int32)
  for c in range(int(labels.max()) + 1):
    members = np.flatnonzero(labels == c)
    table[c, :members.size] = members
  return table


def _core(f, *, table, counts, num_classes, eps):
  z = f.astype(_common.float_dtype(f))
  z = z - z.mean(0, keepdims=True)
  rz = coding_rate(z, z.shape[0], eps)
  per_class = jnp.take(z, table, axis=0, mode='fill', fill_value=0.0)
  # A padding class is all zero rows (rate 0); its count 0 is set to 1.
  rzy = jax.vmap(lambda zc, nc: coding_rate(zc, nc, eps))(
      per_class, jnp.maximum(counts, 1).astype(z.dtype))
  return rz - jnp.sum(rzy) / num_classes


def _prepare(stack, labels, *, num_classes=None, max_classes=None, eps=1e-4):
  bound, arrays = _common.class_arrays(labels, stack.shape[1], num_classes,
                                       max_classes)
  if eps <= 0:
    raise ValueError(f'eps must be positive, got {eps}.')
  labels = arrays['labels']
  counts = np.bincount(labels, minlength=bound).astype(np.int32)
  return (dict(eps=float(eps)),
          dict(table=class_index_table(labels, bound), counts=counts,
               num_classes=arrays['num_classes']))


SPEC = _batch.Spec('transrate', _core, _prepare, doc=__doc__)
