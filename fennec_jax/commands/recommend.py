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
are folded in on top). Logic:
`fennec_jax.recommender`.
"""

from absl import flags
from absl import logging

from fennec_jax import recommender
from fennec_jax.benchmarks import protocol
from fennec_jax.benchmarks.offline import demo as demo_lib
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
_TOP = flags.DEFINE_integer('top', 5, 'Models to list per task.')


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise ValueError(f'unexpected arguments {argv[1:]}; see --help.')
  fit_from = [s for s in (_BENCHMARK.value, _HISTORY.value, _CHECKPOINT.value)
             if s]
  if len(fit_from) != 1:
    raise ValueError('give exactly one of --benchmark, --history or '
                     '--checkpoint.')
  if _IMAGES.value and _TFDS.value:
    raise ValueError('give --images or --tfds, not both.')
  if _IMAGES.value or _TFDS.value:
    if _BENCHMARK.value != 'offline':
      raise ValueError('--images / --tfds need --benchmark=offline: only its '
                       'tasks have proxy embeddings to learn the image -> '
                       'task map.')
    if _IMAGES.value:
      images = sources.FolderSource(_IMAGES.value)
    else:
      images = sources.TfdsSource(_TFDS.value, split=_TFDS_SPLIT.value,
                                  data_dir=_TFDS_DATA_DIR.value)
    observed = {}
    if _SCORES.value:
      table = recommender.read_scores_csv(_SCORES.value)
      if len(table) != 1:
        raise ValueError(f'--images/--tfds describe one task; {_SCORES.value} '
                         f'has {len(table)}: {list(table)}.')
      observed = next(iter(table.values()))
    rec, fennec = demo_lib.recommend_offline(
        images, top=_TOP.value, observed=observed, labels=images.labels,
        data_dir=_DATA_DIR.value)
    if _SAVE.value:
      fennec.save(_SAVE.value)
      logging.info('saved the recommender to %s', _SAVE.value)
    print(recommender.format_recommendation(rec, ['images'],
                                            {'images': observed}))
    return
  if _CHECKPOINT.value:
    fennec = recommender.Fennec.load(_CHECKPOINT.value)
  else:
    history, _ = protocol.load_history(_BENCHMARK.value, _HISTORY.value)
    fennec = recommender.Fennec().fit(history)
  if _SAVE.value:
    fennec.save(_SAVE.value)
    logging.info('saved the recommender to %s', _SAVE.value)
  if _SCORES.value:
    observed = recommender.read_scores_csv(_SCORES.value)
  else:
    logging.info('no --scores or --images: ranking by the prior only.')
    observed = {'prior': {}}
  tasks = list(observed)
  rec = fennec.recommend(observed=[observed[t] for t in tasks],
                         top=_TOP.value)
  print(recommender.format_recommendation(rec, tasks, observed))
