r"""The offline benchmark build (issue 6): 30-model zoo + proxy x 26 targets.

Command (full build, resumable; rerun the same command after a kill):

  fennec build-benchmark --config=experiments/configs/build_benchmark.py \
      --workdir=runs/offline_build \
      --export_dir=fennec_jax/benchmarks/offline_data

Runtime: see the data card (fennec_jax/benchmarks/offline_data/README.md) for
the measured time on the 2-core CPU (budget <= 60 min). Needs the Debian
package dataset-fashion-mnist for the fashion tasks.

Tiny variant (tests, a few seconds of compute):
`--config=experiments/configs/build_benchmark.py:tiny`.

At TPU/GPU scale: raise `num_devices` (the batch is sharded over a 'data'
mesh axis), the step counts, `source_sizes` and the zoo (`archs`); `data=
'tfds'` reads every task through tfds array_record builders.
"""

import ml_collections

from fennec_jax.benchmarks.offline import build


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """`arg='tiny'` gives the test configuration."""
  if arg not in (None, '', 'tiny'):
    raise ValueError(f"Unknown variant {arg!r}; valid: '' or 'tiny'.")
  config = build.tiny_config() if arg == 'tiny' else build.default_config()
  config.runner = 'build_benchmark'
  return config
