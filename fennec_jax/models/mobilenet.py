"""MobileNetV2 and MnasNet (B1) with torchvision's structure, names and counts.

Both are stacks of inverted residuals (1x1 expand, depthwise kxk, 1x1 linear
projection, identity shortcut when shapes allow). Module names mirror
torchvision's `nn.Sequential` indices with '_' for '.' (`features_1/conv_0_0`,
`layers_8_0/layers_3`), so the weight converters are name mappings. MnasNet's
BatchNorm momentum is torchvision's 1 - 0.9997 (flax convention: 0.9997).
"""

from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from fennec_jax.models import layers
from fennec_jax.models import registry

Dtype = Any

# (expand_ratio t, channels c, repeats n, first stride s), torchvision's table.
MOBILENET_V2_SETTING = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2),
                        (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                        (6, 320, 1, 1))


def make_divisible(v: float, divisor: int = 8) -> int:
  """torchvision's `_make_divisible`: round to a multiple, at most -10%."""
  new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
  if new_v < 0.9 * v:
    new_v += divisor
  return new_v


class ConvBNReLU6(nn.Module):
  """Conv2dNormActivation(ReLU6): children `0` (conv) and `1` (bn)."""
  features: int
  kernel_size: int = 3
  stride: int = 1
  groups: int = 1
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    x = layers.conv2d(self.features, self.kernel_size, self.stride,
                      (self.kernel_size - 1) // 2, groups=self.groups,
                      dtype=self.dtype, name='0')(x)
    return nn.relu6(layers.BatchNorm(dtype=self.dtype, name='1')(x, train))


class InvertedResidualV2(nn.Module):
  """MobileNetV2 block; torchvision names its children `conv.<i>`."""
  features: int
  stride: int
  expand_ratio: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    inp = x.shape[-1]
    hidden = int(round(inp * self.expand_ratio))
    y, i = x, 0
    if self.expand_ratio != 1:
      y = ConvBNReLU6(hidden, 1, dtype=self.dtype, name='conv_0')(y, train)
      i = 1
    y = ConvBNReLU6(hidden, 3, self.stride, groups=hidden, dtype=self.dtype,
                    name=f'conv_{i}')(y, train)
    y = layers.conv2d(self.features, 1, dtype=self.dtype,
                      name=f'conv_{i + 1}')(y)
    y = layers.BatchNorm(dtype=self.dtype, name=f'conv_{i + 2}')(y, train)
    if self.stride == 1 and inp == self.features:
      return x + y
    return y


class MobileNetV2(nn.Module):
  """torchvision's MobileNetV2.

  Attributes:
    width_mult: channel multiplier (1.0 for `mobilenet_v2`).
    inverted_residual_setting: (t, c, n, s) rows.
    num_classes: classifier outputs; 0 returns the pooled features (width
      `num_features`).
    dropout_rate: dropout before the classifier (train mode only; needs a
      'dropout' rng).
    dtype: compute dtype (parameters and output float32).
  """
  width_mult: float = 1.0
  inverted_residual_setting: Sequence[Sequence[int]] = MOBILENET_V2_SETTING
  num_classes: int = 1000
  dropout_rate: float = 0.2
  dtype: Dtype = jnp.float32

  @property
  def num_features(self) -> int:
    """Width of the pooled features."""
    return make_divisible(1280 * max(1.0, self.width_mult))

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    """Logits `[n, num_classes]` (or features `[n, num_features]`), float32."""
    if self.width_mult <= 0:
      raise ValueError(f'MobileNetV2 width_mult={self.width_mult} must be > 0.')
    x = x.astype(self.dtype)
    x = ConvBNReLU6(make_divisible(32 * self.width_mult), 3, 2,
                    dtype=self.dtype, name='features_0')(x, train)
    idx = 1
    for t, c, n, s in self.inverted_residual_setting:
      out = make_divisible(c * self.width_mult)
      for j in range(n):
        x = InvertedResidualV2(out, s if j == 0 else 1, t, dtype=self.dtype,
                               name=f'features_{idx}')(x, train)
        idx += 1
    x = ConvBNReLU6(self.num_features, 1, dtype=self.dtype,
                    name=f'features_{idx}')(x, train)
    x = layers.global_avg_pool(x)
    if self.num_classes:
      x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
      x = nn.Dense(self.num_classes, dtype=self.dtype, name='classifier_1')(x)
    return x.astype(jnp.float32)


# MnasNet ------------------------------------------------------------------

_MNAS_BN_MOMENTUM = 0.9997  # torchvision: momentum = 1 - 0.9997.
# (kernel, first stride, expansion, repeats) of the six stacks.
_MNAS_STACKS = ((3, 2, 3, 3), (5, 2, 3, 3), (5, 2, 6, 3), (3, 1, 6, 2),
                (5, 2, 6, 4), (3, 1, 6, 1))


