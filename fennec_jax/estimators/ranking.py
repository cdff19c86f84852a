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
"""

import csv
import os
from collections.abc import Sequence
from typing import Any

from absl import logging
import numpy as np

from fennec_jax.estimators import registry


def load_feature_files(paths: Sequence[str], labels_key: str = 'labels'
                       ) -> tuple[dict[str, dict[str, np.ndarray]],
                                  np.ndarray]:
  """Reads models' features/source outputs and the labels from .npz files.

  Returns:
    ({'features' | 'source_probs' | 'source_labels': {model: array}}, labels)

  Raises:
    ValueError: missing file or labels, duplicate model names, disagreeing
      labels, or no model features.
  """
  inputs: dict[str, dict[str, np.ndarray]] = {
      'features': {}, 'source_probs': {}, 'source_labels': {}}
  labels = None
  for path in paths:
    if not os.path.exists(path):
      raise ValueError(f'feature file {path!r} does not exist.')
    with np.load(path, allow_pickle=False) as npz:
      for key in npz.files:
        kind, _, model = key.partition('/')
        if key == 'features':
          kind, model = 'features', os.path.splitext(os.path.basename(path))[0]
        if kind in inputs and model:
          if model in inputs[kind]:
            raise ValueError(f'{path}: model {model!r} appears twice under '
                             f'{kind}/.')
          inputs[kind][model] = npz[key]
      if labels_key in npz.files:
        these = npz[labels_key]
        if labels is not None and not np.array_equal(labels, these):
          raise ValueError(f'{path}: labels under {labels_key!r} disagree with '
                           'those of an earlier file.')
        labels = these
  if labels is None:
    raise ValueError(f'no file among {list(paths)} holds labels under key '
                     f'{labels_key!r}.')
  if not any(inputs.values()):
    raise ValueError(f'no features/<model> (or features) arrays in {paths}.')
  return inputs, labels


def rank(inputs: dict[str, dict[str, np.ndarray]], labels: np.ndarray,
         names: Sequence[str],
         options: dict[str, dict[str, Any]] | None = None
         ) -> list[dict[str, Any]]:
  """Scores every model with every estimator; rows sorted best first.

  Tied models share the best rank of their group ('min' ranking: 1, 2, 2,
  4). Scores tie when they are equal to the 8 significant digits `write_csv`
  writes, so equal scores in the CSV always carry equal ranks.

  Returns:
    list of {'estimator', 'rank' (1 = best), 'model', 'score'} rows.

  Raises:
    ValueError: an estimator whose inputs are missing from the files.
  """
  options = options or {}
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
    for position, i in enumerate(order):
      rows.append(dict(estimator=name, rank=position + 1, model=models[i],
                       score=float(scores[i])))
    _rank_ties_as_ties(rows[-len(order):])
    logging.info('%s: best model %s (%.6g)', name, models[order[0]],
                 scores[order[0]])
  return rows


def _rank_ties_as_ties(rows: Sequence[dict[str, Any]]) -> None:
  """Gives sorted rows whose CSV scores are equal the rank of the first."""
  for previous, row in zip(rows, rows[1:]):
    if _csv_score(row['score']) == _csv_score(previous['score']):
      row['rank'] = previous['rank']


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
