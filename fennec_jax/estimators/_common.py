"""Shared host-side validation and jnp helpers for the estimators.

Validation runs on the host in NumPy, before anything is traced, so a bad input
gets a `ValueError` that names what is wrong (a NaN row, a label outside
0..C-1) instead of a silent NaN score. The jnp helpers are pure and shape-static
so every estimator core can be vmapped over models.

Class counts are data, not shapes: labels are checked against C classes, and
per-class arrays are sized by a static bound K >= C (`class_bound`: the next
power of two, or the caller's `max_classes`), with classes C..K-1 empty and
masked out of every score. Targets with different C share one compilation.
"""

from absl import logging
import jax.numpy as jnp
import numpy as np


def class_bound(num_classes: int, max_classes: int | None = None) -> int:
  """The static size K of the class axis: `max_classes`, or the next power of
  two >= num_classes (few distinct sizes, so few compilations).

  Raises:
    ValueError: max_classes < 2 or below num_classes.
  """
  if max_classes is None:
    return max(2, 1 << (int(num_classes) - 1).bit_length())
  max_classes = int(max_classes)
  if max_classes < 2 or num_classes > max_classes:
    raise ValueError(
        f'max_classes={max_classes} must be >= 2 and >= the number of '
        f'classes ({num_classes}).')
  return max_classes


def check_labels(labels, n: int | None = None,
                 num_classes: int | None = None,
                 name: str = 'labels', max_classes: int | None = None
                 ) -> tuple[np.ndarray, int, int]:
  """Validates integer class labels; returns their class count and bound.

  Args:
    labels: [n] integer class ids in 0..C-1.
    n: expected length (the number of feature rows), if known.
    num_classes: C; inferred as max(labels) + 1 when None.
    name: how the array is called in error messages.
    max_classes: the static class-axis size K (see `class_bound`); None
      picks the next power of two >= C.

  Returns:
    (labels as int32 NumPy array, num_classes C, class bound K >= C).

  Raises:
    ValueError: wrong shape or dtype, a label outside 0..C-1 or >= max_classes,
      a class with no sample, or fewer than two classes.
  """
  labels = np.asarray(labels)
  if labels.ndim != 1:
    raise ValueError(f'{name} must be 1-D, got shape {labels.shape}.')
  if n is not None and labels.shape[0] != n:
    raise ValueError(
        f'{name} has {labels.shape[0]} entries but features have {n} rows.')
  if labels.size == 0:
    raise ValueError(f'{name} is empty.')
  if not np.issubdtype(labels.dtype, np.integer):
    if (np.issubdtype(labels.dtype, np.floating) and
        np.all(np.isfinite(labels)) and np.all(labels == np.round(labels))):
      labels = labels.astype(np.int64)
    else:
      raise ValueError(
          f'{name} must hold integer class ids 0..C-1, got dtype '
          f'{labels.dtype}.')
  lo, hi = int(labels.min()), int(labels.max())
  if max_classes is not None and hi >= int(max_classes):
    raise ValueError(
        f'{name} holds class id {hi} >= max_classes={int(max_classes)}: '
        f'the class bound must exceed every label (use max_classes >= '
        f'{hi + 1}).')
  if num_classes is None:
    num_classes = hi + 1
  num_classes = int(num_classes)
  if lo < 0 or hi >= num_classes:
    bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
    raise ValueError(
        f'{name} must lie in 0..{num_classes - 1}; row {int(bad[0])} holds '
        f'{int(labels[bad[0]])} ({bad.size} bad rows). Map arbitrary ids with '
        'np.unique(labels, return_inverse=True).')
  counts = np.bincount(labels, minlength=num_classes)
  if num_classes < 2 or np.count_nonzero(counts) < 2:
    raise ValueError(
        f'{name} holds a single class: a transferability score needs at '
        'least two classes.')
  empty = np.flatnonzero(counts == 0)
  if empty.size:
    raise ValueError(
        f'class id(s) {empty.tolist()[:10]} have no sample in {name} '
        f'(num_classes={num_classes}); relabel to 0..C-1 with '
        'np.unique(labels, return_inverse=True).')
  return (labels.astype(np.int32), num_classes,
          class_bound(num_classes, max_classes))


