"""`fennec recommend`: rank the repository's models for new tasks.

  fennec recommend --benchmark=transfergraph_image --scores=obs.csv --top=5
  fennec recommend --checkpoint=/abs/ckpt --scores=obs.csv
  fennec recommend --benchmark=offline --images=DIR [--scores=obs.csv]
  fennec recommend --benchmark=offline --tfds=NAME --tfds_data_dir=DIR

`--scores` is a CSV of observed scores of the new task(s): `model,score` (one
task) or `model,task,score` (several, ranked in one batch). Without observed
scores for a task, Fennec falls back to the prior (the population ranking).
The recommender is fit on `--benchmark`/`--history` (a few seconds), or read
from a `--checkpoint` written with `--save`. `--images` / `--tfds` (offline
benchmark only; images of any size, resized) embeds the task's images with
the benchmark's proxy and maps them to a task vector (the scores, if any,
are folded in on top). Fewer than 5 images, or images farther from the
history than any historical task is from the others (or more alike than
any historical task's), cannot be placed: the output then says so in a
WARNING line and ranks by the prior (`task_maps.TaskConfidence`). Logic:
`fennec_jax.recommender`.

Every flag is checked before anything is loaded or fit. The `--scores` are
checked against the history's own scores (`fennec_jax.history`,
`check_new_scores`; a `--checkpoint` keeps them): fractions
(0-1) given for a percent table, or the reverse, are refused (or converted
with `--convert_units`); a score outside [min - 3 MAD, max + 3 MAD] of the
history's scores is refused with its file and line (kept with
`--allow_outliers`). The output lists each task's observed models with their
observed score, apart from the ranking of the unobserved ones; a non-finite
prediction is an error, never a ranking.
"""

from absl import flags
from absl import logging
import numpy as np

from fennec_jax import history as history_lib
from fennec_jax import recommender
from fennec_jax.benchmarks import protocol
from fennec_jax.benchmarks.full import recommend as full_recommend
from fennec_jax.benchmarks.offline import demo as demo_lib
from fennec_jax.benchmarks.offline import loader as offline_loader
from fennec_jax.commands import checks
from fennec_jax.commands import ranking
from fennec_jax.data import sources

_BENCHMARK = flags.DEFINE_string('benchmark', None,
                                 'Bundled benchmark to fit on.')
_HISTORY = flags.DEFINE_string('history', None,
                               'Long-format CSV (model,task,score) to fit on.')
_CHECKPOINT = flags.DEFINE_string(
    'checkpoint', None, 'A Fennec checkpoint directory (instead of fitting).')
_SAVE = flags.DEFINE_string('save', None,
                            'Save the fitted recommender to this new dir.')
_IMAGES = flags.DEFINE_string(
    'images', None, 'Folder of the new task\'s images (sub-folders = classes);'
    ' needs --benchmark=offline (the proxy that embedded its tasks).')
_TFDS = flags.DEFINE_string(
    'tfds', None, 'A prepared tfds data set (array_record) holding the new '
    "task's images; needs --benchmark=offline.")
_TFDS_SPLIT = flags.DEFINE_string('tfds_split', 'train', 'Split of --tfds.')
_TFDS_DATA_DIR = flags.DEFINE_string('tfds_data_dir', None,
                                     'tfds data directory of --tfds.')
_DATA_DIR = flags.DEFINE_string(
    'data_dir', None, 'Offline benchmark artifacts (default: the committed '
    'fennec_jax/benchmarks/offline_data).')
_SCORES = flags.DEFINE_string(
    'scores', None, 'CSV of observed scores: model,score or model,task,score.')
_TOP = flags.DEFINE_integer(
    'top', 5, 'Unobserved models to rank per task (observed ones are listed '
    'apart, with their observed score).')
_DUPLICATES = flags.DEFINE_enum(
    'duplicates', 'error', list(history_lib.DUPLICATE_POLICIES),
    'With --history: how differing scores of one (model, task) pair are '
    'resolved.')
_CONVERT = flags.DEFINE_boolean(
    'convert_units', False, 'Convert --scores given as fractions (0-1) to a '
    'percent history, or the reverse, instead of refusing them.')
_OUTLIERS = flags.DEFINE_boolean(
    'allow_outliers', False, "Keep --scores outside the history's plausible "
    'range [min - 3 MAD, max + 3 MAD] instead of refusing them.')


