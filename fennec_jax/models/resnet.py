"""ResNet (torchvision layout) as one configurable Flax linen module.

One definition serves torchvision's ResNet-18/34/50/101/152 (parameter counts
equal torchvision's; weights import with `torchvision_resnet_to_flax`) and the
small CIFAR-stem ResNets of the offline zoo (`width`, `stage_sizes`,
`stem='cifar'`). Module names mirror torchvision's attributes (`conv1`, `bn1`,
`layer1_0/conv1`, `layer1_0/downsample_conv`, `fc`) so that the weight import is
a name mapping. Bottleneck blocks put the stride on the 3x3 conv (ResNet v1.5,
as torchvision does).
"""

from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from fennec_jax.models import layers
from fennec_jax.models import registry

Dtype = Any

_BLOCKS = ('basic', 'bottleneck')
_STEMS = ('imagenet', 'cifar')


class BasicBlock(nn.Module):
  """Two 3x3 convs with an identity (or 1x1 projection) shortcut."""
  planes: int
  stride: int = 1
  downsample: bool = False
  dtype: Dtype = jnp.float32
  expansion = 1

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    identity = x
    out = layers.conv2d(self.planes, 3, self.stride, 1, dtype=self.dtype,
                        name='conv1')(x)
    out = layers.BatchNorm(dtype=self.dtype, name='bn1')(out, train)
    out = nn.relu(out)
    out = layers.conv2d(self.planes, 3, 1, 1, dtype=self.dtype,
                        name='conv2')(out)
    out = layers.BatchNorm(dtype=self.dtype, name='bn2')(out, train)
    if self.downsample:
      identity = layers.conv2d(self.planes, 1, self.stride, 0,
                               dtype=self.dtype, name='downsample_conv')(x)
      identity = layers.BatchNorm(dtype=self.dtype,
                                  name='downsample_bn')(identity, train)
    return nn.relu(out + identity)


class Bottleneck(nn.Module):
  """1x1 reduce, 3x3 (strided), 1x1 expand (x4), with a projection shortcut."""
  planes: int
  stride: int = 1
  downsample: bool = False
  dtype: Dtype = jnp.float32
  expansion = 4

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    identity = x
    out = layers.conv2d(self.planes, 1, dtype=self.dtype, name='conv1')(x)
    out = nn.relu(layers.BatchNorm(dtype=self.dtype, name='bn1')(out, train))
    out = layers.conv2d(self.planes, 3, self.stride, 1, dtype=self.dtype,
                        name='conv2')(out)
    out = nn.relu(layers.BatchNorm(dtype=self.dtype, name='bn2')(out, train))
    out = layers.conv2d(self.planes * 4, 1, dtype=self.dtype,
                        name='conv3')(out)
    out = layers.BatchNorm(dtype=self.dtype, name='bn3')(out, train)
    if self.downsample:
      identity = layers.conv2d(self.planes * 4, 1, self.stride, 0,
                               dtype=self.dtype, name='downsample_conv')(x)
      identity = layers.BatchNorm(dtype=self.dtype,
                                  name='downsample_bn')(identity, train)
    return nn.relu(out + identity)


