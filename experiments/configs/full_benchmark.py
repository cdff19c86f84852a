r"""The full benchmark: public tasks from tfds, real checkpoints, every
estimator and Fennec from images, leave one task out on the published
tables (runner 'full_benchmark', `fennec_jax/benchmarks/full/`).

Full run (a TPU VM or GPU host with the tfds data prepared and the
checkpoints downloaded; README "The full benchmark on a TPU VM"):

  python experiments/main.py --config=experiments/configs/full_benchmark.py \
      --config.data_dir=/data/tfds --config.checkpoint_dir=/data/ckpt \
      --workdir=runs/full

`--config.dry_run=True` prints the plan (tasks, models, images, bytes) and
the device time: measured on the devices at hand, and estimated for an
NVIDIA H200 from the project's measured anchors (`plan.h200_estimate`).
Several JAX processes: `experiments/launch_local.py --num_processes=N --
<the same arguments>` (one host), or `--tpu_vm` on every worker of a TPU
VM. `config.per_device_batch` images per device per step whatever the
layout, so the features do not depend on it.

Tiny variant (the small-scale twin, CPU): 4 tasks served by
`tfds.testing.mock_data` (64 random images each, the data sets' own feature
specs), 5 candidates written as random-weight torchvision `.pth` state dicts
at reduced depth / width and read back through the real converters, a tiny
random CLIP vision tower written with transformers `save_pretrained`
(safetensors) as the proxy; ground truth: the bundled sfda_group1 and
model_spider_single rows of those tasks and models:

  python experiments/main.py \
      --config=experiments/configs/full_benchmark.py:tiny --workdir=/tmp/fb

Runtime of `--config=experiments/configs/full_benchmark.py:tiny`, measured:
71 s wall as 1 process x 1 CPU device at load average ~1 on the 2-core
CPU (2026-12-02); 4 min 29 s (236.6 s in the run) at load average ~20 on
the shared 2-core CPU, 9 min 55 s when six other jobs of the same session
ran beside it (load ~25; 89 s at load 8-10 in an earlier session). As
`launch_local.py --num_processes=2` (2 x 2 devices): 7 min 52 s and
12 min 40 s in the same two settings. In both pairs the two results.csv are
identical (210 rows), as are every stored feature and estimator score. It
writes results.csv, report.md, a plot per benchmark and
recommender/<benchmark>/.
"""

import ml_collections

from fennec_jax.benchmarks import runner

TINY_MODELS = ('resnet50', 'resnet101', 'densenet121', 'mnasnet1_0',
               'mobilenet_v2')
TINY_TASKS = ('cifar10', 'cifar100', 'dtd', 'caltech101')


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The full-benchmark config; `arg='tiny'` is the CPU twin.

  `arg='micro'` shrinks the twin further for the kill/restart and
  multi-process tests: 1 benchmark, 4 tasks x 3 candidates, LogME alone.
  """
  if arg not in (None, '', 'tiny', 'micro'):
    raise ValueError(f'unknown config variant {arg!r}; valid: tiny, micro.')
  config = runner.default_config('full_benchmark')
  if arg in ('tiny', 'micro'):
    config.benchmarks = ('sfda_group1', 'model_spider_single')
    config.tasks = TINY_TASKS
    config.models = TINY_MODELS
    config.proxy.name = 'clip_test_tiny'
    config.proxy.checkpoint = 'proxy_clip_test_tiny'
    config.probe_images = 48
    config.proxy_images = 16
    config.per_device_batch = 4
    config.host_threads = 2
    config.estimators = ('logme', 'leep', 'nce')
    config.k_shots = (0, 1)
    config.num_seeds = 2
    config.tiny.enabled = True
    config.tiny.mock_examples = 64
    config.tiny.image_size = 32
    config.space.max_steps = 100
  if arg == 'micro':
    config.benchmarks = ('sfda_group1',)
    config.models = ('densenet121', 'mobilenet_v2', 'mnasnet1_0')
    config.estimators = ('logme',)
    config.probe_images = 16
    config.proxy_images = 8
    config.per_device_batch = 2
    config.k_shots = (0,)
    config.num_seeds = 1
    config.paper = False
    config.space.max_steps = 20
    config.tiny.mock_examples = 24
  return config
