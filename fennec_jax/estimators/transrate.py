"""TransRate: mutual information between features and labels via coding rate.

Huang et al., "Frustratingly Easy Transferability Estimation", ICML 2022. With
features centred once, the coding rate R(Z, eps) = 1/2 logdet(I + Z'Z / (n eps))
and, as in the released code,

  TransRate = R(Z, eps) - 1/C sum_c R(Z_c, eps)   (Z_c: rows of class c, its own
  n_c in the coefficient; eps = 1e-4).

Each log-determinant comes from the eigenvalues of the smaller Gram matrix
(logdet(I_d + A'A) = logdet(I_n + AA')), and the per-class rates are batched
over a [C, n_max] class-index table built on the host, with padded rows equal
to zero (a zero row adds an eigenvalue 0, i.e. log 1 = 0, so padding is exact).
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


def class_index_table(labels: np.ndarray, num_classes: int) -> np.ndarray:
  """[C, n_max] row indices per class, padded with n (an out-of-range row)."""
  n = labels.shape[0]
  counts = np.bincount(labels, minlength=num_classes)
  table = np.full((num_classes, int(counts.max())), n, np.int32)
  for c in range(num_classes):
    members = np.flatnonzero(labels == c)
    table[c, :members.size] = members
  return table


def _core(f, *, table, counts, num_classes, eps):
  z = f.astype(_common.float_dtype(f))
  z = z - z.mean(0, keepdims=True)
  rz = coding_rate(z, z.shape[0], eps)
  per_class = jnp.take(z, table, axis=0, mode='fill', fill_value=0.0)
  rzy = jax.vmap(lambda zc, nc: coding_rate(zc, nc, eps))(
      per_class, counts.astype(z.dtype))
  return rz - jnp.sum(rzy) / num_classes


def _prepare(stack, labels, *, num_classes=None, eps=1e-4):
  labels, num_classes = _common.check_labels(labels, stack.shape[1],
                                             num_classes)
  if eps <= 0:
    raise ValueError(f'eps must be positive, got {eps}.')
  counts = np.bincount(labels, minlength=num_classes).astype(np.int32)
  return (dict(num_classes=num_classes, eps=float(eps)),
          dict(table=class_index_table(labels, num_classes), counts=counts))


SPEC = _batch.Spec('transrate', _core, _prepare, doc=__doc__)
