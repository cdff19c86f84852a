"""Vision Transformer family: ViT, DeiT, the CLIP image tower and DINOv2.

One pre-norm transformer definition (`VisionTransformer`); the variants are
configuration:

* timm / DeiT ViT: patch conv with bias, class token, GELU (exact erf), final
  LayerNorm before pooling (`pool='token'`) or after it (`pool='avg'`, timm's
  `fc_norm`), LayerNorm eps 1e-6.
* CLIP image tower (OpenAI, as in transformers' `CLIPVisionModelWithProjection`
  and open_clip): bias-free patch conv, `ln_pre` before the blocks, quick-GELU,
  LayerNorm eps 1e-5, the class token normalized after pooling and projected
  without bias to 512 / 768 dimensions (`proj_dim`).
* DINOv2: LayerScale on both residual branches, patch 14, 518 px position grid.

Module names follow timm (`patch_embed`, `blocks_{i}`, `attn.qkv`, `mlp.fc1`,
`norm`, `fc_norm`, `head`), so weight import (`fennec_jax.proxy.weights`) is a
plain key map. Attention uses one fused QKV projection and
`jax.nn.dot_product_attention` on `[batch, tokens, heads, head_dim]` arrays (no
transposes), with `attention_impl='cudnn'` selecting the fused cuDNN kernel on
GPU. `dtype` is the compute dtype (e.g. bfloat16); parameters stay float32, and
LayerNorm statistics and the attention softmax are computed in float32.
"""

import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from fennec_jax.models import registry

Dtype = Any

# (width, depth, num_heads) of the named sizes (big_vision / timm naming).
_SIZES = {
    'Ti': (192, 12, 3),
    'S': (384, 12, 6),
    'M': (512, 12, 8),
    'B': (768, 12, 12),
    'L': (1024, 24, 16),
    'H': (1280, 32, 16),
    'g': (1536, 40, 24),
}


def decode_variant(variant: str) -> dict[str, int]:
  """Parses a big_vision style variant such as `'B/16'` into model fields.

  Args:
    variant: `'<size>/<patch>'` with size one of Ti, S, M, B, L, H, g.

  Returns:
    A dict with `width`, `depth`, `num_heads` and `patch_size`.

  Raises:
    ValueError: the variant is malformed or the size unknown.
  """
  size, sep, patch = variant.partition('/')
  if not sep or size not in _SIZES or not patch.isdigit():
    raise ValueError(
        f'Bad ViT variant {variant!r}; expected "<size>/<patch>" with size in '
        f'{sorted(_SIZES)} and an integer patch, e.g. "B/16".')
  width, depth, num_heads = _SIZES[size]
  return dict(width=width, depth=depth, num_heads=num_heads,
              patch_size=int(patch))


def quick_gelu(x: jax.Array) -> jax.Array:
  """OpenAI CLIP's GELU approximation `x * sigmoid(1.702 x)`."""
  return x * jax.nn.sigmoid(1.702 * x)


_ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    # timm and transformers' ViT use the exact erf GELU (flax defaults to tanh).
    'gelu': functools.partial(nn.gelu, approximate=False),
    'gelu_tanh': functools.partial(nn.gelu, approximate=True),
    'quick_gelu': quick_gelu,
}


class LayerScale(nn.Module):
  """Per-channel residual-branch scale (CaiT / DINOv2), parameter `gamma`."""
  init_value: float = 1e-5

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    gamma = self.param('gamma', nn.initializers.constant(self.init_value),
                       (x.shape[-1],), jnp.float32)
    return x * gamma.astype(x.dtype)


class Attention(nn.Module):
  """Multi-head self-attention with a fused QKV projection."""
  num_heads: int
  dtype: Dtype = jnp.float32
  attention_impl: str | None = None

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    b, n, d = x.shape
    if d % self.num_heads:
      raise ValueError(f'width {d} is not divisible by num_heads '
                       f'{self.num_heads}.')
    head_dim = d // self.num_heads
    qkv = nn.Dense(3 * d, dtype=self.dtype, name='qkv')(x)
    # timm's qkv output is ordered [3, heads, head_dim]; keep that order so
    # imported weights need no permutation.
    qkv = qkv.reshape(b, n, 3, self.num_heads, head_dim)
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
    out = jax.nn.dot_product_attention(q, k, v,
                                       implementation=self.attention_impl)
    out = out.reshape(b, n, d)
    return nn.Dense(d, dtype=self.dtype, name='proj')(out)


