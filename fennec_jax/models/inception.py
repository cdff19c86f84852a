"""GoogLeNet and Inception-v3 with torchvision's structure, names and counts.

Both are built without auxiliary classifiers: they only matter for training
from scratch, and the counts to match (6,624,904 and 23,834,568) are
torchvision's without them. Converters drop the checkpoint's `aux*`/`AuxLogits`
keys (logged). `transform_input=True` reproduces torchvision's re-normalization
that its pretrained GoogLeNet/Inception weights expect (the factories with
weights switch it on). As in torchvision, GoogLeNet's "5x5" branch uses a 3x3
conv and its max-pools use `ceil_mode=True`; convs are followed by BatchNorm
with eps 1e-3.
"""

from typing import Any, Mapping

from absl import logging
import flax.linen as nn
import jax
import jax.numpy as jnp

from fennec_jax.models import layers
from fennec_jax.models import registry

Dtype = Any


class BasicConv2d(nn.Module):
  """conv (no bias) + BatchNorm(eps=1e-3) + ReLU; children `conv`, `bn`."""
  features: int
  kernel_size: layers.IntPair
  stride: layers.IntPair = 1
  padding: layers.IntPair = 0
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    x = layers.conv2d(self.features, self.kernel_size, self.stride,
                      self.padding, dtype=self.dtype, name='conv')(x)
    x = layers.BatchNorm(epsilon=1e-3, dtype=self.dtype, name='bn')(x, train)
    return nn.relu(x)


def _transform_input(x: jax.Array) -> jax.Array:
  """torchvision's ImageNet-normalized -> [-1, 1]-normalized input."""
  mean = jnp.array([0.485, 0.456, 0.406], x.dtype)
  std = jnp.array([0.229, 0.224, 0.225], x.dtype)
  return x * (std / 0.5) + (mean - 0.5) / 0.5


# GoogLeNet -------------------------------------------------------------------


class InceptionBlock(nn.Module):
  """GoogLeNet inception module (torchvision's `Inception`)."""
  ch1x1: int
  ch3x3red: int
  ch3x3: int
  ch5x5red: int
  ch5x5: int
  pool_proj: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    bc = lambda *a, **k: BasicConv2d(*a, dtype=self.dtype, **k)
    b1 = bc(self.ch1x1, 1, name='branch1')(x, train)
    b2 = bc(self.ch3x3red, 1, name='branch2_0')(x, train)
    b2 = bc(self.ch3x3, 3, padding=1, name='branch2_1')(b2, train)
    b3 = bc(self.ch5x5red, 1, name='branch3_0')(x, train)
    # torchvision uses 3x3 here (a known deviation kept for its weights).
    b3 = bc(self.ch5x5, 3, padding=1, name='branch3_1')(b3, train)
    b4 = layers.max_pool(x, 3, 1, 1, ceil_mode=True)
    b4 = bc(self.pool_proj, 1, name='branch4_1')(b4, train)
    return jnp.concatenate([b1, b2, b3, b4], axis=-1)


_GOOGLENET_BLOCKS = (
    ('inception3a', (64, 96, 128, 16, 32, 32)),
    ('inception3b', (128, 128, 192, 32, 96, 64)),
    ('maxpool3', None),
    ('inception4a', (192, 96, 208, 16, 48, 64)),
    ('inception4b', (160, 112, 224, 24, 64, 64)),
    ('inception4c', (128, 128, 256, 24, 64, 64)),
    ('inception4d', (112, 144, 288, 32, 64, 64)),
    ('inception4e', (256, 160, 320, 32, 128, 128)),
    ('maxpool4', None),
    ('inception5a', (256, 160, 320, 32, 128, 128)),
    ('inception5b', (384, 192, 384, 48, 128, 128)),
)


class GoogLeNet(nn.Module):
  """torchvision's GoogLeNet without the auxiliary heads.

  Attributes:
    num_classes: classifier outputs; 0 returns the 1024 pooled features.
    transform_input: apply torchvision's input re-normalization (True for
      its pretrained weights).
    dropout_rate: dropout before `fc` (train mode only; needs a 'dropout' rng).
    dtype: compute dtype (parameters and output float32).
  """
  num_classes: int = 1000
  transform_input: bool = False
  dropout_rate: float = 0.2
  dtype: Dtype = jnp.float32
  num_features = 1024

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    """Logits `[n, num_classes]` (or features `[n, 1024]`), float32."""
    x = x.astype(self.dtype)
    if self.transform_input:
      x = _transform_input(x)
    bc = lambda *a, **k: BasicConv2d(*a, dtype=self.dtype, **k)
    x = bc(64, 7, 2, 3, name='conv1')(x, train)
    x = layers.max_pool(x, 3, 2, ceil_mode=True)
    x = bc(64, 1, name='conv2')(x, train)
    x = bc(192, 3, padding=1, name='conv3')(x, train)
    x = layers.max_pool(x, 3, 2, ceil_mode=True)
    for name, cfg in _GOOGLENET_BLOCKS:
      if name == 'maxpool3':
        x = layers.max_pool(x, 3, 2, ceil_mode=True)
      elif name == 'maxpool4':
        x = layers.max_pool(x, 2, 2, ceil_mode=True)
      else:
        x = InceptionBlock(*cfg, dtype=self.dtype, name=name)(x, train)
    x = layers.global_avg_pool(x)
    if self.num_classes:
      x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
      x = nn.Dense(self.num_classes, dtype=self.dtype, name='fc')(x)
    return x.astype(jnp.float32)


