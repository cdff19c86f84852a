"""Features of several models in, a ranking table out (`fennec score`).

File layout (`.npz`, several files allowed):
  * `features/<model>`: [n, d_model] penultimate features of one model (any
    number of models per file, widths may differ);
  * or a single `features` array [n, d] (what `fennec features` writes): the
    model is named after the file stem;
  * `source_probs/<model>` [n, c_src] and/or `source_labels/<model>` [n]
    (optional; needed by 'leep' and 'nce');
  * the labels under the key given by `labels_key` ([n] ints 0..C-1) in at
    least one file; every file that has them must agree.

Degenerate input gets a warning that names what is wrong (`rank`): classes
with fewer than `MIN_PER_CLASS` samples (no within-class spread to estimate,
so class-conditional estimators such as fda, sfda and hscore rank noise), and
models whose scores differ by less than `NEAR_EQUAL` of their magnitude (the
estimators' float32 round-off: with one sample per class, hscore's exact
score is the same for every model, yet it prints 8.00001 / 8 / 7.99989).
Such near-equal scores share a rank.
"""

import csv
import os
from collections.abc import Sequence
from typing import Any
import zipfile
import zlib

from absl import logging
import numpy as np

from fennec_jax.estimators import registry


MIN_PER_CLASS = 2
NEAR_EQUAL = 1e-4


# Dimensions of each kind of array (a model's rows are its samples).
_NDIM = {'features': 2, 'source_probs': 2, 'source_labels': 1}


def _read_npz(path: str) -> dict[str, np.ndarray]:
  """Every array of an .npz archive, read now.

  Raises:
    ValueError: naming `path`, for a missing file or one that is not a
      readable .npz archive (text, a truncated or damaged archive, a bare
      .npy array, object arrays).
  """
  if not os.path.isfile(path):
    raise ValueError(f'feature file {path!r} does not exist'
                     + (' (it is a directory).' if os.path.isdir(path)
                        else '.'))
  # The file is opened here so that it is closed whatever np.load raises.
  with open(path, 'rb') as f:
    head = f.read(6)
    if not head.startswith((b'PK', b'\x93NUMPY')):
      raise ValueError(f'{path}: not an .npz archive (a zip file); it starts '
                       f'with {head!r}.')
    f.seek(0)
    try:
      loaded = np.load(f, allow_pickle=False)
      if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise ValueError(f'{path}: a single .npy array, not an .npz archive; '
                         'save with np.savez(path, features=..., labels=...).')
      with loaded as npz:
        arrays = {key: npz[key] for key in npz.files}
    except ValueError as e:
      if str(e).startswith(f'{path}: '):
        raise
      raise ValueError(f'{path}: not a readable .npz archive ({e})') from None
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error, KeyError,
            NotImplementedError) as e:
      raise ValueError(f'{path}: not a readable .npz archive '
                       f'({type(e).__name__}: {e})') from None
  return arrays


def _check_real(path: str, key: str, array: np.ndarray) -> None:
  """Raises ValueError naming the file and key of a non-numeric array."""
  if not (np.issubdtype(array.dtype, np.number)
          or array.dtype == np.bool_) or np.iscomplexobj(array):
    raise ValueError(f'{path}: array {key!r} has dtype {array.dtype}; '
                     'expected real numbers.')


def load_feature_files(paths: Sequence[str], labels_key: str = 'labels'
                       ) -> tuple[dict[str, dict[str, np.ndarray]],
                                  np.ndarray]:
  """Reads models' features/source outputs and the labels from .npz files.

  Returns:
    ({'features' | 'source_probs' | 'source_labels': {model: array}}, labels)

  Raises:
    ValueError: naming the file (and key): a missing or unreadable file,
      non-numeric arrays, arrays of the wrong rank or number of samples,
      missing labels, duplicate model names, disagreeing labels, or no
      model features.
  """
  inputs: dict[str, dict[str, np.ndarray]] = {
      'features': {}, 'source_probs': {}, 'source_labels': {}}
  origin: dict[tuple[str, str], str] = {}
  labels = None
  for path in paths:
    arrays = _read_npz(path)
    for key, array in arrays.items():
      kind, _, model = key.partition('/')
      if key == 'features':
        kind, model = 'features', os.path.splitext(os.path.basename(path))[0]
      if kind in inputs and model:
        if model in inputs[kind]:
          raise ValueError(f'{path}: model {model!r} appears twice under '
                           f'{kind}/.')
        _check_real(path, key, array)
        if array.ndim != _NDIM[kind]:
          raise ValueError(f'{path}: {key!r} has shape {array.shape}; '
                           f'{kind} must have {_NDIM[kind]} dimension(s) '
                           '(samples first).')
        inputs[kind][model] = array
        origin[(kind, model)] = f'{path}: {key!r}'
    if labels_key in arrays:
      these = arrays[labels_key]
      _check_real(path, labels_key, these)
      if these.ndim != 1:
        raise ValueError(f'{path}: labels {labels_key!r} have shape '
                         f'{these.shape}; expected [n].')
      if labels is not None and not np.array_equal(labels, these):
        raise ValueError(f'{path}: labels under {labels_key!r} disagree with '
                         'those of an earlier file.')
      labels = these
  if labels is None:
    raise ValueError(f'no file among {list(paths)} holds labels under key '
                     f'{labels_key!r}.')
  if not any(inputs.values()):
    raise ValueError(f'no features/<model> (or features) arrays in {paths}.')
  for (kind, model), where in origin.items():
    if inputs[kind][model].shape[0] != labels.shape[0]:
      raise ValueError(f'{where} has {inputs[kind][model].shape[0]} samples '
                       f'but there are {labels.shape[0]} labels.')
  return inputs, labels