class ResNet(nn.Module):
  """ResNet with torchvision's structure and names.

  Attributes:
    stage_sizes: blocks per stage, e.g. (3, 4, 6, 3) for ResNet-50.
    block: 'basic' (ResNet-18/34) or 'bottleneck' (ResNet-50 and deeper).
    width: channels of the first stage (64 in torchvision); stage i has
      `width * 2**i` planes (times 4 at the output of bottleneck blocks).
    stem: 'imagenet' (7x7/2 conv + 3x3/2 max-pool) or 'cifar' (3x3/1 conv, no
      pooling; for 32x32 inputs).
    num_classes: classifier outputs; 0 drops `fc` and returns the pooled
      features of width `width * 2**(len(stage_sizes)-1) * expansion`.
    dtype: compute dtype (parameters and the returned array are float32).
  """
  stage_sizes: Sequence[int] = (2, 2, 2, 2)
  block: str = 'basic'
  width: int = 64
  stem: str = 'imagenet'
  num_classes: int = 1000
  dtype: Dtype = jnp.float32

  def _check_config(self) -> None:
    if self.block not in _BLOCKS:
      raise ValueError(f'ResNet block={self.block!r}; valid: {_BLOCKS}.')
    if self.stem not in _STEMS:
      raise ValueError(f'ResNet stem={self.stem!r}; valid: {_STEMS}.')
    if self.width < 1 or not self.stage_sizes or min(self.stage_sizes) < 1:
      raise ValueError(f'ResNet width={self.width}, stage_sizes='
                       f'{tuple(self.stage_sizes)}: need width >= 1 and at '
                       'least one stage, each with >= 1 block.')
    if self.num_classes < 0:
      raise ValueError(f'ResNet num_classes={self.num_classes} must be >= 0.')

  @property
  def num_features(self) -> int:
    """Width of the pooled features (what `num_classes=0` returns)."""
    expansion = 4 if self.block == 'bottleneck' else 1
    return self.width * 2 ** (len(self.stage_sizes) - 1) * expansion

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    """Logits `[n, num_classes]` (or features `[n, num_features]`), float32."""
    self._check_config()
    block_cls = BasicBlock if self.block == 'basic' else Bottleneck
    x = x.astype(self.dtype)
    if self.stem == 'imagenet':
      x = layers.conv2d(self.width, 7, 2, 3, dtype=self.dtype, name='conv1')(x)
    else:
      x = layers.conv2d(self.width, 3, 1, 1, dtype=self.dtype, name='conv1')(x)
    x = nn.relu(layers.BatchNorm(dtype=self.dtype, name='bn1')(x, train))
    if self.stem == 'imagenet':
      x = layers.max_pool(x, 3, 2, 1)
    in_ch = self.width
    for i, n_blocks in enumerate(self.stage_sizes):
      planes = self.width * 2 ** i
      for j in range(n_blocks):
        stride = 2 if (i > 0 and j == 0) else 1
        downsample = j == 0 and (stride != 1
                                 or in_ch != planes * block_cls.expansion)
        x = block_cls(planes, stride, downsample, dtype=self.dtype,
                      name=f'layer{i + 1}_{j}')(x, train)
        in_ch = planes * block_cls.expansion
    x = layers.global_avg_pool(x)
    if self.num_classes:
      x = nn.Dense(self.num_classes, dtype=self.dtype, name='fc')(x)
    return x.astype(jnp.float32)


_torch_names = layers.regex_renamer([
    (r'^layer(\d+)_(\d+)', r'layer\1.\2'),
    (r'downsample_conv$', 'downsample.0'),
    (r'downsample_bn$', 'downsample.1'),
])


def torchvision_resnet_to_flax(state_dict: Mapping[str, Any],
                               target: Any) -> dict[str, Any]:
  """Flax variables from a torchvision ResNet `state_dict()`.

  Args:
    state_dict: the torchvision model's state dict (tensors or arrays).
    target: the flax variables or their shapes for the matching `ResNet`
      (e.g. `registry.init_shapes('resnet50')`); with `num_classes=0` the
      state dict's `fc.*` keys must be removed first.

  Returns:
    `{'params': ..., 'batch_stats': ...}` of float32 NumPy arrays.

  Raises:
    ValueError: when keys or shapes do not match (lists the first ones).
  """
  return layers.torch_to_flax(state_dict, target, _torch_names,
                              source='torchvision ResNet state dict')


_DEPTHS = {
    'resnet18': ((2, 2, 2, 2), 'basic'),
    'resnet34': ((3, 4, 6, 3), 'basic'),
    'resnet50': ((3, 4, 6, 3), 'bottleneck'),
    'resnet101': ((3, 4, 23, 3), 'bottleneck'),
    'resnet152': ((3, 8, 36, 3), 'bottleneck'),
}

for _name, (_stages, _block) in _DEPTHS.items():
  registry.register_model(_name, ResNet, stage_sizes=_stages, block=_block)

# Small variants for tests and the offline zoo (CIFAR stem, 32x32 inputs).
registry.register_model('resnet_tiny', ResNet, input_shape=(32, 32, 3),
                        stage_sizes=(1, 1, 1, 1), block='basic', width=8,
                        stem='cifar', num_classes=10)
registry.register_model('resnet_tiny_bottleneck', ResNet,
                        input_shape=(32, 32, 3), stage_sizes=(1, 1),
                        block='bottleneck', width=8, stem='cifar',
                        num_classes=10)
