"""`fennec build-benchmark`: build (or resume) the offline benchmark.

  fennec build-benchmark --workdir=runs/offline_build            # full build
  fennec build-benchmark --workdir=runs/offline_build \
      --export_dir=fennec_jax/benchmarks/offline_data           # + artifacts
  fennec build-benchmark --preset=tiny --workdir=/tmp/tiny       # seconds
  fennec build-benchmark --config=experiments/configs/build_benchmark.py \
      --workdir=runs/offline_build

Killing it at any moment and rerunning the same command resumes: finished
pairs are kept, none is redone. `--stage=export` only writes the artifacts of
what is finished. All logic is in `fennec_jax.benchmarks.offline.build`.
"""

import logging as py_logging

from absl import flags
from absl import logging
from ml_collections import config_flags

from fennec_jax.benchmarks.offline import build

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


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise ValueError(f'unexpected arguments {argv[1:]}; see --help.')
  if _QUIET.value:
    logging.get_absl_handler().addFilter(_LibraryFilter())
  config = _CONFIG.value
  if config is None:
    config = (build.tiny_config() if _PRESET.value == 'tiny'
              else build.default_config())
  if _STAGE.value in ('all', 'build'):
    results = build.build(config, _WORKDIR.value)
    logging.info('%d (model, target) results in %s/%s', len(results),
                 _WORKDIR.value, build.RESULTS_FILE)
  if _STAGE.value == 'export' or (_STAGE.value == 'all' and _EXPORT_DIR.value):
    if not _EXPORT_DIR.value:
      raise ValueError('--stage=export needs --export_dir.')
    stats = build.export_artifacts(config, _WORKDIR.value, _EXPORT_DIR.value)
    logging.info('exported to %s: %d/%d targets with >= 10 points spread',
                 _EXPORT_DIR.value, stats['targets_with_spread_ge_10'],
                 stats['num_targets'])
