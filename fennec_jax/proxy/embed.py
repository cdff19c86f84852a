"""Task embeddings from proxy features, and the proxy's probe sampler.

Fennec represents a new task by the proxy's embeddings of a small probe (100
class-balanced images in the paper). `task_embedding` summarizes the features:

* `mean`: the mean of the L2-normalized features (the task vector written by
  `fennec features`; CLIP-style embeddings are compared by direction).
* `prototypes` / `classes`: per-class means when labels are known.
* `cov_diag` and `cov_spectrum`: a second-moment summary — the per-dimension
  variance around the mean and the leading eigenvalues of the covariance
  (normalized to sum to 1 over all eigenvalues), i.e. how spread out and how
  low-dimensional the task is in feature space.

Everything here is host-side NumPy on small arrays (`[100, d]`).
"""

import dataclasses

from absl import logging
import numpy as np

from fennec_jax.data import probe


@dataclasses.dataclass(frozen=True)
class TaskEmbedding:
  """Summary of one task's proxy features (see module docstring)."""
  mean: np.ndarray
  cov_diag: np.ndarray
  cov_spectrum: np.ndarray
  count: int
  prototypes: np.ndarray | None = None
  classes: np.ndarray | None = None

  def as_dict(self, prefix: str = '') -> dict[str, np.ndarray]:
    """Arrays for `np.savez` (absent fields omitted)."""
    out = {f'{prefix}task_embedding': self.mean,
           f'{prefix}cov_diag': self.cov_diag,
           f'{prefix}cov_spectrum': self.cov_spectrum}
    if self.prototypes is not None:
      out[f'{prefix}prototypes'] = self.prototypes
      out[f'{prefix}classes'] = self.classes
    return out


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
  """Rows scaled to unit L2 norm (zero rows stay zero)."""
  x = np.asarray(x, np.float64)
  return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), eps)


def task_embedding(features: np.ndarray, labels: np.ndarray | None = None, *,
                   normalize: bool = True,
                   spectrum_size: int = 16) -> TaskEmbedding:
  """Summarizes the features of a task's images.

  Args:
    features: `[n, d]` proxy features.
    labels: optional `[n]` integer labels (enables per-class prototypes).
    normalize: L2-normalize each feature first (default, as CLIP features).
    spectrum_size: number of leading covariance eigenvalues kept.

  Returns:
    The `TaskEmbedding` (float32 arrays).

  Raises:
    ValueError: empty or non-finite features, or labels of the wrong length.
  """
  f = np.asarray(features, np.float64)
  if f.ndim != 2 or f.shape[0] == 0:
    raise ValueError(f'features must be a non-empty [n, d] array, got shape '
                     f'{f.shape}.')
  if not np.all(np.isfinite(f)):
    bad = np.flatnonzero(~np.all(np.isfinite(f), axis=1))
    raise ValueError(f'features has non-finite values in rows {bad[:10]}.')
  if normalize:
    f = l2_normalize(f)
  n, d = f.shape
  mean = f.mean(0)
  centered = f - mean
  cov_diag = (centered ** 2).mean(0)
  # Eigenvalues of the d x d covariance from the (smaller) Gram matrix.
  gram = centered @ centered.T / n if n < d else centered.T @ centered / n
  eig = np.clip(np.linalg.eigvalsh(gram)[::-1], 0, None)
  total = eig.sum()
  spectrum = np.zeros(spectrum_size)
  k = min(spectrum_size, eig.size)
  if total > 0:
    spectrum[:k] = eig[:k] / total
  protos = classes = None
  if labels is not None:
    labels = np.asarray(labels)
    if labels.shape != (n,):
      raise ValueError(f'labels has shape {labels.shape}, expected ({n},).')
    classes = np.unique(labels)
    protos = np.stack([f[labels == c].mean(0) for c in classes])
  f32 = lambda a: None if a is None else np.asarray(a, np.float32)
  return TaskEmbedding(f32(mean), f32(cov_diag), f32(spectrum), n, f32(protos),
                       classes)


def probe_indices(num_images: int, labels: np.ndarray | None = None, *,
                  budget: int = 100, seed: int = 0) -> np.ndarray:
  """The proxy probe: `budget` class-balanced image indices, seeded.

  With labels, classes share the budget evenly
  (`data.probe.class_balanced_indices`, at least one image each); when there
  are more classes than the budget, `budget` classes are drawn (seeded) and
  give one image each. Without labels, a seeded uniform sample. The result is
  a deterministic function of (labels, budget, seed).

  Args:
    num_images: size of the data set.
    labels: optional `[num_images]` labels.
    budget: probe size (100 in the paper).
    seed: random seed.

  Returns:
    Sorted int64 indices (all of them when `num_images <= budget`).

  Raises:
    ValueError: a non-positive budget or labels of the wrong length.
  """
  if budget <= 0:
    raise ValueError(f'budget must be positive, got {budget}.')
  if num_images <= budget:
    return np.arange(num_images, dtype=np.int64)
  rng = np.random.default_rng(seed)
  if labels is None:
    return np.sort(rng.choice(num_images, budget, replace=False)).astype(
        np.int64)
  labels = np.asarray(labels)
  if labels.shape != (num_images,):
    raise ValueError(f'labels has shape {labels.shape}, expected '
                     f'({num_images},).')
  classes = np.unique(labels)
  if classes.size > budget:
    logging.info('probe: %d classes > budget %d; one image from each of %d '
                 'random classes.', classes.size, budget, budget)
    keep = rng.choice(classes, budget, replace=False)
    picked = [rng.choice(np.flatnonzero(labels == c)) for c in np.sort(keep)]
    return np.sort(np.asarray(picked, np.int64))
  return probe.class_balanced_indices(labels, budget, min_per_class=1,
                                      seed=seed)