# Inception-v3 ----------------------------------------------------------------


class InceptionA(nn.Module):
  """35x35 block: 1x1, 5x5, double 3x3 and pooled branches."""
  pool_features: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    bc = lambda *a, **k: BasicConv2d(*a, dtype=self.dtype, **k)
    b1 = bc(64, 1, name='branch1x1')(x, train)
    b5 = bc(48, 1, name='branch5x5_1')(x, train)
    b5 = bc(64, 5, padding=2, name='branch5x5_2')(b5, train)
    b3 = bc(64, 1, name='branch3x3dbl_1')(x, train)
    b3 = bc(96, 3, padding=1, name='branch3x3dbl_2')(b3, train)
    b3 = bc(96, 3, padding=1, name='branch3x3dbl_3')(b3, train)
    bp = layers.avg_pool(x, 3, 1, 1)
    bp = bc(self.pool_features, 1, name='branch_pool')(bp, train)
    return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(nn.Module):
  """35 -> 17 reduction block."""
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    bc = lambda *a, **k: BasicConv2d(*a, dtype=self.dtype, **k)
    b3 = bc(384, 3, 2, name='branch3x3')(x, train)
    bd = bc(64, 1, name='branch3x3dbl_1')(x, train)
    bd = bc(96, 3, padding=1, name='branch3x3dbl_2')(bd, train)
    bd = bc(96, 3, 2, name='branch3x3dbl_3')(bd, train)
    bp = layers.max_pool(x, 3, 2)
    return jnp.concatenate([b3, bd, bp], axis=-1)


class InceptionC(nn.Module):
  """17x17 block with factorized 1x7 / 7x1 convolutions."""
  channels_7x7: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    bc = lambda *a, **k: BasicConv2d(*a, dtype=self.dtype, **k)
    c7 = self.channels_7x7
    b1 = bc(192, 1, name='branch1x1')(x, train)
    b7 = bc(c7, 1, name='branch7x7_1')(x, train)
    b7 = bc(c7, (1, 7), padding=(0, 3), name='branch7x7_2')(b7, train)
    b7 = bc(192, (7, 1), padding=(3, 0), name='branch7x7_3')(b7, train)
    bd = bc(c7, 1, name='branch7x7dbl_1')(x, train)
    bd = bc(c7, (7, 1), padding=(3, 0), name='branch7x7dbl_2')(bd, train)
    bd = bc(c7, (1, 7), padding=(0, 3), name='branch7x7dbl_3')(bd, train)
    bd = bc(c7, (7, 1), padding=(3, 0), name='branch7x7dbl_4')(bd, train)
    bd = bc(192, (1, 7), padding=(0, 3), name='branch7x7dbl_5')(bd, train)
    bp = layers.avg_pool(x, 3, 1, 1)
    bp = bc(192, 1, name='branch_pool')(bp, train)
    return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(nn.Module):
  """17 -> 8 reduction block."""
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    bc = lambda *a, **k: BasicConv2d(*a, dtype=self.dtype, **k)
    b3 = bc(192, 1, name='branch3x3_1')(x, train)
    b3 = bc(320, 3, 2, name='branch3x3_2')(b3, train)
    b7 = bc(192, 1, name='branch7x7x3_1')(x, train)
    b7 = bc(192, (1, 7), padding=(0, 3), name='branch7x7x3_2')(b7, train)
    b7 = bc(192, (7, 1), padding=(3, 0), name='branch7x7x3_3')(b7, train)
    b7 = bc(192, 3, 2, name='branch7x7x3_4')(b7, train)
    bp = layers.max_pool(x, 3, 2)
    return jnp.concatenate([b3, b7, bp], axis=-1)


class InceptionE(nn.Module):
  """8x8 block with split 1x3 / 3x1 branches."""
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    bc = lambda *a, **k: BasicConv2d(*a, dtype=self.dtype, **k)
    b1 = bc(320, 1, name='branch1x1')(x, train)
    b3 = bc(384, 1, name='branch3x3_1')(x, train)
    b3 = jnp.concatenate([
        bc(384, (1, 3), padding=(0, 1), name='branch3x3_2a')(b3, train),
        bc(384, (3, 1), padding=(1, 0), name='branch3x3_2b')(b3, train),
    ], axis=-1)
    bd = bc(448, 1, name='branch3x3dbl_1')(x, train)
    bd = bc(384, 3, padding=1, name='branch3x3dbl_2')(bd, train)
    bd = jnp.concatenate([
        bc(384, (1, 3), padding=(0, 1), name='branch3x3dbl_3a')(bd, train),
        bc(384, (3, 1), padding=(1, 0), name='branch3x3dbl_3b')(bd, train),
    ], axis=-1)
    bp = layers.avg_pool(x, 3, 1, 1)
    bp = bc(192, 1, name='branch_pool')(bp, train)
    return jnp.concatenate([b1, b3, bd, bp], axis=-1)


