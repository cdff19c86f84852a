"""Swin Transformer with timm's structure, names and parameter counts.

Windowed multi-head self-attention with a learned relative-position bias,
alternating with shifted windows (cyclic shift + a -100 attention mask across
regions, as in timm), patch merging between stages, LayerNorm (eps 1e-5),
exact GELU. As in timm, a stage whose feature map is not larger than the
window uses one window of the map's size and no shift, so the attention
geometry (and the bias-table shape) follows the input size at `init`.
Names mirror timm's (`patch_embed/proj`, `layers_1/downsample/reduction`,
`layers_0/blocks_1/attn/relative_position_bias_table`, `norm`, `head_fc`).
"""

from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from fennec_jax.models import layers
from fennec_jax.models import registry

Dtype = Any
_EPS = 1e-5
_init = nn.initializers.truncated_normal(0.02)


def relative_position_index(wh: int, ww: int) -> np.ndarray:
  """[wh*ww, wh*ww] index into the (2wh-1)(2ww-1) bias table (timm's)."""
  coords = np.stack(np.meshgrid(np.arange(wh), np.arange(ww), indexing='ij'))
  flat = coords.reshape(2, -1)
  rel = (flat[:, :, None] - flat[:, None, :]).transpose(1, 2, 0)
  rel[:, :, 0] += wh - 1
  rel[:, :, 1] += ww - 1
  rel[:, :, 0] *= 2 * ww - 1
  return rel.sum(-1)


