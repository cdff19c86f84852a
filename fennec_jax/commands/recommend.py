"""`fennec recommend`: rank the repository's models for new tasks.

  fennec recommend --benchmark=transfergraph_image --scores=obs.csv --top=5
  fennec recommend --checkpoint=/abs/ckpt --scores=obs.csv

`--scores` is a CSV of observed scores of the new task(s): `model,score` (one
task) or `model,task,score` (several, ranked in one batch). Without observed
scores for a task, Fennec falls back to the prior (the population ranking).
The recommender is fit on `--benchmark`/`--history` (a few seconds), or read
from a `--checkpoint` written with `--save`. Logic: `fennec_jax.recommender`.
"""

from absl import flags
from absl import logging

from fennec_jax import recommender

_BENCHMARK = flags.DEFINE_string('benchmark', None,
                                 'Bundled benchmark to fit on.')
_HISTORY = flags.DEFINE_string('history', None,
                               'Long-format CSV (model,task,score) to fit on.')
_CHECKPOINT = flags.DEFINE_string(
    'checkpoint', None, 'A Fennec checkpoint directory (instead of fitting).')
_SAVE = flags.DEFINE_string('save', None,
                            'Save the fitted recommender to this new dir.')
_SCORES = flags.DEFINE_string(
    'scores', None, 'CSV of observed scores: model,score or model,task,score.')
_TOP = flags.DEFINE_integer('top', 5, 'Models to list per task.')


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise ValueError(f'unexpected arguments {argv[1:]}; see --help.')
  sources = [s for s in (_BENCHMARK.value, _HISTORY.value, _CHECKPOINT.value)
             if s]
  if len(sources) != 1:
    raise ValueError('give exactly one of --benchmark, --history or '
                     '--checkpoint.')
  if _CHECKPOINT.value:
    fennec = recommender.Fennec.load(_CHECKPOINT.value)
  else:
    from fennec_jax.benchmarks import evaluate  # pylint: disable=g-import-not-at-top
    history, _ = evaluate.load_history(_BENCHMARK.value, _HISTORY.value)
    fennec = recommender.Fennec().fit(history)
  if _SAVE.value:
    fennec.save(_SAVE.value)
    logging.info('saved the recommender to %s', _SAVE.value)
  if _SCORES.value:
    observed = recommender.read_scores_csv(_SCORES.value)
  else:
    logging.info('no --scores: ranking by the prior (population) only.')
    observed = {'prior': {}}
  tasks = list(observed)
  rec = fennec.recommend(observed=[observed[t] for t in tasks],
                         top=_TOP.value)
  print(recommender.format_recommendation(rec, tasks, observed))