class InceptionV3(nn.Module):
  """torchvision's Inception3 without the auxiliary head (input >= 75x75).

  Attributes:
    num_classes: classifier outputs; 0 returns the 2048 pooled features.
    transform_input: apply torchvision's input re-normalization (True for
      its pretrained weights).
    dropout_rate: dropout before `fc` (train mode only; needs a 'dropout' rng).
    dtype: compute dtype (parameters and output float32).
  """
  num_classes: int = 1000
  transform_input: bool = False
  dropout_rate: float = 0.5
  dtype: Dtype = jnp.float32
  num_features = 2048

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    """Logits `[n, num_classes]` (or features `[n, 2048]`), float32."""
    if min(x.shape[1], x.shape[2]) < 75:
      raise ValueError(f'InceptionV3 needs inputs of at least 75x75 pixels, '
                       f'got {x.shape[1]}x{x.shape[2]}.')
    x = x.astype(self.dtype)
    if self.transform_input:
      x = _transform_input(x)
    bc = lambda *a, **k: BasicConv2d(*a, dtype=self.dtype, **k)
    x = bc(32, 3, 2, name='Conv2d_1a_3x3')(x, train)
    x = bc(32, 3, name='Conv2d_2a_3x3')(x, train)
    x = bc(64, 3, padding=1, name='Conv2d_2b_3x3')(x, train)
    x = layers.max_pool(x, 3, 2)
    x = bc(80, 1, name='Conv2d_3b_1x1')(x, train)
    x = bc(192, 3, name='Conv2d_4a_3x3')(x, train)
    x = layers.max_pool(x, 3, 2)
    x = InceptionA(32, dtype=self.dtype, name='Mixed_5b')(x, train)
    x = InceptionA(64, dtype=self.dtype, name='Mixed_5c')(x, train)
    x = InceptionA(64, dtype=self.dtype, name='Mixed_5d')(x, train)
    x = InceptionB(dtype=self.dtype, name='Mixed_6a')(x, train)
    for name, c7 in (('Mixed_6b', 128), ('Mixed_6c', 160), ('Mixed_6d', 160),
                     ('Mixed_6e', 192)):
      x = InceptionC(c7, dtype=self.dtype, name=name)(x, train)
    x = InceptionD(dtype=self.dtype, name='Mixed_7a')(x, train)
    x = InceptionE(dtype=self.dtype, name='Mixed_7b')(x, train)
    x = InceptionE(dtype=self.dtype, name='Mixed_7c')(x, train)
    x = layers.global_avg_pool(x)
    if self.num_classes:
      x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
      x = nn.Dense(self.num_classes, dtype=self.dtype, name='fc')(x)
    return x.astype(jnp.float32)


# Weight import ---------------------------------------------------------------

# GoogLeNet's sequential branches: branch2_0 -> branch2.0 (names in Inception3
# contain '_' too, but never '_<digit>' at the end of a component).
_torch_names = layers.regex_renamer([(r'(branch\d)_(\d)', r'\1.\2')])
_AUX_PREFIXES = ('aux1.', 'aux2.', 'AuxLogits.')


def torchvision_inception_to_flax(state_dict: Mapping[str, Any],
                                  target: Any) -> dict[str, Any]:
  """Flax variables from a torchvision GoogLeNet or Inception3 `state_dict()`.

  Auxiliary-classifier keys (`aux1.*`, `aux2.*`, `AuxLogits.*`) are dropped
  (counted in a log line): these models are built without aux heads.

  Args:
    state_dict: the torchvision model's state dict.
    target: flax variables or shapes of the matching `GoogLeNet` or
      `InceptionV3`.

  Returns:
    `{'params': ..., 'batch_stats': ...}` of float32 NumPy arrays.

  Raises:
    ValueError: when keys or shapes do not match.
  """
  kept = {k: v for k, v in state_dict.items()
          if not k.startswith(_AUX_PREFIXES)}
  if len(kept) != len(state_dict):
    logging.info('Dropped %d auxiliary-classifier entries of the state dict.',
                 len(state_dict) - len(kept))
  return layers.torch_to_flax(kept, target, _torch_names,
                              source='torchvision GoogLeNet/Inception3 '
                              'state dict')


registry.register_model('googlenet', GoogLeNet)
registry.register_model('inception_v3', InceptionV3, input_shape=(299, 299, 3))
