"""Numeric features of the models' metadata (family, source data, size, ...).

Cold start places an unseen model from them (`benchmarks.models_out`), and
the K-shot fold-in's conditional Gaussian lets models that share metadata
co-vary (`space.kshot_gp`).
"""

from collections.abc import Mapping
from typing import Any

from absl import logging
import numpy as np


def model_features(metadata: Mapping[str, Any], name: str = '',
                   max_categories: int = 50, required: bool = True
                   ) -> tuple[np.ndarray, list[str]]:
  """Numeric features of the models from their metadata columns.

  Numeric columns enter as is (`num_params`: log10), with missing values set
  to the column mean plus a missing-indicator column; text columns are one-hot
  (columns with one value or more than `max_categories` are left out, as is
  any column unique per model; each drop is logged).

  Args:
    metadata: {column: [M] values} (`History.model_metadata`).
    name: the history's name, for the error message.
    max_categories: most categories of a one-hot column.
    required: raise if no column is usable (else return E = 0).

  Returns:
    (`[M, E]` features, their names).

  Raises:
    ValueError: if `required` and no metadata column is usable.
  """
  cols, names = [], []
  for key in sorted(metadata):
    v = np.asarray(metadata[key])
    if v.dtype.kind == 'f':
      x = np.log10(np.maximum(v, 1.0)) if key == 'num_params' else v
      miss = np.isnan(x)
      if miss.all() or np.nanstd(x) == 0:
        logging.info('model_features: %s is constant/empty; left out.',
                     key)
        continue
      cols.append(np.where(miss, np.nanmean(x), x))
      names.append(key)
      if miss.any():
        cols.append(miss.astype(np.float64))
        names.append(f'{key}:missing')
      continue
    cats = sorted({str(c) for c in v if c is not None})
    if not 1 < len(cats) <= min(max_categories, len(v) - 1):
      logging.info('model_features: %s has %d categories; left out.',
                   key, len(cats))
      continue
    for c in cats:
      cols.append(np.array([str(x) == c for x in v], np.float64))
      names.append(f'{key}={c}')
  if not cols and not required:
    size = len(next(iter(metadata.values()))) if metadata else 0
    return np.zeros((size, 0)), []
  if not cols:
    raise ValueError(f'no usable model metadata in {name!r} '
                     f'(columns: {sorted(metadata)}).')
  return np.stack(cols, 1), names
