"""`fennec evaluate`: the leave-one-task-out protocol on a history.

  fennec evaluate --benchmark=transfergraph_image --out=runs/evaluate
  fennec evaluate --history=my_scores.csv --k_shots=0,1,5 --seeds=10 --out=DIR

  fennec evaluate --benchmark=offline --protocol=images --out=DIR
  fennec evaluate --benchmark=parc_controlled --protocol=models --out=DIR

Writes DIR/results.csv (`method,k_shot,target,pearson,weighted_tau,
top1_regret`, plus `MEAN` rows), DIR/results.md (95% bootstrap intervals over
targets) and DIR/results.png; the images protocol adds a
`seconds_per_target` column and DIR/quality_vs_time.png; DIR/config.json
holds the run's config. The flags fill the config of runner 'evaluate',
'images' or 'models_out' (by --protocol) and `fennec_jax.benchmarks.runner.run`
runs it, as `experiments/main.py` does for experiments/configs/*.py.
"""

from absl import flags
from absl import logging
import ml_collections

from fennec_jax import history as history_lib
from fennec_jax.benchmarks import images
from fennec_jax.benchmarks import protocol
from fennec_jax.benchmarks import runner
from fennec_jax.commands import checks
from fennec_jax.estimators import registry

_BENCHMARK = flags.DEFINE_string(
    'benchmark', None, 'Bundled benchmark name (see '
    'fennec_jax.benchmarks.list_benchmarks()); or use --history.')
_HISTORY = flags.DEFINE_string(
    'history', None, 'Long-format CSV with columns model,task,score.')
_DUPLICATES = flags.DEFINE_enum(
    'duplicates', 'error', list(history_lib.DUPLICATE_POLICIES),
    'With --history: how differing scores of one (model, task) pair are '
    'resolved.')
_K_SHOTS = flags.DEFINE_list(
    'k_shots', ['0', '1', '3', '5', '10'],
    'K values: models of the target whose scores are revealed.')
_SEEDS = flags.DEFINE_integer('seeds', 10, 'Random draws per target and K.')
_OUT = flags.DEFINE_string('out', 'runs/evaluate', 'Output directory.')
_ALL_TARGETS = flags.DEFINE_boolean(
    'all_targets', False, 'Evaluate every task, not only the targets the '
    "benchmark's paper reports.")
_TARGETS = flags.DEFINE_list('targets', None, 'Explicit target task ids.')
_METHODS = flags.DEFINE_list(
    'methods', None, 'Methods to run (default: every one that applies).')
_SEED = flags.DEFINE_integer('seed', 0, 'Root seed of draws and space.')
_PROTOCOL = flags.DEFINE_enum(
    'protocol', 'history', ['history', 'images', 'models'],
    "'history': leave one task out, methods see other tasks' scores (any "
    "benchmark); 'images': also the target's probe images "
    '(--benchmark=offline only): fennec, fennec_paper, popularity and every '
    "estimator over the zoo, timed; 'models': leave one model out, the model "
    'placed from its metadata (writes DIR/models_out.csv).')
_DATA_DIR = flags.DEFINE_string(
    'data_dir', None, '--protocol=images: offline benchmark artifacts '
    '(default: the committed fennec_jax/benchmarks/offline_data).')
_ESTIMATORS = flags.DEFINE_list(
    'estimators', list(images.DEFAULT_IMAGE_ESTIMATORS),
    'Estimators run over the zoo by --protocol=images.')


# --protocol -> the runner it launches.
_RUNNER_OF_PROTOCOL = {'history': 'evaluate', 'images': 'images',
                       'models': 'models_out'}


def config_from_flags() -> ml_collections.ConfigDict:
  """The runner config the flags describe.

  Raises:
    ValueError: --k_shots not integers >= 0, --seeds < 1, an unknown
      --estimators name, or --protocol=images without --benchmark=offline.
  """
  k_shots = checks.integers('--k_shots', _K_SHOTS.value, 0)
  checks.at_least('--seeds', _SEEDS.value, 1)
  config = runner.default_config(_RUNNER_OF_PROTOCOL[_PROTOCOL.value])
  config.seed = _SEED.value
  if _PROTOCOL.value == 'images':
    if _BENCHMARK.value != 'offline' or _HISTORY.value:
      raise ValueError('--protocol=images needs --benchmark=offline (the only '
                       'benchmark that ships images and zoo weights).')
    config.data_dir = _DATA_DIR.value or ''
    checks.names('--estimators', _ESTIMATORS.value,
                 registry.list_estimators())
    config.estimators = tuple(_ESTIMATORS.value)
  else:
    config.benchmark = _BENCHMARK.value or ''
    config.history = _HISTORY.value or ''
    config.duplicates = _DUPLICATES.value
  if flags.FLAGS['duplicates'].present and not _HISTORY.value:
    raise ValueError('--duplicates applies to --history only.')
  if _PROTOCOL.value != 'models':
    config.k_shots = k_shots
    config.num_seeds = _SEEDS.value
    config.targets = tuple(_TARGETS.value or ())
  if _PROTOCOL.value == 'history':
    config.all_targets = _ALL_TARGETS.value
    config.methods = tuple(_METHODS.value or ())
  return config


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise ValueError(f'unexpected arguments {argv[1:]}; see --help.')
  checks.output_dir('--out', _OUT.value)
  config = config_from_flags()
  if _PROTOCOL.value == 'models':
    rows, path = runner.run(config, _OUT.value)
    logging.info('wrote %s', path)
    for r in rows:
      if r['model'] == protocol.MEAN:
        print(f"{r['method']:14s} pearson {r['pearson']:.3f}  weighted_tau "
              f"{r['weighted_tau']:.3f}  rank_error {r['rank_error']:.3f}")
    return
  _, paths = runner.run(config, _OUT.value)
  logging.info('wrote %s', paths)
  with open(paths['md']) as f:
    print(f.read())  # The command's user-facing output.