def shifted_window_mask(h: int, w: int, window: tuple[int, int],
                        shift: tuple[int, int]) -> np.ndarray:
  """[num_windows, N, N] additive mask: -100 between different regions."""
  img = np.zeros((h, w), np.float32)
  cnt = 0
  for hs in ((0, -window[0]), (-window[0], -shift[0]), (-shift[0], None)):
    for ws in ((0, -window[1]), (-window[1], -shift[1]), (-shift[1], None)):
      img[hs[0]:hs[1], ws[0]:ws[1]] = cnt
      cnt += 1
  win = img.reshape(h // window[0], window[0], w // window[1], window[1])
  win = win.transpose(0, 2, 1, 3).reshape(-1, window[0] * window[1])
  diff = win[:, None, :] - win[:, :, None]
  return np.where(diff != 0, -100.0, 0.0).astype(np.float32)


def window_partition(x: jax.Array, window: tuple[int, int]) -> jax.Array:
  """[B, H, W, C] -> [B * nW, wh * ww, C], windows in row-major order."""
  b, h, w, c = x.shape
  x = x.reshape(b, h // window[0], window[0], w // window[1], window[1], c)
  return x.transpose(0, 1, 3, 2, 4, 5).reshape(-1, window[0] * window[1], c)


def window_reverse(x: jax.Array, window: tuple[int, int], h: int,
                   w: int) -> jax.Array:
  """Inverse of `window_partition`."""
  c = x.shape[-1]
  x = x.reshape(-1, h // window[0], w // window[1], window[0], window[1], c)
  return x.transpose(0, 1, 3, 2, 4, 5).reshape(-1, h, w, c)


class WindowAttention(nn.Module):
  """Multi-head attention inside windows with relative-position bias."""
  dim: int
  num_heads: int
  window: tuple[int, int]
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, mask: np.ndarray | None) -> jax.Array:
    bw, n, _ = x.shape
    head_dim = self.dim // self.num_heads
    wh, ww = self.window
    table = self.param('relative_position_bias_table', _init,
                       ((2 * wh - 1) * (2 * ww - 1), self.num_heads),
                       jnp.float32)
    index = relative_position_index(wh, ww).reshape(-1)
    bias = table[index].reshape(n, n, self.num_heads).transpose(2, 0, 1)
    bias = bias[None]  # [1, heads, N, N]
    if mask is not None:
      nw = mask.shape[0]
      bias = (bias[None] + jnp.asarray(mask)[None, :, None]).reshape(
          1, nw, self.num_heads, n, n)
      bias = jnp.broadcast_to(bias, (bw // nw, nw, self.num_heads, n, n))
      bias = bias.reshape(bw, self.num_heads, n, n)
    qkv = nn.Dense(3 * self.dim, dtype=self.dtype, kernel_init=_init,
                   name='qkv')(x)
    qkv = qkv.reshape(bw, n, 3, self.num_heads, head_dim)
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
    out = jax.nn.dot_product_attention(q, k, v, bias=bias.astype(q.dtype))
    out = out.reshape(bw, n, self.dim)
    return nn.Dense(self.dim, dtype=self.dtype, kernel_init=_init,
                    name='proj')(out)


class MLP(nn.Module):
  """fc1 -> exact GELU -> fc2 (timm's `Mlp`)."""
  hidden: int
  out: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = nn.Dense(self.hidden, dtype=self.dtype, kernel_init=_init,
                 name='fc1')(x)
    x = nn.gelu(x, approximate=False)
    return nn.Dense(self.out, dtype=self.dtype, kernel_init=_init,
                    name='fc2')(x)


class SwinBlock(nn.Module):
  """(Shifted-)window attention and MLP, each pre-norm with a residual."""
  dim: int
  num_heads: int
  window_size: int
  shifted: bool
  mlp_ratio: float = 4.0
  drop_path: float = 0.0
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    b, h, w, c = x.shape
    # timm: a map no larger than the window gets one window and no shift.
    window = tuple(min(r, self.window_size) for r in (h, w))
    shift = tuple(0 if r <= self.window_size or not self.shifted
                  else self.window_size // 2 for r in (h, w))
    shortcut = x
    y = layers.layer_norm(_EPS, self.dtype, name='norm1')(x)
    if any(shift):
      y = jnp.roll(y, (-shift[0], -shift[1]), axis=(1, 2))
    pad_h = (window[0] - h % window[0]) % window[0]
    pad_w = (window[1] - w % window[1]) % window[1]
    y = jnp.pad(y, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)))
    hp, wp = h + pad_h, w + pad_w
    mask = shifted_window_mask(hp, wp, window, shift) if any(shift) else None
    y = WindowAttention(c, self.num_heads, window, dtype=self.dtype,
                        name='attn')(window_partition(y, window), mask)
    y = window_reverse(y, window, hp, wp)[:, :h, :w, :]
    if any(shift):
      y = jnp.roll(y, shift, axis=(1, 2))
    x = shortcut + layers.DropPath(self.drop_path)(y, deterministic=not train)
    y = layers.layer_norm(_EPS, self.dtype, name='norm2')(x)
    y = MLP(int(c * self.mlp_ratio), c, dtype=self.dtype, name='mlp')(y)
    return x + layers.DropPath(self.drop_path)(y, deterministic=not train)


class PatchMerging(nn.Module):
  """2x2 neighbourhood concat (timm's order) -> LN -> linear 4C -> out_dim."""
  out_dim: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    b, h, w, c = x.shape
    x = jnp.pad(x, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)))
    h, w = h + h % 2, w + w % 2
    x = x.reshape(b, h // 2, 2, w // 2, 2, c).transpose(0, 1, 3, 4, 2, 5)
    x = x.reshape(b, h // 2, w // 2, 4 * c)
    x = layers.layer_norm(_EPS, self.dtype, name='norm')(x)
    return nn.Dense(self.out_dim, use_bias=False, dtype=self.dtype,
                    kernel_init=_init, name='reduction')(x)


class SwinStage(nn.Module):
  """Optional patch merging, then blocks alternating plain/shifted windows."""
  dim: int
  depth: int
  num_heads: int
  window_size: int
  downsample: bool
  drop_paths: Sequence[float]
  mlp_ratio: float = 4.0
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    if self.downsample:
      x = PatchMerging(self.dim, dtype=self.dtype, name='downsample')(x)
    for j in range(self.depth):
      x = SwinBlock(self.dim, self.num_heads, self.window_size, j % 2 == 1,
                    self.mlp_ratio, self.drop_paths[j], dtype=self.dtype,
                    name=f'blocks_{j}')(x, train)
    return x


class PatchEmbed(nn.Module):
  """Non-overlapping patch conv + LayerNorm (timm's `PatchEmbed`)."""
  patch_size: int
  embed_dim: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = layers.conv2d(self.embed_dim, self.patch_size, self.patch_size,
                      use_bias=True, dtype=self.dtype, name='proj',
                      kernel_init=_init)(x)
    return layers.layer_norm(_EPS, self.dtype, name='norm')(x)


class SwinTransformer(nn.Module):
  """timm's SwinTransformer (v1).

  Attributes:
    patch_size: patch side of the embedding conv.
    embed_dim: channels of the first stage (doubling per stage).
    depths: blocks per stage.
    num_heads: attention heads per stage.
    window_size: attention window side.
    mlp_ratio: MLP hidden width over the block width.
    num_classes: classifier outputs; 0 returns the pooled, normalized
      features of width `embed_dim * 2**(len(depths)-1)`.
    drop_path_rate: stochastic depth at the last block (timm's default 0.1;
      train mode only, needs a 'dropout' rng).
    dtype: compute dtype (parameters and output float32).
  """
  patch_size: int = 4
  embed_dim: int = 96
  depths: Sequence[int] = (2, 2, 6, 2)
  num_heads: Sequence[int] = (3, 6, 12, 24)
  window_size: int = 7
  mlp_ratio: float = 4.0
  num_classes: int = 1000
  drop_path_rate: float = 0.1
  dtype: Dtype = jnp.float32

  @property
  def num_features(self) -> int:
    """Width of the pooled features."""
    return self.embed_dim * 2 ** (len(self.depths) - 1)

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    """Logits `[n, num_classes]` (or features `[n, num_features]`), float32."""
    if len(self.depths) != len(self.num_heads) or not self.depths:
      raise ValueError(f'Swin depths={tuple(self.depths)} and num_heads='
                       f'{tuple(self.num_heads)} must be non-empty and of '
                       'equal length.')
    if x.shape[1] % self.patch_size or x.shape[2] % self.patch_size:
      raise ValueError(f'Swin input {x.shape[1]}x{x.shape[2]} is not divisible'
                       f' by patch_size={self.patch_size}.')
    x = x.astype(self.dtype)
    x = PatchEmbed(self.patch_size, self.embed_dim, dtype=self.dtype,
                   name='patch_embed')(x)
    rates = layers.drop_path_rates(self.drop_path_rate, self.depths)
    for i, (depth, heads) in enumerate(zip(self.depths, self.num_heads)):
      x = SwinStage(self.embed_dim * 2 ** i, depth, heads, self.window_size,
                    i > 0, rates[i], self.mlp_ratio, dtype=self.dtype,
                    name=f'layers_{i}')(x, train)
    x = layers.layer_norm(_EPS, self.dtype, name='norm')(x)
    x = layers.global_avg_pool(x)
    if self.num_classes:
      x = nn.Dense(self.num_classes, dtype=self.dtype, kernel_init=_init,
                   name='head_fc')(x.astype(self.dtype))
    return x.astype(jnp.float32)


_torch_names = layers.regex_renamer([
    (r'(layers|blocks)_(\d+)', r'\1.\2'),
    (r'^head_fc$', 'head.fc'),
])


def timm_swin_to_flax(state_dict: Mapping[str, Any],
                      target: Any) -> dict[str, Any]:
  """Flax variables from a timm SwinTransformer `state_dict()`.

  Buffers (`relative_position_index`, `attn_mask`) are recomputed, not read.

  Args:
    state_dict: the timm model's state dict.
    target: flax variables or shapes of the matching `SwinTransformer` (built
      for the same input size: window clipping changes the bias-table shape).

  Returns:
    `{'params': ...}` of float32 NumPy arrays.

  Raises:
    ValueError: when keys or shapes do not match.
  """
  return layers.torch_to_flax(state_dict, target, _torch_names,
                              source='timm Swin state dict')


registry.register_model('swin_tiny_patch4_window7_224', SwinTransformer,
                        embed_dim=96, depths=(2, 2, 6, 2),
                        num_heads=(3, 6, 12, 24))
registry.register_model('swin_small_patch4_window7_224', SwinTransformer,
                        embed_dim=96, depths=(2, 2, 18, 2),
                        num_heads=(3, 6, 12, 24))
registry.register_model('swin_test', SwinTransformer, input_shape=(32, 32, 3),
                        patch_size=2, embed_dim=8, depths=(2, 2),
                        num_heads=(1, 2), window_size=4, num_classes=10)
