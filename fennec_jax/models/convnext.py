"""ConvNeXt with timm's structure, names and parameter counts.

A ConvNeXt block is a 7x7 depthwise conv, LayerNorm (eps 1e-6), a 4x MLP with
exact GELU and a learned per-channel layer scale (`gamma`), added to the input.
Stages are separated by LayerNorm + 2x2/2 conv downsampling; the head pools,
normalizes (timm's `NormMlpClassifierHead`) and classifies, so `num_classes=0`
returns the pooled *normalized* features as timm does. Names mirror timm's
(`stem_0`, `stages_1/downsample_1`, `stages_0/blocks_0/conv_dw`,
`head_norm`).
"""

from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from fennec_jax.models import layers
from fennec_jax.models import registry

Dtype = Any
_EPS = 1e-6


class ConvNeXtBlock(nn.Module):
  """Depthwise 7x7 conv -> LN -> MLP(4x, GELU) -> layer scale, residual."""
  dim: int
  ls_init_value: float = 1e-6
  drop_path: float = 0.0
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    shortcut = x
    x = layers.conv2d(self.dim, 7, 1, 3, groups=self.dim, use_bias=True,
                      dtype=self.dtype, name='conv_dw',
                      kernel_init=nn.initializers.truncated_normal(0.02))(x)
    x = layers.layer_norm(_EPS, self.dtype, name='norm')(x)
    x = MLP(4 * self.dim, self.dim, dtype=self.dtype, name='mlp')(x)
    gamma = self.param('gamma', nn.initializers.constant(self.ls_init_value),
                       (self.dim,), jnp.float32)
    x = x * gamma.astype(self.dtype)
    x = layers.DropPath(self.drop_path)(x, deterministic=not train)
    return shortcut + x


class MLP(nn.Module):
  """fc1 -> exact GELU -> fc2 (timm's `Mlp`)."""
  hidden: int
  out: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    init = nn.initializers.truncated_normal(0.02)
    x = nn.Dense(self.hidden, dtype=self.dtype, kernel_init=init,
                 name='fc1')(x)
    x = nn.gelu(x, approximate=False)
    return nn.Dense(self.out, dtype=self.dtype, kernel_init=init,
                    name='fc2')(x)


class ConvNeXtStage(nn.Module):
  """Optional LN + 2x2/2 conv downsample, then `depth` blocks."""
  dim: int
  depth: int
  downsample: bool
  drop_paths: Sequence[float]
  ls_init_value: float = 1e-6
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    if self.downsample:
      x = layers.layer_norm(_EPS, self.dtype, name='downsample_0')(x)
      x = layers.conv2d(self.dim, 2, 2, use_bias=True, dtype=self.dtype,
                        name='downsample_1',
                        kernel_init=nn.initializers.truncated_normal(0.02))(x)
    for j in range(self.depth):
      x = ConvNeXtBlock(self.dim, self.ls_init_value, self.drop_paths[j],
                        dtype=self.dtype, name=f'blocks_{j}')(x, train)
    return x


class ConvNeXt(nn.Module):
  """timm's ConvNeXt (patchify stem, LayerNorm, layer scale, norm-first head).

  Attributes:
    depths: blocks per stage ((3, 3, 9, 3) for ConvNeXt-T).
    dims: channels per stage ((96, 192, 384, 768)).
    num_classes: classifier outputs; 0 returns the pooled, normalized
      features of width `dims[-1]`.
    ls_init_value: initial layer-scale value.
    drop_path_rate: stochastic depth at the last block (train mode only;
      needs a 'dropout' rng).
    dtype: compute dtype (parameters and output float32).
  """
  depths: Sequence[int] = (3, 3, 9, 3)
  dims: Sequence[int] = (96, 192, 384, 768)
  num_classes: int = 1000
  ls_init_value: float = 1e-6
  drop_path_rate: float = 0.0
  dtype: Dtype = jnp.float32

  @property
  def num_features(self) -> int:
    """Width of the pooled features."""
    return self.dims[-1]

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    """Logits `[n, num_classes]` (or features `[n, dims[-1]]`), float32."""
    if len(self.depths) != len(self.dims) or not self.depths:
      raise ValueError(f'ConvNeXt depths={tuple(self.depths)} and dims='
                       f'{tuple(self.dims)} must be non-empty and of equal '
                       'length.')
    init = nn.initializers.truncated_normal(0.02)
    x = x.astype(self.dtype)
    x = layers.conv2d(self.dims[0], 4, 4, use_bias=True, dtype=self.dtype,
                      name='stem_0', kernel_init=init)(x)
    x = layers.layer_norm(_EPS, self.dtype, name='stem_1')(x)
    rates = layers.drop_path_rates(self.drop_path_rate, self.depths)
    for i, (depth, dim) in enumerate(zip(self.depths, self.dims)):
      x = ConvNeXtStage(dim, depth, i > 0, rates[i], self.ls_init_value,
                        dtype=self.dtype, name=f'stages_{i}')(x, train)
    x = layers.global_avg_pool(x)
    x = layers.layer_norm(_EPS, self.dtype, name='head_norm')(x)
    if self.num_classes:
      x = nn.Dense(self.num_classes, dtype=self.dtype, kernel_init=init,
                   name='head_fc')(x)
    return x.astype(jnp.float32)


_torch_names = layers.regex_renamer([
    (r'(stem|stages|downsample|blocks)_(\d+)', r'\1.\2'),
    (r'^head_', 'head.'),
])


def timm_convnext_to_flax(state_dict: Mapping[str, Any],
                          target: Any) -> dict[str, Any]:
  """Flax variables from a timm ConvNeXt `state_dict()`.

  Args:
    state_dict: the timm model's state dict (timm key names, e.g.
      `stages.0.blocks.0.conv_dw.weight`, `head.norm.weight`).
    target: flax variables or shapes of the matching `ConvNeXt`.

  Returns:
    `{'params': ...}` of float32 NumPy arrays.

  Raises:
    ValueError: when keys or shapes do not match.
  """
  return layers.torch_to_flax(state_dict, target, _torch_names,
                              source='timm ConvNeXt state dict')


registry.register_model('convnext_tiny', ConvNeXt, depths=(3, 3, 9, 3),
                        dims=(96, 192, 384, 768))
registry.register_model('convnext_test', ConvNeXt,
                        input_shape=(32, 32, 3), depths=(1, 1, 1, 1),
                        dims=(8, 16, 24, 32),
                        num_classes=10)
