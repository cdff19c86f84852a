"""Small architectures of the offline zoo: MLP, plain CNN and MLP-Mixer.

One linen module per family; sizes are configuration. They follow the
registry's convention: `num_classes=0` returns the pooled features. The
`offline_*` names are the zoo's 28x28x3 variants (10k-300k parameters), which
the offline benchmark pretrains and fine-tunes on a CPU in minutes.
"""

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from fennec_jax.models import convnext
from fennec_jax.models import densenet
from fennec_jax.models import registry
from fennec_jax.models import resnet
from fennec_jax.models import vit


class MLP(nn.Module):
  """Flatten, then `len(hidden)` Dense+GELU layers (features: the last one).

  Attributes:
    hidden: widths of the hidden layers.
    num_classes: classifier outputs; 0 returns the last hidden layer.
  """
  hidden: Sequence[int] = (128, 128)
  num_classes: int = 0

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    del train  # No dropout or batch statistics.
    x = x.reshape(x.shape[0], -1)
    for i, h in enumerate(self.hidden):
      x = nn.gelu(nn.Dense(h, name=f'dense_{i}')(x))
    if self.num_classes:
      x = nn.Dense(self.num_classes, name='head')(x)
    return x


class PlainCNN(nn.Module):
  """VGG-style stages of 3x3 Conv+ReLU, 2x2 average pooling between stages.

  Average, not max, pooling: max-pool gradients (select_and_scatter) are an
  order of magnitude slower on XLA:CPU, where the offline zoo trains.

  Attributes:
    widths: channels per stage.
    convs_per_stage: 3x3 convolutions in each stage.
    num_classes: classifier outputs; 0 returns globally averaged features.
  """
  widths: Sequence[int] = (16, 32, 64)
  convs_per_stage: int = 1
  num_classes: int = 0

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    del train
    for s, w in enumerate(self.widths):
      if s:
        x = nn.avg_pool(x, (2, 2), strides=(2, 2), padding='SAME')
      for c in range(self.convs_per_stage):
        x = nn.relu(nn.Conv(w, (3, 3), name=f'conv_{s}_{c}')(x))
    x = jnp.mean(x, axis=(1, 2))
    if self.num_classes:
      x = nn.Dense(self.num_classes, name='head')(x)
    return x


class MixerBlock(nn.Module):
  """Token-mixing MLP then channel-mixing MLP, each pre-norm and residual."""
  tokens_mlp_dim: int
  channels_mlp_dim: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    y = nn.LayerNorm(name='norm1')(x)
    y = jnp.swapaxes(y, 1, 2)
    y = nn.Dense(self.tokens_mlp_dim, name='token_fc1')(y)
    y = nn.Dense(x.shape[1], name='token_fc2')(nn.gelu(y))
    x = x + jnp.swapaxes(y, 1, 2)
    y = nn.LayerNorm(name='norm2')(x)
    y = nn.Dense(self.channels_mlp_dim, name='channel_fc1')(y)
    return x + nn.Dense(x.shape[-1], name='channel_fc2')(nn.gelu(y))


class MlpMixer(nn.Module):
  """MLP-Mixer (Tolstikhin et al., 2021) with mean pooling over tokens.

  Attributes:
    patch_size: square patch side.
    width: channel dimension of the tokens.
    depth: number of Mixer blocks.
    tokens_mlp_dim: hidden size of the token-mixing MLP.
    channels_mlp_dim: hidden size of the channel-mixing MLP.
    num_classes: classifier outputs; 0 returns pooled features.
  """
  patch_size: int = 4
  width: int = 64
  depth: int = 2
  tokens_mlp_dim: int = 64
  channels_mlp_dim: int = 128
  num_classes: int = 0

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    del train
    p = self.patch_size
    if x.shape[1] % p or x.shape[2] % p:
      raise ValueError(f'Image size {x.shape[1:3]} is not a multiple of the '
                       f'patch size {p}.')
    x = nn.Conv(self.width, (p, p), strides=(p, p), padding='VALID',
                name='stem')(x)
    x = x.reshape(x.shape[0], -1, self.width)
    for i in range(self.depth):
      x = MixerBlock(self.tokens_mlp_dim, self.channels_mlp_dim,
                     name=f'block_{i}')(x)
    x = jnp.mean(nn.LayerNorm(name='norm')(x), axis=1)
    if self.num_classes:
      x = nn.Dense(self.num_classes, name='head')(x)
    return x


