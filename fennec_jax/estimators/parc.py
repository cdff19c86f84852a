"""PARC: Pairwise Annotation Representation Comparison.

Bolya et al., "Scalable Diverse Model Selection for Accessible Transfer
Learning", NeurIPS 2021. Features are standardised per dimension (zero-variance
dimensions left unscaled, as sklearn's StandardScaler), optionally PCA'd
(`pca_dim`; the paper's pipeline uses 32), and compared with the labels through
representation dissimilarity matrices:

  RDM_f = 1 - corr(f_i, f_j)  (Pearson across dimensions, per pair of samples),
  RDM_y = 1 - corr(onehot(y_i), onehot(y_j)),
  PARC = 100 * Spearman(lower triangle of RDM_f, lower triangle of RDM_y).

Spearman is the Pearson correlation of average ranks (ties averaged, as
scipy). RDM_y takes two values (0 for same class, 1 + 1/(C-1) otherwise), so
its rank is an affine map of the "different class" indicator and only RDM_f
needs sorting: O(P log P) for P = n(n-1)/2 pairs. A sample whose standardised
features are constant has an undefined correlation; it is set to 0 (distance
1). Memory is O(P) per model, so the default runs 4 models per vmapped chunk.
Invariant to feature scale (per dimension) and to permuting class ids.
"""

import jax
import jax.numpy as jnp
import numpy as np

from fennec_jax.estimators import _batch
from fennec_jax.estimators import _common
from fennec_jax.estimators import preprocess


def average_ranks(values: jnp.ndarray) -> jnp.ndarray:
  """1-based ranks with ties averaged (scipy.stats.rankdata 'average')."""
  values = jnp.asarray(values)
  p = values.shape[0]
  order = jnp.argsort(values)
  sorted_vals = values[order]
  new_group = jnp.concatenate(
      [jnp.ones((1,), bool), sorted_vals[1:] != sorted_vals[:-1]])
  gid = jnp.cumsum(new_group) - 1
  pos = jnp.arange(1, p + 1, dtype=values.dtype)
  sums = jax.ops.segment_sum(pos, gid, num_segments=p)
  counts = jax.ops.segment_sum(jnp.ones_like(pos), gid, num_segments=p)
  avg = sums / jnp.where(counts > 0, counts, 1.0)
  return jnp.zeros_like(values).at[order].set(avg[gid])


def _pearson(a, b):
  a = a - a.mean()
  b = b - b.mean()
  denom = jnp.sqrt(jnp.sum(a * a) * jnp.sum(b * b))
  return jnp.where(denom > 0, jnp.sum(a * b) / jnp.where(denom > 0, denom, 1.0),
                   0.0)


def _core(f, *, labels, num_classes, rows, cols, key, pca_dim, pca_method):
  del num_classes  # RDM_y only asks whether two labels differ.
  x = f.astype(_common.float_dtype(f))
  std = x.std(0)
  x = (x - x.mean(0)) / jnp.where(std > 0, std, 1.0)
  if pca_dim is not None:
    x = preprocess.pca(x, pca_dim, method=pca_method,
                       key=jax.random.wrap_key_data(key))
  xc = x - x.mean(1, keepdims=True)
  norm = jnp.linalg.norm(xc, axis=1)
  xn = xc / jnp.where(norm > 0, norm, 1.0)[:, None]
  dist = 1.0 - (xn @ xn.T)[rows, cols]  # [n, n] then the lower triangle.
  different = (labels[rows] != labels[cols]).astype(x.dtype)
  return 100.0 * _pearson(average_ranks(dist), different)


def _prepare(stack, labels, *, num_classes=None, max_classes=None,
             pca_dim=None, pca_method='exact', seed=0):
  n = stack.shape[1]
  _, arrays = _common.class_arrays(labels, n, num_classes, max_classes)
  rows, cols = np.tril_indices(n, -1)
  key = np.asarray(jax.random.key_data(jax.random.key(int(seed))))
  return (dict(pca_dim=None if pca_dim is None else int(pca_dim),
               pca_method=pca_method),
          dict(arrays, rows=rows.astype(np.int32),
               cols=cols.astype(np.int32), key=key))


SPEC = _batch.Spec('parc', _core, _prepare, doc=__doc__, default_batch_size=4)
