"""`fennec demo`: Fennec vs LogME on a held-out task of the offline benchmark.

  fennec demo                 # a task drawn with --seed
  fennec demo --task=NAME --top=5

Fits Fennec on the other tasks of the committed offline benchmark, ranks the
zoo for the held-out task from its images alone, prints the top models with
predicted vs actual fine-tuned accuracy, and how long Fennec took vs running
LogME over the whole zoo. The flags fill the config of runner 'demo'
(`fennec_jax.benchmarks.runner`); logic:
`fennec_jax.benchmarks.offline.demo.demo`.
"""

import time

from absl import flags
import ml_collections

from fennec_jax.benchmarks import runner
from fennec_jax.benchmarks.offline import demo as demo_lib
from fennec_jax.commands import checks

_TASK = flags.DEFINE_string('task', None, 'Held-out task (default: drawn).')
_TOP = flags.DEFINE_integer('top', 5, 'Models to show.')
_SEED = flags.DEFINE_integer('seed', 0, 'Seed of the task draw and fit.')
_DATA_DIR = flags.DEFINE_string(
    'data_dir', None, 'Offline benchmark artifacts (default: the committed '
    'fennec_jax/benchmarks/offline_data).')


def config_from_flags() -> ml_collections.ConfigDict:
  """The 'demo' runner config the flags describe."""
  config = runner.default_config('demo')
  config.task = _TASK.value or ''
  config.top = _TOP.value
  config.seed = _SEED.value
  config.data_dir = _DATA_DIR.value or ''
  return config


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise ValueError(f'unexpected arguments {argv[1:]}; see --help.')
  checks.at_least('--top', _TOP.value, 1)
  wall, cpu = time.perf_counter(), time.process_time()
  result = runner.run(config_from_flags(), None)
  print(demo_lib.format_demo(result))
  print(f'demo total: {time.perf_counter() - wall:.1f} s wall, '
        f'{time.process_time() - cpu:.1f} s CPU (after imports)')
