r"""`fennec score`: rank models by transferability estimators.

  fennec score --features=models.npz --labels=labels \
      --estimators=logme,sfda,fda --out=runs/score/ranking.csv
  fennec score --features=a.npz,b.npz --estimators=hscore   # `fennec features`

See `fennec_jax.estimators.ranking` for the .npz layout. Prints one ranking
block per estimator and writes `estimator,rank,model,score` rows as CSV; tied
scores (within 1e-4 of their magnitude: the estimators' round-off) share a
rank, and warnings name models by their names in the files: a tie of
several models, and classes with fewer than 2 samples (where class-
conditional estimators rank noise).
"""

import json

from absl import flags
from absl import logging

from fennec_jax import files
from fennec_jax.commands import checks
from fennec_jax.estimators import ranking
from fennec_jax.estimators import registry

_FEATURES = flags.DEFINE_list(
    'features', None, '.npz file(s) with features/<model> arrays (or one '
    '`features` array per file) and the labels.')
_LABELS = flags.DEFINE_string('labels', 'labels', 'Key of the labels array.')
_ESTIMATORS = flags.DEFINE_list(
    'estimators', ['logme', 'fda', 'sfda', 'hscore'], 'Estimators to run.')
_OPTIONS = flags.DEFINE_string(
    'options', None, 'JSON {estimator: {option: value}}, e.g. '
    '\'{"knn": {"k": 10}, "fda": {"dim": 64}}\'.')
_OUT = flags.DEFINE_string('out', 'runs/score/ranking.csv', 'Output CSV.')


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise ValueError(f'unexpected arguments {argv[1:]}; see --help.')
  if not _FEATURES.value:
    raise ValueError('--features is required (one or more .npz files).')
  checks.output_file('--out', _OUT.value)
  checks.names('--estimators', _ESTIMATORS.value, registry.list_estimators())
  try:
    options = json.loads(_OPTIONS.value) if _OPTIONS.value else {}
  except json.JSONDecodeError as e:
    raise ValueError(f'--options is not valid JSON ({e}): {_OPTIONS.value}'
                     ) from None
  if not isinstance(options, dict):
    raise ValueError(f'--options must be a JSON object, got {_OPTIONS.value}.')
  if options:
    checks.names('--options', options, _ESTIMATORS.value)
  inputs, labels = ranking.load_feature_files(_FEATURES.value, _LABELS.value)
  rows = ranking.rank(inputs, labels, _ESTIMATORS.value, options)
  files.write_atomically(_OUT.value,
                          lambda path: ranking.write_csv(rows, path))
  logging.info('wrote %s', _OUT.value)
  print(ranking.format_table(rows))  # The command's user-facing output.