def rank(inputs: dict[str, dict[str, np.ndarray]], labels: np.ndarray,
         names: Sequence[str],
         options: dict[str, dict[str, Any]] | None = None
         ) -> list[dict[str, Any]]:
  """Scores every model with every estimator; rows sorted best first.

  Tied models share the best rank of their group ('min' ranking: 1, 2, 2,
  4). Scores tie when they are within `NEAR_EQUAL` of the group's best
  (`near_equal_groups`: the estimators' round-off), which includes every
  pair equal to the 8 significant digits `write_csv` writes, so equal
  scores in the CSV always carry equal ranks. A tie of several models is
  also a logged warning naming them.

  Returns:
    list of {'estimator', 'rank' (1 = best), 'model', 'score'} rows.

  Raises:
    ValueError: an estimator whose inputs are missing from the files.
  """
  options = options or {}
  warn_small_classes(labels)
  rows = []
  for name in names:
    kind = registry.get_spec(name).kind
    per_model = inputs.get(kind, {})
    if not per_model:
      raise ValueError(f"estimator {name!r} needs '{kind}/<model>' arrays; the "
                       'files hold none.')
    models = sorted(per_model)
    scores = registry.score_models(name, [per_model[m] for m in models],
                                   labels, model_ids=models,
                                   **options.get(name, {}))
    order = np.argsort(-scores, kind='stable')
    groups = near_equal_groups(scores[order])
    for group in groups:
      for position in group:  # A tie takes the best rank of its group.
        i = order[position]
        rows.append(dict(estimator=name, rank=group[0] + 1, model=models[i],
                         score=float(scores[i])))
    for group in [g for g in groups if len(g) > 1]:
      logging.warning(
          '%s: models %s score within %.0e of each other (%.8g to %.8g): '
          'their order is not meaningful.', name,
          [models[order[i]] for i in group], NEAR_EQUAL,
          scores[order[group[-1]]], scores[order[group[0]]])
    logging.info('%s: best model %s (%.6g)', name, models[order[0]],
                 scores[order[0]])
  return rows


def warn_small_classes(labels: np.ndarray) -> list[int]:
  """Warns naming the classes with fewer than `MIN_PER_CLASS` samples.

  Returns:
    Those class ids (none for labels that are not class ids, e.g. LogME
    regression targets).
  """
  labels = np.asarray(labels)
  if (labels.ndim != 1 or not labels.size
      or not np.issubdtype(labels.dtype, np.number)
      or not np.all(np.isfinite(labels)) or np.any(labels < 0)
      or np.any(labels != np.round(labels))):
    return []
  counts = np.bincount(labels.astype(np.int64))
  small = [int(c) for c in np.flatnonzero((counts > 0)
                                          & (counts < MIN_PER_CLASS))]
  if small:
    logging.warning(
        'labels: %d of %d classes have fewer than %d samples (class ids %s): '
        'class-conditional estimators (fda, sfda, hscore, lda, gbc, ...) '
        'have no within-class spread there and their ranking is noise; give '
        'at least %d samples per class.', len(small),
        int(np.count_nonzero(counts)), MIN_PER_CLASS, small[:20],
        MIN_PER_CLASS)
  return small


def near_equal_groups(sorted_scores: np.ndarray) -> list[list[int]]:
  """Groups of positions in best-first scores within `NEAR_EQUAL` of their
  group's first (best) score, relative to the magnitude (at least 1).

  Every position is in one group (most of size 1); a group's scores differ
  by no more than the estimators' round-off, so they are ties.
  """
  scores = np.asarray(sorted_scores, np.float64)
  groups: list[list[int]] = []
  for i, score in enumerate(scores):
    if groups:
      first = scores[groups[-1][0]]
      if first - score <= NEAR_EQUAL * max(1.0, abs(first), abs(score)):
        groups[-1].append(i)
        continue
    groups.append([i])
  return groups


def _csv_score(score: float) -> str:
  """The score as `write_csv` writes it."""
  return f'{score:.8g}'


def write_csv(rows: Sequence[dict[str, Any]], path: str) -> None:
  """Writes ranking rows as CSV (estimator,rank,model,score)."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, 'w', newline='') as f:
    writer = csv.DictWriter(f, ['estimator', 'rank', 'model', 'score'])
    writer.writeheader()
    for row in rows:
      writer.writerow({**row, 'score': _csv_score(row['score'])})


def format_table(rows: Sequence[dict[str, Any]]) -> str:
  """A plain-text ranking table, one block per estimator."""
  lines = []
  width = max([len(r['model']) for r in rows] + [5])
  for name in dict.fromkeys(r['estimator'] for r in rows):
    lines.append(f'== {name}')
    for r in rows:
      if r['estimator'] == name:
        lines.append(f"{r['rank']:>4}  {r['model']:<{width}}  "
                     f"{r['score']:.6g}")
  return '\n'.join(lines)