OFFLINE_INPUT = (28, 28, 3)


def _register() -> None:
  r = registry.register_model
  r('mlp_test_tiny', MLP, input_shape=(8, 8, 3), hidden=(16,), num_classes=4)
  r('cnn_test_tiny', PlainCNN, input_shape=(8, 8, 3), widths=(4, 8),
    num_classes=4)
  r('mixer_test_tiny', MlpMixer, input_shape=(8, 8, 3), patch_size=4,
    width=8, depth=1, tokens_mlp_dim=8, channels_mlp_dim=16, num_classes=4)
  # The offline zoo's families at two sizes (28x28x3 inputs, features out).
  r('offline_mlp_s', MLP, input_shape=OFFLINE_INPUT, hidden=(64, 64))
  r('offline_mlp_l', MLP, input_shape=OFFLINE_INPUT, hidden=(128, 128, 128))
  r('offline_cnn_s', PlainCNN, input_shape=OFFLINE_INPUT, widths=(16, 32, 48))
  r('offline_cnn_l', PlainCNN, input_shape=OFFLINE_INPUT, widths=(32, 64, 96))
  r('offline_mixer_s', MlpMixer, input_shape=OFFLINE_INPUT, patch_size=4,
    width=48, depth=2, tokens_mlp_dim=48, channels_mlp_dim=96)
  r('offline_mixer_l', MlpMixer, input_shape=OFFLINE_INPUT, patch_size=4,
    width=96, depth=4, tokens_mlp_dim=64, channels_mlp_dim=192)
  # ResNet comes from fennec_jax.models.resnet (CIFAR stem, BatchNorm).
  res_kw = dict(num_classes=0, block='basic', stem='cifar')
  r('offline_resnet_s', resnet.ResNet, input_shape=OFFLINE_INPUT,
    stage_sizes=(1, 1, 1), width=16, **res_kw)
  r('offline_resnet_l', resnet.ResNet, input_shape=OFFLINE_INPUT,
    stage_sizes=(1, 1, 1), width=24, **res_kw)
  # The proxy: a wider generalist, trained on every single-domain source.
  r('offline_proxy_resnet', resnet.ResNet, input_shape=OFFLINE_INPUT,
    stage_sizes=(2, 2, 2), width=24, **res_kw)
  # ViT comes from fennec_jax.models.vit (one definition); zoo sizes only.
  vit_kw = dict(num_classes=0, pool='avg', class_token=False, patch_size=4)
  r('offline_vit_s', vit.vit, input_shape=OFFLINE_INPUT, width=48, depth=2,
    num_heads=3, mlp_dim=96, **vit_kw)
  r('offline_vit_l', vit.vit, input_shape=OFFLINE_INPUT, width=64, depth=4,
    num_heads=4, mlp_dim=128, **vit_kw)
  # v2 families. ConvNeXt from fennec_jax.models.convnext (patchify stem of 4:
  # 28 -> 7 -> 3 pixels).
  # Sized by measured CPU cost per fine-tune step (7x7 depthwise gradients
  # are slow on XLA:CPU): dims (48, 96) x depths (2, 2) cost 0.21 CPU s.
  r('offline_convnext_s', convnext.ConvNeXt, input_shape=OFFLINE_INPUT,
    depths=(1, 1), dims=(24, 48), num_classes=0)
  r('offline_convnext_l', convnext.ConvNeXt, input_shape=OFFLINE_INPUT,
    depths=(1, 1), dims=(40, 80), num_classes=0)
  # DenseNet-BC from fennec_jax.models.densenet (7x7/2 stem, 3x3/2 max pool:
  # 28 -> 7 px). Not MobileNet: its 3x3 depthwise gradients at 28x28 cost
  # 1.04 CPU s per fine-tune step on XLA:CPU (measured), 50x a plain CNN.
  r('offline_densenet_s', densenet.DenseNet, input_shape=OFFLINE_INPUT,
    growth_rate=12, block_config=(2, 2), num_init_features=16, bn_size=2,
    num_classes=0)
  r('offline_densenet_l', densenet.DenseNet, input_shape=OFFLINE_INPUT,
    growth_rate=16, block_config=(3, 3), num_init_features=24, bn_size=4,
    num_classes=0)


_register()