class Mlp(nn.Module):
  """Two-layer transformer MLP."""
  hidden_dim: int
  activation: str = 'gelu'
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    d = x.shape[-1]
    x = nn.Dense(self.hidden_dim, dtype=self.dtype, name='fc1')(x)
    x = _ACTIVATIONS[self.activation](x)
    return nn.Dense(d, dtype=self.dtype, name='fc2')(x)


class Block(nn.Module):
  """Pre-norm transformer block: `x + attn(ln(x))`, `x + mlp(ln(x))`."""
  num_heads: int
  mlp_dim: int
  activation: str = 'gelu'
  layer_norm_eps: float = 1e-6
  layer_scale: float | None = None
  dtype: Dtype = jnp.float32
  attention_impl: str | None = None

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    ln = functools.partial(nn.LayerNorm, epsilon=self.layer_norm_eps,
                           dtype=self.dtype)
    y = Attention(self.num_heads, dtype=self.dtype,
                  attention_impl=self.attention_impl, name='attn')(
                      ln(name='norm1')(x))
    if self.layer_scale is not None:
      y = LayerScale(self.layer_scale, name='ls1')(y)
    x = x + y
    y = Mlp(self.mlp_dim, self.activation, dtype=self.dtype, name='mlp')(
        ln(name='norm2')(x))
    if self.layer_scale is not None:
      y = LayerScale(self.layer_scale, name='ls2')(y)
    return x + y


class VisionTransformer(nn.Module):
  """Pre-norm Vision Transformer (timm's `VisionTransformer` semantics).

  Attributes:
    num_classes: classifier outputs; 0 returns the pooled (and, with
      `proj_dim`, projected) features.
    patch_size: square patch side.
    width: token dimension.
    depth: number of blocks.
    num_heads: attention heads.
    mlp_dim: MLP hidden size (default `4 * width`).
    pool: `'token'` (class token) or `'avg'` (mean of the patch tokens).
    class_token: whether a class token is prepended.
    fc_norm: normalize after pooling instead of before (default: `pool ==
      'avg'`, as timm; CLIP sets it with `pool='token'`).
    pre_norm: LayerNorm on the tokens before the blocks (CLIP's `ln_pre`).
    patch_bias: whether the patch projection has a bias (not in CLIP).
    proj_dim: bias-free projection of the pooled feature (CLIP), or None.
    activation: `'gelu'` (exact), `'gelu_tanh'` or `'quick_gelu'`.
    layer_norm_eps: LayerNorm epsilon (timm 1e-6, CLIP 1e-5).
    layer_scale: LayerScale init value (DINOv2) or None.
    dtype: compute dtype; parameters are float32, features are returned as
      float32.
    attention_impl: `jax.nn.dot_product_attention` implementation: None (XLA)
      or `'cudnn'` (fused kernel, GPU, bf16/fp16 only).
  """
  num_classes: int = 1000
  patch_size: int = 16
  width: int = 768
  depth: int = 12
  num_heads: int = 12
  mlp_dim: int | None = None
  pool: str = 'token'
  class_token: bool = True
  fc_norm: bool | None = None
  pre_norm: bool = False
  patch_bias: bool = True
  proj_dim: int | None = None
  activation: str = 'gelu'
  layer_norm_eps: float = 1e-6
  layer_scale: float | None = None
  dtype: Dtype = jnp.float32
  attention_impl: str | None = None

  def _check(self) -> None:
    if self.pool not in ('token', 'avg'):
      raise ValueError(f"pool must be 'token' or 'avg', got {self.pool!r}.")
    if self.pool == 'token' and not self.class_token:
      raise ValueError("pool='token' needs class_token=True.")
    if self.activation not in _ACTIVATIONS:
      raise ValueError(f'Unknown activation {self.activation!r}; valid: '
                       f'{sorted(_ACTIVATIONS)}.')

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    """Maps NHWC images `[b, h, w, c]` to logits or features `[b, d]`."""
    del train  # No dropout / stochastic depth: the models are used frozen.
    self._check()
    if x.ndim != 4:
      raise ValueError(f'Expected NHWC images [b, h, w, c], got shape '
                       f'{x.shape}.')
    b, h, w, _ = x.shape
    p = self.patch_size
    if h % p or w % p:
      raise ValueError(f'Image size {h}x{w} is not a multiple of the patch '
                       f'size {p}.')
    x = nn.Conv(self.width, (p, p), strides=(p, p), padding='VALID',
                use_bias=self.patch_bias, dtype=self.dtype,
                name='patch_embed')(x.astype(self.dtype))
    x = x.reshape(b, -1, self.width)
    num_prefix = 0
    if self.class_token:
      cls = self.param('cls_token', nn.initializers.normal(1e-6),
                       (1, 1, self.width), jnp.float32)
      cls = jnp.broadcast_to(cls.astype(self.dtype), (b, 1, self.width))
      x = jnp.concatenate([cls, x], axis=1)
      num_prefix = 1
    pos = self.param('pos_embed', nn.initializers.normal(0.02),
                     (1, x.shape[1], self.width), jnp.float32)
    x = x + pos.astype(self.dtype)
    ln = functools.partial(nn.LayerNorm, epsilon=self.layer_norm_eps,
                           dtype=self.dtype)
    if self.pre_norm:
      x = ln(name='norm_pre')(x)
    for i in range(self.depth):
      x = Block(num_heads=self.num_heads,
                mlp_dim=self.mlp_dim or 4 * self.width,
                activation=self.activation,
                layer_norm_eps=self.layer_norm_eps,
                layer_scale=self.layer_scale, dtype=self.dtype,
                attention_impl=self.attention_impl, name=f'blocks_{i}')(x)
    fc_norm = self.pool == 'avg' if self.fc_norm is None else self.fc_norm
    if not fc_norm:
      x = ln(name='norm')(x)
    if self.pool == 'token':
      x = x[:, 0]
    else:
      x = jnp.mean(x[:, num_prefix:], axis=1)
    if fc_norm:
      x = ln(name='fc_norm')(x)
    if self.proj_dim is not None:
      x = nn.Dense(self.proj_dim, use_bias=False, dtype=self.dtype,
                   name='proj')(x)
    if self.num_classes:
      x = nn.Dense(self.num_classes, dtype=self.dtype, name='head')(x)
    return x.astype(jnp.float32)


