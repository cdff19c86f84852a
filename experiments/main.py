r"""Experiment launcher: `--config` (ml_collections) + `--workdir`.

It parses the config and calls `fennec_jax.benchmarks.runner.run`, so
everything it runs is importable and tested. A config names its runner in
`config.runner` (`runner.RUNNERS`); the configs are in experiments/configs/,
each docstring giving its command, expected result and runtime. Example:

  python experiments/main.py --config=experiments/configs/evaluate.py \
      --workdir=runs/evaluate
  python experiments/main.py --config=experiments/configs/images.py:tiny \
      --workdir=/tmp/images
"""

from absl import app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

from fennec_jax.benchmarks import runner

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Experiment config file (a get_config() module).',
    lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Output directory.')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments {argv[1:]}')
  logging.info('JAX devices: %s', jax.devices())
  runner.run(_CONFIG.value, _WORKDIR.value)


if __name__ == '__main__':
  app.run(main)
