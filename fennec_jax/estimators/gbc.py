"""GBC: Gaussian Bhattacharyya Coefficient (class overlap in feature space).

Pandy et al., "Transferability Estimation using Bhattacharyya Class
Separability", CVPR 2022. Each class is a Gaussian N(mu_c, diag(s_c)) with the
biased per-class variance floored at 1e-4. For classes i != j,

  D_B = 1/8 sum (mu_i - mu_j)^2 / s + 1/2 (sum log s - 1/2 sum log s_i
        - 1/2 sum log s_j),   s = (s_i + s_j) / 2,
  GBC = - sum_{i != j} exp(-D_B)   (higher = better separated).

'diagonal' keeps per-dimension variances; 'spherical' replaces each class's
variance by its mean over dimensions and, like the released code, takes the log
of that scalar once (not d times). `pca_dim` optionally projects first (shared
PCA, exact or randomized). Invariant to permuting class ids and to an exact
feature-space translation; not scale invariant (the 1e-4 floor).
Padding classes (up to `max_classes`) are left out of the pair sum.
"""

import jax
import jax.numpy as jnp
import numpy as np

from fennec_jax.estimators import _batch
from fennec_jax.estimators import _common
from fennec_jax.estimators import preprocess


def _core(f, *, labels, key, num_classes, max_classes, gaussian_type, pca_dim,
          pca_method):
  x = f.astype(_common.float_dtype(f))
  if pca_dim is not None:
    x = preprocess.pca(x, pca_dim, method=pca_method,
                       key=jax.random.wrap_key_data(key))
  onehot = _common.one_hot(labels, max_classes, x.dtype)
  means = _common.class_means(x, onehot)
  var = _common.class_means(x * x, onehot) - means**2
  var = jnp.maximum(var, 1e-4)
  if gaussian_type == 'spherical':
    var = jnp.mean(var, 1, keepdims=True)
  logvar = jnp.sum(jnp.log(var), 1)

  def row(args):
    mu_i, var_i, logvar_i = args
    avg = (var_i[None, :] + var) / 2.0
    first = jnp.sum((mu_i[None, :] - means) ** 2 / avg, 1) / 8.0
    second = jnp.sum(jnp.log(avg), 1) - 0.5 * logvar_i - 0.5 * logvar
    return jnp.exp(-(first + 0.5 * second))

  bc = jax.lax.map(row, (means, var, logvar))
  live = _common.class_mask(num_classes, max_classes, x.dtype)
  pairs = (live[:, None] * live[None, :]
           * (1.0 - jnp.eye(max_classes, dtype=x.dtype)))
  return -jnp.sum(bc * pairs)


def _prepare(stack, labels, *, num_classes=None, max_classes=None,
             gaussian_type='diagonal', pca_dim=None, pca_method='exact',
             seed=0):
  bound, arrays = _common.class_arrays(labels, stack.shape[1], num_classes,
                                       max_classes)
  if gaussian_type not in ('diagonal', 'spherical'):
    raise ValueError(f"gaussian_type must be 'diagonal' or 'spherical', got "
                     f'{gaussian_type!r}.')
  key = np.asarray(jax.random.key_data(jax.random.key(int(seed))))
  return (dict(max_classes=bound, gaussian_type=gaussian_type,
               pca_dim=None if pca_dim is None else int(pca_dim),
               pca_method=pca_method),
          dict(arrays, key=key))


SPEC = _batch.Spec('gbc', _core, _prepare, doc=__doc__)
