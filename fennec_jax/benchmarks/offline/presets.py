"""Build presets of the offline benchmark beyond `build.default_config` (v1).

`v2_config`: the v2 benchmark (issue #14) - 51 targets over 7 domains (the
v1 targets it keeps, 10-class glyph subsets instead of the near-chance
many-class ones, UCI digits from scikit-learn, patches of scikit-image's
sample photographs), a 42-model zoo of 7 families at two sizes (v1's five
plus ConvNeXt and DenseNet), a proxy trained longer on every single-domain
v2 source, and a 50-step fine-tuning recipe: the most the 120-min CPU budget
allows with margin (experiments/benchmarks/results/offline_v2_build_cost.md),
to be confirmed by `recipe` (50 vs 500 steps on a sample of targets).
`v2_tiny_config`: the same code paths in seconds.
"""

import ml_collections

from fennec_jax.benchmarks.offline import build
from fennec_jax.data import tasks as tasks_lib

ARCHS_V2 = (
    ('offline_mlp_s', 'mlp', 's'), ('offline_mlp_l', 'mlp', 'l'),
    ('offline_cnn_s', 'cnn', 's'), ('offline_cnn_l', 'cnn', 'l'),
    ('offline_resnet_s', 'resnet', 's'), ('offline_resnet_l', 'resnet', 'l'),
    ('offline_vit_s', 'vit', 's'), ('offline_vit_l', 'vit', 'l'),
    ('offline_mixer_s', 'mixer', 's'), ('offline_mixer_l', 'mixer', 'l'),
    ('offline_convnext_s', 'convnext', 's'),
    ('offline_convnext_l', 'convnext', 'l'),
    ('offline_densenet_s', 'densenet', 's'),
    ('offline_densenet_l', 'densenet', 'l'),
)


def v2_config() -> ml_collections.ConfigDict:
  """The v2 build: 51 targets x 42 models + proxy."""
  c = build.default_config()
  c.targets = tasks_lib.list_tasks(role='target', suite='v2')
  c.sources = tasks_lib.list_tasks(role='source', suite='v2')
  c.archs = [list(a) for a in ARCHS_V2]
  c.models_per_arch = 3
  c.pretrain.update(steps=300)
  c.proxy.update(sources=tasks_lib.proxy_sources('v2'), steps=1500,
                 batch_size=64, warmup=50)
  # Steps set by the CPU budget (experiments/benchmarks/offline_build_cost.py:
  # measured 0.82 CPU s per step summed over the 14 archs, 4.3 s fixed per
  # target and arch -> 50 steps ~ 6,970 CPU s of fine-tuning for 51 x 42
  # pairs); pending the recipe validation (50 vs 500 steps).
  c.finetune.update(steps=50, warmup=5)
  return c


def v2_tiny_config() -> ml_collections.ConfigDict:
  """Seconds on a CPU: 2 new archs x 1 model x 2 packaged-data targets."""
  c = v2_config()
  c.targets = ['digits_all', 'photo_rotation']
  c.sources = ['src_digits_rotation', 'src_photo_which']
  c.archs = [['offline_convnext_s', 'convnext', 's'],
             ['offline_densenet_s', 'densenet', 's']]
  c.models_per_arch = 1
  return build.shrink_to_seconds(c, ['src_digits_all', 'src_photo_scale'])