def mnasnet_depths(alpha: float) -> list[int]:
  """torchvision's `_get_depths`: stage widths scaled by `alpha`."""
  out = []
  for d in (32, 16, 24, 40, 80, 96, 192, 320):
    val = d * alpha
    new = max(8, int(val + 4) // 8 * 8)
    out.append(new if new >= 0.9 * val else new + 8)
  return out


class MnasInvertedResidual(nn.Module):
  """MnasNet block: children `layers.<0..7>` as in torchvision."""
  features: int
  kernel_size: int
  stride: int
  expansion: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    in_ch = x.shape[-1]
    mid = in_ch * self.expansion

    def bn(name):
      return layers.BatchNorm(momentum=_MNAS_BN_MOMENTUM, dtype=self.dtype,
                              name=name)

    y = layers.conv2d(mid, 1, dtype=self.dtype, name='layers_0')(x)
    y = nn.relu(bn('layers_1')(y, train))
    y = layers.conv2d(mid, self.kernel_size, self.stride,
                      self.kernel_size // 2, groups=mid, dtype=self.dtype,
                      name='layers_3')(y)
    y = nn.relu(bn('layers_4')(y, train))
    y = layers.conv2d(self.features, 1, dtype=self.dtype, name='layers_6')(y)
    y = bn('layers_7')(y, train)
    if in_ch == self.features and self.stride == 1:
      return x + y
    return y


class MNASNet(nn.Module):
  """torchvision's MNASNet (B1), `alpha` the depth multiplier.

  Attributes:
    alpha: width multiplier (1.0 for `mnasnet1_0`).
    num_classes: classifier outputs; 0 returns the 1280 pooled features.
    dropout_rate: dropout before the classifier (train mode only).
    dtype: compute dtype (parameters and output float32).
  """
  alpha: float = 1.0
  num_classes: int = 1000
  dropout_rate: float = 0.2
  dtype: Dtype = jnp.float32
  num_features = 1280

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    """Logits `[n, num_classes]` (or features `[n, 1280]`), float32."""
    if self.alpha <= 0:
      raise ValueError(f'MNASNet alpha={self.alpha} must be > 0.')
    d = mnasnet_depths(self.alpha)

    def bn(name):
      return layers.BatchNorm(momentum=_MNAS_BN_MOMENTUM, dtype=self.dtype,
                              name=name)

    x = x.astype(self.dtype)
    x = layers.conv2d(d[0], 3, 2, 1, dtype=self.dtype, name='layers_0')(x)
    x = nn.relu(bn('layers_1')(x, train))
    x = layers.conv2d(d[0], 3, 1, 1, groups=d[0], dtype=self.dtype,
                      name='layers_3')(x)
    x = nn.relu(bn('layers_4')(x, train))
    x = layers.conv2d(d[1], 1, dtype=self.dtype, name='layers_6')(x)
    x = bn('layers_7')(x, train)
    for i, (k, s, e, n) in enumerate(_MNAS_STACKS):
      for j in range(n):
        x = MnasInvertedResidual(d[i + 2], k, s if j == 0 else 1, e,
                                 dtype=self.dtype,
                                 name=f'layers_{8 + i}_{j}')(x, train)
    x = layers.conv2d(1280, 1, dtype=self.dtype, name='layers_14')(x)
    x = nn.relu(bn('layers_15')(x, train))
    x = layers.global_avg_pool(x)
    if self.num_classes:
      x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
      x = nn.Dense(self.num_classes, dtype=self.dtype, name='classifier_1')(x)
    return x.astype(jnp.float32)


# torch attribute names here have no '_', so every '_' or '/' is a '.'.
_torch_names = layers.regex_renamer([(r'_', '.')])


def torchvision_mobilenet_to_flax(state_dict: Mapping[str, Any],
                                  target: Any) -> dict[str, Any]:
  """Flax variables from a torchvision MobileNetV2 or MNASNet `state_dict()`.

  Args:
    state_dict: the torchvision model's state dict.
    target: flax variables or shapes of the matching `MobileNetV2`/`MNASNet`.

  Returns:
    `{'params': ..., 'batch_stats': ...}` of float32 NumPy arrays.

  Raises:
    ValueError: when keys or shapes do not match.
  """
  return layers.torch_to_flax(state_dict, target, _torch_names,
                              source='torchvision MobileNetV2/MNASNet '
                              'state dict')


registry.register_model('mobilenet_v2', MobileNetV2)
registry.register_model('mnasnet1_0', MNASNet, alpha=1.0)
registry.register_model('mobilenet_v2_tiny', MobileNetV2,
                        input_shape=(32, 32, 3), width_mult=0.25,
                        inverted_residual_setting=((1, 16, 1, 1),
                                                   (6, 24, 2, 2)),
                        num_classes=10)
registry.register_model('mnasnet_tiny', MNASNet, input_shape=(32, 32, 3),
                        alpha=0.25, num_classes=10)