def vit(variant: str | None = None, **kwargs: Any) -> VisionTransformer:
  """Builds a `VisionTransformer` from a variant string plus field overrides.

  Args:
    variant: e.g. `'B/16'` (see `decode_variant`); None uses only `kwargs`.
    **kwargs: any `VisionTransformer` field, overriding the variant.

  Returns:
    The (unbound) linen module.
  """
  fields = decode_variant(variant) if variant else {}
  return VisionTransformer(**{**fields, **kwargs})


# CLIP image towers (OpenAI layout). num_classes=0: features are image_embeds.
CLIP_DEFAULTS = dict(num_classes=0, pool='token', fc_norm=True, pre_norm=True,
                     patch_bias=False, activation='quick_gelu',
                     layer_norm_eps=1e-5)
# DINOv2 (timm's vit_*_patch14_dinov2: 518 px grid, LayerScale 1e-5).
DINOV2_DEFAULTS = dict(layer_scale=1e-5, layer_norm_eps=1e-6)


def _register() -> None:
  """Registers the ViT names (timm counts are asserted in tests)."""
  r = registry.register_model
  for name, variant in [('vit_tiny_patch16_224', 'Ti/16'),
                        ('vit_small_patch16_224', 'S/16'),
                        ('vit_base_patch16_224', 'B/16'),
                        ('vit_base_patch32_224', 'B/32'),
                        ('vit_large_patch16_224', 'L/16'),
                        ('deit_tiny_patch16_224', 'Ti/16'),
                        ('deit_small_patch16_224', 'S/16'),
                        ('deit_base_patch16_224', 'B/16')]:
    r(name, vit, variant=variant)
  r('clip_vit_b32', vit, variant='B/32', proj_dim=512, **CLIP_DEFAULTS)
  r('clip_vit_b16', vit, variant='B/16', proj_dim=512, **CLIP_DEFAULTS)
  r('clip_vit_l14', vit, variant='L/14', proj_dim=768, **CLIP_DEFAULTS)
  r('dinov2_vit_s14', vit, input_shape=(518, 518, 3), variant='S/14',
    num_classes=0, **DINOV2_DEFAULTS)
  r('dinov2_vit_b14', vit, input_shape=(518, 518, 3), variant='B/14',
    num_classes=0, **DINOV2_DEFAULTS)
  # Tiny variants for tests and CPU demos (32x32 input, width 32, depth 2).
  tiny = dict(patch_size=8, width=32, depth=2, num_heads=2)
  r('vit_test_tiny', vit, input_shape=(32, 32, 3), num_classes=10, **tiny)
  r('vit_test_tiny_avg', vit, input_shape=(32, 32, 3), num_classes=10,
    pool='avg', **tiny)
  r('clip_test_tiny', vit, input_shape=(32, 32, 3), proj_dim=16,
    **{**CLIP_DEFAULTS, **tiny})
  r('dinov2_test_tiny', vit, input_shape=(28, 28, 3), num_classes=0,
    **{**DINOV2_DEFAULTS, **tiny, 'patch_size': 7})


_register()