def _check_flags() -> None:
  """Every flag that can be checked before loading or fitting anything."""
  fit_from = [s for s in (_BENCHMARK.value, _HISTORY.value, _CHECKPOINT.value)
              if s]
  if len(fit_from) != 1:
    raise ValueError('give exactly one of --benchmark, --history or '
                     '--checkpoint.')
  if _IMAGES.value and _TFDS.value:
    raise ValueError('give --images or --tfds, not both.')
  # A full-benchmark run's checkpoint records its proxy (helper fullbench).
  full = full_recommend.is_full_checkpoint(_CHECKPOINT.value)
  if (_IMAGES.value or _TFDS.value) and _BENCHMARK.value != 'offline' and (
      not full):
    raise ValueError('--images / --tfds need --benchmark=offline or a '
                     '--checkpoint saved by the full benchmark (its '
                     'recommender/<benchmark>/, which records its proxy): '
                     'only their tasks have proxy embeddings to learn the '
                     'image -> task map.')
  if flags.FLAGS['duplicates'].present and not _HISTORY.value:
    raise ValueError('--duplicates applies to --history only.')
  checks.at_least('--top', _TOP.value, 1)
  if _SAVE.value:
    checks.new_path('--save', _SAVE.value)


def _history() -> history_lib.History:
  """The history of --benchmark, --history or (with --images) the offline
  benchmark's."""
  if _IMAGES.value or _TFDS.value:
    return offline_loader.load(_DATA_DIR.value)
  if _HISTORY.value:
    return history_lib.History.read_csv(_HISTORY.value,
                                        duplicates=_DUPLICATES.value)
  history, _ = protocol.load_history(_BENCHMARK.value, None)
  return history


def _read_scores(reference: np.ndarray | None, model_ids: tuple[str, ...]
                 ) -> dict[str, dict[str, float]]:
  """--scores ({} without it), checked against the history's observed
  scores `reference` (a --checkpoint keeps them) and its `model_ids`."""
  if not _SCORES.value:
    return {}
  if reference is None:
    logging.warning('--checkpoint: the --scores cannot be checked against '
                    "the history's unit and range (this checkpoint was "
                    'saved before checkpoints kept the scores).')
  table = recommender.read_scores_csv(
      _SCORES.value, reference, convert_units=_CONVERT.value,
      allow_outliers=_OUTLIERS.value)
  _check_model_ids(table, model_ids)
  return table


def _check_model_ids(table: dict[str, dict[str, float]],
                     model_ids: tuple[str, ...]) -> None:
  """Raises ValueError naming --scores' models that the history lacks."""
  known = set(model_ids)
  for task, scores in table.items():
    unknown = [m for m in scores if m not in known]
    if unknown:
      raise ValueError(
          f'--scores={_SCORES.value}: task {task!r}: model(s) {unknown[:5]} '
          f'are not in the history ({len(known)} models; `fennec list '
          'models --benchmark=NAME` lists a benchmark\'s).')


def _save(fennec: recommender.Fennec) -> None:
  if _SAVE.value:
    fennec.save(_SAVE.value)
    logging.info('saved the recommender to %s', _SAVE.value)


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise ValueError(f'unexpected arguments {argv[1:]}; see --help.')
  _check_flags()
  if _CHECKPOINT.value:
    fennec = recommender.Fennec.load(_CHECKPOINT.value)
    table = _read_scores(fennec.reference_scores, fennec.model_ids)
  else:
    history = _history()
    table = _read_scores(history.scores[history.mask], history.model_ids)
  # Observed models are listed apart from the ranking: ask for enough
  # models that `--top` unobserved ones remain.
  extra = max([len(t) for t in table.values()] + [0])
  if _IMAGES.value or _TFDS.value:
    if len(table) > 1:
      raise ValueError(f'--images/--tfds describe one task; {_SCORES.value} '
                       f'has {len(table)}: {list(table)}.')
    observed = next(iter(table.values())) if table else {}
    if _IMAGES.value:
      images = sources.FolderSource(_IMAGES.value)
    else:
      images = sources.TfdsSource(_TFDS.value, split=_TFDS_SPLIT.value,
                                  data_dir=_TFDS_DATA_DIR.value)
    if full_recommend.is_full_checkpoint(_CHECKPOINT.value):  # fullbench.
      rec, fennec = full_recommend.recommend_images(
          _CHECKPOINT.value, images, top=_TOP.value + extra,
          observed=observed)
      _save(fennec)
      print(ranking.format_recommendation(
          rec, ['images'], {'images': observed}, top=_TOP.value))
      return
    rec, fennec = demo_lib.recommend_offline(
        images, top=_TOP.value + extra, observed=observed,
        labels=images.labels, data_dir=_DATA_DIR.value)
    _save(fennec)
    print(ranking.format_recommendation(
        rec, ['images'], {'images': observed}, top=_TOP.value))
    return
  if not _CHECKPOINT.value:
    fennec = recommender.Fennec().fit(history)
  _save(fennec)
  observed = table
  if not observed:
    logging.info('no --scores or --images: ranking by the prior only.')
    observed = {'prior': {}}
  tasks = list(observed)
  rec = fennec.recommend(observed=[observed[t] for t in tasks],
                         top=min(_TOP.value + extra, len(fennec.model_ids)))
  print(ranking.format_recommendation(rec, tasks, observed,
                                      top=_TOP.value))
