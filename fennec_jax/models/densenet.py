"""DenseNet-121/169/201 with torchvision's structure, names and counts.

Each dense layer is BN-ReLU-1x1 conv (bottleneck to `bn_size * growth_rate`)
then BN-ReLU-3x3 conv producing `growth_rate` channels, concatenated onto its
input; transitions halve channels (1x1 conv) and resolution (2x2 average
pool). Names mirror torchvision's `features.*` without the `features.` prefix
(`conv0`, `denseblock1/denselayer1/conv1`, `transition1/conv`, `norm5`) and
`classifier`, so `torchvision_densenet_to_flax` is a name mapping.
"""

from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from fennec_jax.models import layers
from fennec_jax.models import registry

Dtype = Any


class DenseLayer(nn.Module):
  """BN-ReLU-conv1x1-BN-ReLU-conv3x3, output concatenated to the input."""
  growth_rate: int
  bn_size: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    y = nn.relu(layers.BatchNorm(dtype=self.dtype, name='norm1')(x, train))
    y = layers.conv2d(self.bn_size * self.growth_rate, 1, dtype=self.dtype,
                      name='conv1')(y)
    y = nn.relu(layers.BatchNorm(dtype=self.dtype, name='norm2')(y, train))
    y = layers.conv2d(self.growth_rate, 3, 1, 1, dtype=self.dtype,
                      name='conv2')(y)
    return jnp.concatenate([x, y], axis=-1)


class DenseBlock(nn.Module):
  """`num_layers` dense layers named `denselayer1..N` as in torchvision."""
  num_layers: int
  growth_rate: int
  bn_size: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    for i in range(self.num_layers):
      x = DenseLayer(self.growth_rate, self.bn_size, dtype=self.dtype,
                     name=f'denselayer{i + 1}')(x, train)
    return x


class Transition(nn.Module):
  """BN-ReLU-conv1x1 to `features` channels, then 2x2/2 average pooling."""
  features: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    x = nn.relu(layers.BatchNorm(dtype=self.dtype, name='norm')(x, train))
    x = layers.conv2d(self.features, 1, dtype=self.dtype, name='conv')(x)
    return layers.avg_pool(x, 2, 2)


class DenseNet(nn.Module):
  """torchvision's DenseNet-BC.

  Attributes:
    growth_rate: channels each dense layer adds (32 for DenseNet-121).
    block_config: dense layers per block.
    num_init_features: channels of the stem conv.
    bn_size: bottleneck width multiplier (of `growth_rate`).
    num_classes: classifier outputs; 0 returns the pooled features (width
      `num_features`).
    dtype: compute dtype (parameters and output float32).
  """
  growth_rate: int = 32
  block_config: Sequence[int] = (6, 12, 24, 16)
  num_init_features: int = 64
  bn_size: int = 4
  num_classes: int = 1000
  dtype: Dtype = jnp.float32

  @property
  def num_features(self) -> int:
    """Width of the pooled features."""
    c = self.num_init_features
    for i, n in enumerate(self.block_config):
      c += n * self.growth_rate
      if i != len(self.block_config) - 1:
        c //= 2
    return c

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    """Logits `[n, num_classes]` (or features `[n, num_features]`), float32."""
    if not self.block_config or min(self.block_config) < 1:
      raise ValueError(f'DenseNet block_config={tuple(self.block_config)}: '
                       'need at least one block with >= 1 layer.')
    x = x.astype(self.dtype)
    x = layers.conv2d(self.num_init_features, 7, 2, 3, dtype=self.dtype,
                      name='conv0')(x)
    x = nn.relu(layers.BatchNorm(dtype=self.dtype, name='norm0')(x, train))
    x = layers.max_pool(x, 3, 2, 1)
    c = self.num_init_features
    for i, n in enumerate(self.block_config):
      x = DenseBlock(n, self.growth_rate, self.bn_size, dtype=self.dtype,
                     name=f'denseblock{i + 1}')(x, train)
      c += n * self.growth_rate
      if i != len(self.block_config) - 1:
        c //= 2
        x = Transition(c, dtype=self.dtype, name=f'transition{i + 1}')(x,
                                                                        train)
    x = nn.relu(layers.BatchNorm(dtype=self.dtype, name='norm5')(x, train))
    x = layers.global_avg_pool(x)
    if self.num_classes:
      x = nn.Dense(self.num_classes, dtype=self.dtype, name='classifier')(x)
    return x.astype(jnp.float32)


_torch_names = layers.regex_renamer([(r'^(?!classifier)', 'features.')])


def torchvision_densenet_to_flax(state_dict: Mapping[str, Any],
                                 target: Any) -> dict[str, Any]:
  """Flax variables from a torchvision DenseNet `state_dict()`.

  Args:
    state_dict: the torchvision model's state dict (current key names, i.e.
      `norm1` not the legacy `norm.1`).
    target: flax variables or shapes of the matching `DenseNet`.

  Returns:
    `{'params': ..., 'batch_stats': ...}` of float32 NumPy arrays.

  Raises:
    ValueError: when keys or shapes do not match.
  """
  return layers.torch_to_flax(state_dict, target, _torch_names,
                              source='torchvision DenseNet state dict')


for _name, _growth, _blocks in (('densenet121', 32, (6, 12, 24, 16)),
                                ('densenet169', 32, (6, 12, 32, 32)),
                                ('densenet201', 32, (6, 12, 48, 32))):
  registry.register_model(_name, DenseNet, growth_rate=_growth,
                          block_config=_blocks)

registry.register_model('densenet_tiny', DenseNet, input_shape=(32, 32, 3),
                        growth_rate=8, block_config=(2, 2),
                        num_init_features=16, bn_size=2, num_classes=10)