def class_arrays(labels, n: int, num_classes: int | None = None,
                 max_classes: int | None = None
                 ) -> tuple[int, dict[str, np.ndarray]]:
  """`check_labels`, packaged for a Spec's prepare.

  Returns:
    (class bound K, {'labels': int32 [n], 'num_classes': int32 scalar C}):
    the bound is a static option, C is data (see `class_mask`).
  """
  labels, num_classes, bound = check_labels(labels, n, num_classes,
                                            max_classes=max_classes)
  return bound, dict(labels=labels, num_classes=np.int32(num_classes))


def class_mask(num_classes: jnp.ndarray, bound: int,
               dtype=jnp.float32) -> jnp.ndarray:
  """[K] 1 for the classes 0..C-1 that exist, 0 for the padding."""
  return (jnp.arange(bound) < num_classes).astype(dtype)


def check_features(features, name: str = 'features') -> np.ndarray:
  """Validates a [n, d] (or stacked [m, n, d]) finite float feature array.

  Raises:
    ValueError: wrong rank, empty, or a NaN/inf entry (the first bad row is
      named).
  """
  features = np.asarray(features)
  if features.ndim not in (2, 3):
    raise ValueError(
        f'{name} must be [n, d] (or [m, n, d] for several models), got shape '
        f'{features.shape}.')
  if features.size == 0:
    raise ValueError(f'{name} is empty (shape {features.shape}).')
  if not np.issubdtype(features.dtype, np.floating):
    features = features.astype(np.float32)
  finite = np.isfinite(features)
  if not finite.all():
    bad_rows = np.flatnonzero(~finite.reshape(-1, features.shape[-1]).all(-1))
    raise ValueError(
        f'{name} holds NaN or inf values in {bad_rows.size} row(s); first bad '
        f'(flattened) row: {int(bad_rows[0])}. Fix the feature extractor or '
        'drop those samples.')
  return features


def warn_if_all_equal(name: str, scores: np.ndarray) -> None:
  """Logs a warning when every model gets the same score (no ranking)."""
  scores = np.asarray(scores)
  if scores.size > 1:
    spread = float(np.max(scores) - np.min(scores))
    if spread <= 1e-6 * max(1.0, float(np.max(np.abs(scores)))):
      logging.warning(
          '%s gives every one of the %d models the same score %.6g: the '
          'ranking is uninformative (degenerate features, or samples << '
          'dims without shrinkage/PCA).', name, scores.size, scores[0])


def one_hot(labels: jnp.ndarray, num_classes: int,
            dtype=jnp.float32) -> jnp.ndarray:
  return (labels[:, None] == jnp.arange(num_classes)[None, :]).astype(dtype)


def class_means(x: jnp.ndarray, onehot: jnp.ndarray) -> jnp.ndarray:
  """[K, d] per-class means; 0 for the empty padding classes."""
  counts = onehot.sum(0)
  return (onehot.T @ x) / jnp.where(counts > 0, counts, 1.0)[:, None]


def _pinv_eigh(a: jnp.ndarray, rcond: float | None
               ) -> tuple[jnp.ndarray, jnp.ndarray]:
  """(eigenvectors, inverted eigenvalues, 0 below rcond * the largest)."""
  evals, evecs = jnp.linalg.eigh(a)
  if rcond is None:
    rcond = a.shape[0] * jnp.finfo(a.dtype).eps
  cutoff = rcond * jnp.max(jnp.abs(evals))
  inv = jnp.where(evals > cutoff, 1.0 / jnp.where(evals > cutoff, evals, 1.0),
                  0.0)
  return evecs, inv


def pinv_sym(a: jnp.ndarray, rcond: float | None = None) -> jnp.ndarray:
  """Pseudo-inverse of a symmetric PSD matrix via eigh (cheaper than SVD)."""
  evecs, inv = _pinv_eigh(a, rcond)
  return (evecs * inv[None, :]) @ evecs.T


def pinv_quadratic_forms(a: jnp.ndarray, vecs: jnp.ndarray,
                         rcond: float | None = None) -> jnp.ndarray:
  """[k] values v_i' a^+ v_i for a symmetric PSD a and rows v_i of vecs.

  Uses a = V diag(l) V' and sum_j (v'V)_j^2 / l_j: never forms the d x d
  pseudo-inverse (saves a d^3 product per model).
  """
  evecs, inv = _pinv_eigh(a, rcond)
  proj = vecs @ evecs
  return jnp.sum(proj * proj * inv[None, :], 1)


def float_dtype(x) -> jnp.dtype:
  """The float dtype computations use: the input's if floating, else f32."""
  dtype = jnp.asarray(x).dtype
  return dtype if jnp.issubdtype(dtype, jnp.floating) else jnp.float32
