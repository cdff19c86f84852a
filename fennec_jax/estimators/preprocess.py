"""Shared PCA preprocessing (exact and randomized), pure and vmappable.

Several estimators (FDA, NLEEP, optionally GBC and PARC) work on a
low-dimensional projection of the features, which also guards covariance-based
scores against n << d. `pca` is a pure jnp function with a static output width,
so `jax.vmap` runs it for many models at once.
"""

import jax
import jax.numpy as jnp


def _fix_signs(components: jnp.ndarray) -> jnp.ndarray:
  """Flips each column so its largest-magnitude entry is positive."""
  idx = jnp.argmax(jnp.abs(components), axis=0)
  signs = jnp.sign(components[idx, jnp.arange(components.shape[1])])
  return components * jnp.where(signs == 0, 1.0, signs)[None, :]


def pca_basis(features: jnp.ndarray, dim: int, *, method: str = 'exact',
              key: jax.Array | None = None, oversample: int = 10,
              power_iters: int = 4) -> tuple[jnp.ndarray, jnp.ndarray]:
  """Top principal directions and their variances of [n, d] features.

  Args:
    features: [n, d] features (centred inside).
    dim: number of components, static; clipped to min(n, d).
    method: 'exact' (eigendecomposition of the smaller Gram matrix) or
      'randomized' (Halko et al. 2011 range finder with power iterations).
    key: PRNG key for 'randomized'.
    oversample: extra random directions for 'randomized'.
    power_iters: subspace iterations for 'randomized'.

  Returns:
    (components [d, dim] with orthonormal columns, variances [dim]) in
    decreasing order of variance; variances use the 1/(n-1) normalisation.

  Raises:
    ValueError: on an unknown method or a missing key.
  """
  n, d = features.shape
  dim = int(min(dim, n, d))
  x = features - features.mean(0, keepdims=True)
  denom = max(n - 1, 1)
  if method == 'exact':
    if n >= d:
      evals, evecs = jnp.linalg.eigh(x.T @ x)
      evals, evecs = evals[::-1][:dim], evecs[:, ::-1][:, :dim]
    else:
      evals, u = jnp.linalg.eigh(x @ x.T)
      evals, u = evals[::-1][:dim], u[:, ::-1][:, :dim]
      s = jnp.sqrt(jnp.clip(evals, 0.0))
      safe = jnp.where(s > 0, s, 1.0)
      evecs = jnp.where(s[None, :] > 0, (x.T @ u) / safe[None, :], 0.0)
  elif method == 'randomized':
    if key is None:
      raise ValueError("pca method 'randomized' needs a PRNG key.")
    width = int(min(dim + oversample, n, d))
    omega = jax.random.normal(key, (d, width), x.dtype)
    q, _ = jnp.linalg.qr(x @ omega)
    for _ in range(power_iters):
      z, _ = jnp.linalg.qr(x.T @ q)
      q, _ = jnp.linalg.qr(x @ z)
    _, s, vt = jnp.linalg.svd(q.T @ x, full_matrices=False)
    evals, evecs = s[:dim] ** 2, vt[:dim].T
  else:
    raise ValueError(
        f"unknown pca method {method!r}; valid: 'exact', 'randomized'.")
  return _fix_signs(evecs), jnp.clip(evals, 0.0) / denom


def pca(features: jnp.ndarray, dim: int, *, method: str = 'exact',
        key: jax.Array | None = None) -> jnp.ndarray:
  """Projects centred [n, d] features onto their top `dim` components.

  Returns:
    [n, min(dim, n, d)] scores (centred), columns in decreasing variance.
  """
  components, _ = pca_basis(features, dim, method=method, key=key)
  x = features - features.mean(0, keepdims=True)
  return x @ components
