"""Class-balanced, seeded probe sampling with a fixed budget.

PARC and Fennec score a model on a small probe set (500 images, at least two per
class) instead of the whole target data set. The probe must be class balanced
(so a frequent class does not dominate the score), reproducible from a seed (so
five "runs" of the protocol are five seeds), and must fail loudly when the data
cannot satisfy the budget (a class with a single image cannot give an LDA
covariance). Everything here is host-side NumPy: it picks indices, it does not
touch the device.
"""

from collections.abc import Sequence

from absl import logging
import numpy as np


def _check_labels(labels: np.ndarray) -> np.ndarray:
  """Returns `labels` as a 1-D int64 array or raises a ValueError."""
  labels = np.asarray(labels)
  if labels.ndim != 1:
    raise ValueError(
        f'labels must be a 1-D array of class ids, got shape {labels.shape}.')
  if labels.size == 0:
    raise ValueError('labels is empty: cannot sample a probe set.')
  if not np.issubdtype(labels.dtype, np.integer):
    if np.issubdtype(labels.dtype, np.floating) and np.all(
        np.isfinite(labels)) and np.all(labels == np.round(labels)):
      labels = labels.astype(np.int64)
    else:
      raise ValueError(
          f'labels must hold integer class ids, got dtype {labels.dtype}.')
  return labels.astype(np.int64)


def class_quotas(counts: Sequence[int], budget: int, *,
                 min_per_class: int = 2,
                 rng: np.random.Generator | None = None) -> np.ndarray:
  """Splits `budget` over classes as evenly as their sizes allow.

  Water-filling: every class gets `budget // C`; a class smaller than that gives
  all it has and its unused share goes to the classes that still have images.
  Leftover single slots (when the budget does not divide evenly) go to randomly
  chosen classes, so no class id is favoured.

  Args:
    counts: number of available samples per class (all >= min_per_class).
    budget: total number of samples wanted.
    min_per_class: smallest number of samples any class may contribute.
    rng: source of randomness for the leftover slots (seeded by the caller).

  Returns:
    int64 array of per-class quotas; sums to min(budget, sum(counts)).

  Raises:
    ValueError: if a class has fewer than `min_per_class` samples or the budget
      cannot give every class `min_per_class` samples.
  """
  counts = np.asarray(counts, dtype=np.int64)
  num_classes = counts.size
  rng = np.random.default_rng(0) if rng is None else rng
  small = np.flatnonzero(counts < min_per_class)
  if small.size:
    raise ValueError(
        f'class(es) {small.tolist()[:10]} have fewer than min_per_class='
        f'{min_per_class} samples (counts {counts[small].tolist()[:10]}); drop '
        'them or lower min_per_class.')
  if budget < min_per_class * num_classes:
    raise ValueError(
        f'budget={budget} is smaller than min_per_class * num_classes = '
        f'{min_per_class} * {num_classes} = {min_per_class * num_classes}.')
  total = int(min(budget, counts.sum()))
  quotas = np.zeros(num_classes, dtype=np.int64)
  remaining = total
  while remaining > 0:
    open_classes = np.flatnonzero(quotas < counts)
    share = remaining // open_classes.size
    if share == 0:
      # Fewer slots than open classes: hand them out at random.
      chosen = rng.choice(open_classes, size=remaining, replace=False)
      quotas[chosen] += 1
      break
    add = np.minimum(share, counts[open_classes] - quotas[open_classes])
    quotas[open_classes] += add
    remaining -= int(add.sum())
  return quotas


def class_balanced_indices(labels: np.ndarray, budget: int = 500, *,
                           min_per_class: int = 2, seed: int = 0) -> np.ndarray:
  """Picks a class-balanced probe set of at most `budget` samples.

  Args:
    labels: [n] integer class ids (any values; they need not be 0..C-1).
    budget: number of samples wanted. When the data set is smaller, every
      sample is returned (and this is logged).
    min_per_class: every class present in `labels` must contribute at least
      this many samples (2 by default: LDA and per-class covariances need two).
    seed: the sample is a deterministic function of (labels, budget, seed).

  Returns:
    Sorted int64 indices into `labels`, of length min(budget, n).

  Raises:
    ValueError: on non-integer or non-1-D labels, a class with fewer than
      `min_per_class` samples, or `budget < min_per_class * num_classes`.
  """
  labels = _check_labels(labels)
  if budget <= 0:
    raise ValueError(f'budget must be positive, got {budget}.')
  if min_per_class < 1:
    raise ValueError(f'min_per_class must be >= 1, got {min_per_class}.')
  classes, inverse, counts = np.unique(
      labels, return_inverse=True, return_counts=True)
  rng = np.random.default_rng(seed)
  quotas = class_quotas(counts, budget, min_per_class=min_per_class, rng=rng)
  if quotas.sum() < budget:
    logging.info('probe budget %d exceeds the %d samples available; using all.',
                 budget, labels.size)
  chosen = []
  for c in range(classes.size):
    members = np.flatnonzero(inverse == c)
    chosen.append(rng.choice(members, size=int(quotas[c]), replace=False))
  return np.sort(np.concatenate(chosen)).astype(np.int64)


def balanced_split(labels: np.ndarray, holdout_fraction: float = 0.2, *,
                   seed: int = 0) -> np.ndarray:
  """Returns a boolean train mask that holds out a fraction of every class.

  Each class with at least two samples keeps at least one sample on each side;
  a class with a single sample stays in the training side (and that is logged),
  so held-out accuracy is never computed on a class the model never saw.

  Args:
    labels: [n] integer class ids.
    holdout_fraction: fraction of each class to hold out, in (0, 1).
    seed: seed of the split.

  Returns:
    [n] bool array, True for training samples.

  Raises:
    ValueError: on bad labels or a fraction outside (0, 1).
  """
  labels = _check_labels(labels)
  if not 0.0 < holdout_fraction < 1.0:
    raise ValueError(
        f'holdout_fraction must be in (0, 1), got {holdout_fraction}.')
  rng = np.random.default_rng(seed)
  train = np.ones(labels.size, dtype=bool)
  singletons = 0
  for c in np.unique(labels):
    members = np.flatnonzero(labels == c)
    if members.size < 2:
      singletons += 1
      continue
    num_out = int(np.clip(np.round(holdout_fraction * members.size), 1,
                          members.size - 1))
    train[rng.choice(members, size=num_out, replace=False)] = False
  if singletons:
    logging.warning('balanced_split: %d class(es) have a single sample; kept '
                    'them on the training side only.', singletons)
  return train
