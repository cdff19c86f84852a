r"""`fennec build-benchmark`: build (or resume) the offline benchmark.

  fennec build-benchmark --workdir=runs/offline_build            # full build
  fennec build-benchmark --workdir=runs/offline_build \
      --export_dir=fennec_jax/benchmarks/offline_data           # + artifacts
  fennec build-benchmark --preset=tiny --workdir=/tmp/tiny       # seconds
  fennec build-benchmark --config=experiments/configs/build_benchmark.py \
      --workdir=runs/offline_build

Killing it at any moment and rerunning the same command resumes: finished
pairs are kept, none is redone. `--stage=export` only writes the artifacts of
what is finished. The flags fill the config of runner 'build_benchmark'
(`fennec_jax.benchmarks.runner`); all logic is in
`fennec_jax.benchmarks.offline.build`.
"""

import copy
import logging as py_logging

from absl import flags
from absl import logging
import ml_collections
from ml_collections import config_flags

from fennec_jax.benchmarks import runner
from fennec_jax.benchmarks.offline import build
from fennec_jax.commands import checks

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Config file (get_config() module); overrides --preset.')
_PRESET = flags.DEFINE_enum('preset', 'full', ['full', 'tiny'],
                            'Built-in configuration when --config is unset.')
_WORKDIR = flags.DEFINE_string('workdir', 'runs/offline_build',
                               'Work directory (resumable state).')
_EXPORT_DIR = flags.DEFINE_string(
    'export_dir', None, 'Write the artifacts here after building (e.g. '
    'fennec_jax/benchmarks/offline_data).')
_STAGE = flags.DEFINE_enum('stage', 'all', ['all', 'build', 'export'],
                           'What to run.')
_QUIET = flags.DEFINE_boolean(
    'quiet_libraries', True, 'Hide INFO lines of orbax and tfds (progress '
    'and results stay visible).')


class _LibraryFilter(py_logging.Filter):
  """Drops INFO records from orbax and tensorflow_datasets."""

  def filter(self, record: py_logging.LogRecord) -> bool:
    noisy = ('/orbax/', '/tensorflow_datasets/', '/array_record/')
    return record.levelno >= py_logging.WARNING or not any(
        n in record.pathname for n in noisy)


def config_from_flags() -> ml_collections.ConfigDict:
  """The 'build_benchmark' runner config: --config or --preset, plus the
  --export_dir and --stage flags."""
  if _CONFIG.value is not None:
    config = copy.deepcopy(_CONFIG.value)
  else:
    config = runner.default_config('build_benchmark')
    if _PRESET.value == 'tiny':
      config.update(build.tiny_config())
  with config.unlocked():
    # A config file may set them; a flag given on the command line wins.
    if 'export_dir' not in config or flags.FLAGS['export_dir'].present:
      config.export_dir = _EXPORT_DIR.value or ''
    if 'stage' not in config or flags.FLAGS['stage'].present:
      config.stage = _STAGE.value
  return config


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise ValueError(f'unexpected arguments {argv[1:]}; see --help.')
  config = config_from_flags()
  if config.stage == 'export' and not config.export_dir:
    raise ValueError('--stage=export needs --export_dir.')
  checks.output_dir('--workdir', _WORKDIR.value)
  if config.export_dir:
    checks.output_dir('--export_dir', config.export_dir)
  if _QUIET.value:
    logging.get_absl_handler().addFilter(_LibraryFilter())
  out = runner.run(config, _WORKDIR.value)
  if out['results'] is not None:
    logging.info('%d (model, target) results in %s/%s', len(out['results']),
                 _WORKDIR.value, build.RESULTS_FILE)
  if out['export'] is not None:
    stats = out['export']
    logging.info('exported to %s: %d/%d targets with >= 10 points spread',
                 config.export_dir, stats['targets_with_spread_ge_10'],
                 stats['num_targets'])
