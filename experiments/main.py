r"""Experiment launcher: `--config` (ml_collections) + `--workdir`.

This file is intentionally short: it parses the config and calls one library
function, so everything it runs is importable and tested. Example:

  python experiments/main.py --config=experiments/configs/evaluate.py \
      --workdir=runs/evaluate

A config file names its runner in `config.runner` (a key of `RUNNERS`); later
experiments add theirs the same way.
"""

from absl import app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Experiment config file (a get_config() module).',
    lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Output directory.')
flags.mark_flags_as_required(['config', 'workdir'])


def _evaluate(config, workdir):
  from fennec_jax.benchmarks import evaluate  # pylint: disable=g-import-not-at-top
  return evaluate.run_from_config(config, workdir)


def _build_benchmark(config, workdir):
  from fennec_jax.benchmarks.offline import build  # pylint: disable=g-import-not-at-top
  return build.build(config, workdir)


# config.runner -> function(config, workdir).
RUNNERS = {'evaluate': _evaluate, 'build_benchmark': _build_benchmark}


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments {argv[1:]}')
  logging.info('JAX devices: %s', jax.devices())
  runner = _CONFIG.value.runner
  if runner not in RUNNERS:
    raise ValueError(f'config.runner={runner!r}; valid: {sorted(RUNNERS)}')
  RUNNERS[runner](_CONFIG.value, _WORKDIR.value)


if __name__ == '__main__':
  app.run(main)
