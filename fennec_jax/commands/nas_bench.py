"""`fennec nas-bench`: the NAS-Bench-201 check of the architecture encoders.

  fennec nas-bench --train_fraction=0.01 --seeds=5 --out=runs/nas_bench
  fennec nas-bench --config=experiments/configs/nas_bench.py --out=DIR
  fennec nas-bench --limit=400 --seeds=1 --steps=30 --wl_epochs=2 \
      --flan_sizes=40 --out=/tmp/nb

Trains the GNN regressor and the WL (graph2vec + ridge) baseline on a random
`train_fraction` of the 15,625 cells per seed, and on CIFAR-10 also with
FLAN's protocol (`--flan_sizes` cells of a fixed half, tested on the other
half), prints the Kendall tau table (mean ± std over seeds) and writes
`OUT/results.csv` (`method,dataset,kendall_tau,std,seeds,protocol`),
`OUT/per_seed.csv` and `OUT/config.json`.
The flags fill the config of runner 'nas_bench'
(`fennec_jax.benchmarks.runner`); logic: `fennec_jax.archi2vec.nas_bench`.
"""

from absl import flags
from absl import logging
import ml_collections
from ml_collections import config_flags

from fennec_jax.archi2vec import nas_bench
from fennec_jax.benchmarks import runner
from fennec_jax.commands import checks

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Config file (get_config() module); when set, its values '
    'replace the flags below except --out.')
_OUT = flags.DEFINE_string('out', 'runs/nas_bench', 'Output directory.')
_CSV = flags.DEFINE_string('csv', None, 'NATS-Bench TSS CSV (default: the '
                           'copy in third_party/nats_bench_tss).')
_FRACTION = flags.DEFINE_float('train_fraction', 0.01,
                               'Fraction of cells used for training.')
_SEEDS = flags.DEFINE_integer('seeds', 5, 'Number of seeds (splits).')
_DATASETS = flags.DEFINE_list('datasets', list(nas_bench.DATASETS),
                              'Data sets to evaluate.')
_METHODS = flags.DEFINE_list('methods', ['gnn', 'wl'], 'Methods: gnn, wl.')
_STEPS = flags.DEFINE_integer('steps', nas_bench.GNNConfig.steps,
                              'GNN training steps.')
_ENSEMBLE = flags.DEFINE_integer('ensemble', nas_bench.GNNConfig.ensemble,
                                 'GNN models averaged per split.')
_HIDDEN = flags.DEFINE_integer('hidden', nas_bench.GNNConfig.hidden,
                               'GNN width.')
_LAYERS = flags.DEFINE_integer('layers', nas_bench.GNNConfig.num_layers,
                               'GNN message-passing layers.')
_WL_EPOCHS = flags.DEFINE_integer('wl_epochs', 20, 'PV-DBOW epochs.')
_FLAN_SIZES = flags.DEFINE_list(
    'flan_sizes', [str(n) for n in nas_bench.FLAN_SIZES],
    "Training sizes of FLAN's protocol (CIFAR-10; empty: none).")
_LIMIT = flags.DEFINE_integer('limit', None,
                              'Use only the first N cells (quick runs).')


def config_from_flags() -> ml_collections.ConfigDict:
  """The 'nas_bench' runner config: --config, or the flags."""
  if _CONFIG.value is not None:
    return _CONFIG.value
  config = runner.default_config('nas_bench')
  config.csv = _CSV.value or ''
  config.train_fraction = _FRACTION.value
  config.seeds = _SEEDS.value
  config.datasets = tuple(_DATASETS.value)
  config.methods = tuple(_METHODS.value)
  config.flan_sizes = tuple(int(n) for n in _FLAN_SIZES.value)
  config.limit = _LIMIT.value or 0
  config.gnn.update(hidden=_HIDDEN.value, num_layers=_LAYERS.value,
                    steps=_STEPS.value, ensemble=_ENSEMBLE.value)
  config.wl.epochs = _WL_EPOCHS.value
  return config


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise ValueError(f'unexpected arguments {argv[1:]}; see --help.')
  checks.output_dir('--out', _OUT.value)
  checks.at_least('--seeds', _SEEDS.value, 1)
  rows = runner.run(config_from_flags(), _OUT.value)
  table = nas_bench.format_table(nas_bench.summarize(rows))
  print(f'Kendall tau on held-out NAS-Bench-201 cells (mean ± std over '
        f'seeds):\n{table}')
  logging.info('wrote %s/results.csv and per_seed.csv', _OUT.value)
