r"""Joint vs post-hoc side information (an evaluation, not a test).

A flag front end of the 'joint_eval' runner (the experiment config is
experiments/configs/joint_eval.py; the logic
`fennec_jax.benchmarks.comparisons`). Protocol `models`: each held-out model
is placed from its metadata, `fennec_cold` (post-hoc) against `joint`,
`mean_model` and `nearest_model`; Pearson, weighted tau and rank error per
model. Protocol `tasks`: each held-out task is placed from its task metadata
(or, `--task_side=proxy` on the offline benchmark, its proxy embedding),
`joint` against `fennec_posthoc` and `popularity`.

Command:

  .venv/bin/python experiments/benchmarks/joint_eval.py \
      --benchmark=parc_controlled --protocol=models --out=/tmp/joint_eval

On the offline benchmark, tasks are placed from their proxy embeddings and
cold models also from their graphs:

  .venv/bin/python experiments/benchmarks/joint_eval.py --benchmark=offline \
      --protocol=tasks --task_side=proxy --out=/tmp/joint_eval
  .venv/bin/python experiments/benchmarks/joint_eval.py --benchmark=offline \
      --protocol=models --graphs --out=/tmp/joint_eval

Writes `DIR/joint_eval_<benchmark>_<protocol>.csv`, `.json` (means) and
`DIR/config.json`.
"""

import json

from absl import app
from absl import flags
from absl import logging

from fennec_jax.benchmarks import comparisons
from fennec_jax.benchmarks import runner

_BENCHMARK = flags.DEFINE_string('benchmark', 'parc_controlled',
                                 'Bundled benchmark name.')
_PROTOCOL = flags.DEFINE_enum('protocol', 'models',
                              list(comparisons.JOINT_PROTOCOLS),
                              'Leave one model out or one task out.')
_OUT = flags.DEFINE_string('out', '/tmp/joint_eval', 'Output directory.')
_MAX_MODELS = flags.DEFINE_integer(
    'max_models', 0, 'Held-out models (a seeded subset); 0 = all eligible.')
_RANK = flags.DEFINE_integer('rank', 1, 'Rank of both spaces.')
_HIDDEN = flags.DEFINE_integer('hidden', 0, 'Joint side-head hidden width.')
_HEAD_PRECISION = flags.DEFINE_float('head_precision', 0.1,
                                     'Joint side-head L2 precision.')
_SEED = flags.DEFINE_integer('seed', 0, 'Seed.')
_TASK_SIDE = flags.DEFINE_enum(
    'task_side', 'metadata', list(comparisons.TASK_SIDES),
    "Task side information for --protocol=tasks: 'metadata' (numeric task "
    "metadata) or 'proxy' (--benchmark=offline only: the mean proxy "
    'embedding of 100 probe images, offline.source.proxy_task_features).')
_GRAPHS = flags.DEFINE_bool(
    'graphs', False, '--protocol=models on --benchmark=offline: also fit '
    "'joint_graph' (metadata + the archi2vec GNN on the models' traced "
    'graphs, trained end to end).')


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments {argv[1:]}')
  config = runner.default_config('joint_eval')
  config.benchmark = _BENCHMARK.value
  config.protocol = _PROTOCOL.value
  config.max_models = _MAX_MODELS.value
  config.task_side = _TASK_SIDE.value
  config.graphs = _GRAPHS.value
  config.seed = _SEED.value
  config.joint.update(rank=_RANK.value, hidden=_HIDDEN.value,
                      head_precision=_HEAD_PRECISION.value)
  summary = runner.run(config, _OUT.value)
  for method, means in summary['means'].items():
    logging.info('%-14s %s', method, '  '.join(f'{k} {v:.3f}'
                                               for k, v in means.items()))
  print(json.dumps(summary, indent=1))


if __name__ == '__main__':
  app.run(main)
