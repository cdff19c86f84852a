r"""The offline benchmark build: 30-model zoo + proxy x 26 targets.

Command (full build, resumable; rerun the same command after a kill):

  python experiments/main.py --config=experiments/configs/build_benchmark.py \
      --config.export_dir=fennec_jax/benchmarks/offline_data \
      --workdir=runs/offline_build

Same as `fennec build-benchmark --workdir=runs/offline_build
--export_dir=fennec_jax/benchmarks/offline_data`. Runtime: 23.5 min for the
run that completed it, on the shared 2-core CPU (README; budget <= 60 min).
Expected (README): 780 (model, target) pairs; 20 of 26 targets spread at
least 10 points across models; the most frequent winner wins 6 of 26. Needs
the Debian package dataset-fashion-mnist for the fashion tasks.

Tiny variant for tests (2 archs x 2 models x 2 procedural targets, a few
steps): `--config=experiments/configs/build_benchmark.py:tiny`, measured
146 s wall at load 9.9 on the shared 2-core CPU.

v2 (issue #14; needs the `offline2` extra): `--config=experiments/configs/
build_benchmark.py:v2` (51 targets x 42 models, `presets.v2_config`);
`:v2_tiny` for tests.

At TPU/GPU scale: raise `num_devices` (the batch is sharded over a 'data'
mesh axis), the step counts, `source_sizes` and the zoo (`archs`); `data=
'tfds'` reads every task through tfds array_record builders.
"""

import ml_collections

from fennec_jax.benchmarks import runner
from fennec_jax.benchmarks.offline import build
from fennec_jax.benchmarks.offline import presets


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The build config: '' (v1), 'tiny', 'v2' or 'v2_tiny'."""
  variants = {'tiny': build.tiny_config, 'v2': presets.v2_config,
              'v2_tiny': presets.v2_tiny_config}
  if arg not in (None, '', *variants):
    raise ValueError(f"Unknown variant {arg!r}; valid: '', "
                     f"{', '.join(repr(v) for v in variants)}.")
  config = runner.default_config('build_benchmark')
  if arg:
    config.update(variants[arg]())
  return config
