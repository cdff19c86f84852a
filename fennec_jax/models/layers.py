"""PyTorch-compatible building blocks shared by the CNN/hierarchical models.

Weights imported from torchvision or timm only reproduce the PyTorch features
when every layer computes exactly what PyTorch computes: symmetric explicit
padding (flax's 'SAME' pads asymmetrically for stride 2), max-pooling that pads
with -inf and honours `ceil_mode`, average pooling that counts the padding,
BatchNorm with PyTorch's epsilon and its unbiased running-variance update. This
module holds those layers and a generic state-dict converter
(`torch_to_flax`) that the per-architecture converters configure with a name
mapping.
"""

import math
import re
from typing import Any, Callable, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Dtype = Any
IntPair = int | Sequence[int]

# torchvision's CNNs initialize convolutions with kaiming_normal(fan_out).
kaiming_fan_out = nn.initializers.variance_scaling(2.0, 'fan_out', 'normal')


def _pair(v: IntPair) -> tuple[int, int]:
  if isinstance(v, int):
    return (v, v)
  a, b = v
  return (int(a), int(b))


def conv2d(features: int, kernel_size: IntPair, stride: IntPair = 1,
           padding: IntPair = 0, groups: int = 1, use_bias: bool = False,
           dtype: Dtype = jnp.float32, name: str | None = None,
           kernel_init: Callable[..., Any] = kaiming_fan_out) -> nn.Conv:
  """An `nn.Conv` that pads like `torch.nn.Conv2d` (symmetric, explicit).

  Args:
    features: output channels.
    kernel_size: int or (kh, kw).
    stride: int or (sh, sw).
    padding: int or (ph, pw), applied on both sides as in PyTorch.
    groups: `feature_group_count` (PyTorch `groups`).
    use_bias: whether the conv has a bias.
    dtype: compute dtype (parameters stay float32).
    name: module name (mirrors the PyTorch attribute name).
    kernel_init: kernel initializer.

  Returns:
    The configured `nn.Conv` module.
  """
  ph, pw = _pair(padding)
  return nn.Conv(features, _pair(kernel_size), strides=_pair(stride),
                 padding=((ph, ph), (pw, pw)), feature_group_count=groups,
                 use_bias=use_bias, dtype=dtype, kernel_init=kernel_init,
                 name=name)


class BatchNorm(nn.Module):
  """`torch.nn.BatchNorm2d` semantics over the last (channel) axis.

  Normalizes with the biased batch variance in training and updates the
  running variance with the unbiased one (PyTorch does this; flax's
  `nn.BatchNorm` uses the biased variance for both). Statistics are computed in
  float32 whatever the compute dtype.

  Attributes:
    momentum: weight of the old running statistics (flax convention; PyTorch's
      default momentum 0.1 is 0.9 here).
    epsilon: added to the variance (PyTorch default 1e-5).
    dtype: output dtype.
  """
  momentum: float = 0.9
  epsilon: float = 1e-5
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    c = x.shape[-1]
    scale = self.param('scale', nn.initializers.ones, (c,), jnp.float32)
    bias = self.param('bias', nn.initializers.zeros, (c,), jnp.float32)
    ra_mean = self.variable('batch_stats', 'mean',
                            lambda: jnp.zeros((c,), jnp.float32))
    ra_var = self.variable('batch_stats', 'var',
                           lambda: jnp.ones((c,), jnp.float32))
    xf = x.astype(jnp.float32)
    if train:
      axes = tuple(range(x.ndim - 1))
      mean = jnp.mean(xf, axes)
      var = jnp.mean(jnp.square(xf - mean), axes)
      if not self.is_initializing():
        n = xf.size // c
        unbiased = var * (n / max(n - 1, 1))
        m = self.momentum
        ra_mean.value = m * ra_mean.value + (1.0 - m) * mean
        ra_var.value = m * ra_var.value + (1.0 - m) * unbiased
    else:
      mean, var = ra_mean.value, ra_var.value
    mul = scale * jax.lax.rsqrt(var + self.epsilon)
    return ((xf - mean) * mul + bias).astype(self.dtype)


def _pool_padding(size: int, k: int, s: int, p: int,
                  ceil_mode: bool) -> tuple[int, int]:
  """(left, right) padding reproducing PyTorch's output size rule."""
  if ceil_mode:
    out = math.ceil((size + 2 * p - k) / s) + 1
    # PyTorch: the last window must start inside the input or left padding.
    if (out - 1) * s >= size + p:
      out -= 1
  else:
    out = (size + 2 * p - k) // s + 1
  right = max((out - 1) * s + k - size - p, 0)
  return (p, right)


def max_pool(x: jax.Array, kernel_size: IntPair, stride: IntPair | None = None,
             padding: IntPair = 0, ceil_mode: bool = False) -> jax.Array:
  """`torch.nn.MaxPool2d` on NHWC input (padding counts as -inf)."""
  k = _pair(kernel_size)
  s = _pair(stride if stride is not None else kernel_size)
  p = _pair(padding)
  pads = tuple(_pool_padding(x.shape[1 + i], k[i], s[i], p[i], ceil_mode)
               for i in range(2))
  return nn.max_pool(x, k, strides=s, padding=pads)


def avg_pool(x: jax.Array, kernel_size: IntPair, stride: IntPair | None = None,
             padding: IntPair = 0, ceil_mode: bool = False) -> jax.Array:
  """`torch.nn.AvgPool2d` (count_include_pad=True) on NHWC input."""
  k = _pair(kernel_size)
  s = _pair(stride if stride is not None else kernel_size)
  p = _pair(padding)
  if ceil_mode:
    raise ValueError('avg_pool: ceil_mode=True is not supported (no model in '
                     'this package needs it).')
  pads = ((p[0], p[0]), (p[1], p[1]))
  return nn.avg_pool(x, k, strides=s, padding=pads, count_include_pad=True)


def adaptive_avg_pool(x: jax.Array, output_size: IntPair) -> jax.Array:
  """`torch.nn.AdaptiveAvgPool2d` on NHWC input (PyTorch's bin edges)."""
  oh, ow = _pair(output_size)
  h, w = x.shape[1], x.shape[2]
  if (h, w) == (oh, ow):
    return x
  rows = []
  for i in range(oh):
    h0, h1 = (i * h) // oh, -(-((i + 1) * h) // oh)
    cols = []
    for j in range(ow):
      w0, w1 = (j * w) // ow, -(-((j + 1) * w) // ow)
      cols.append(jnp.mean(x[:, h0:h1, w0:w1, :], axis=(1, 2)))
    rows.append(jnp.stack(cols, axis=1))
  return jnp.stack(rows, axis=1)


def global_avg_pool(x: jax.Array) -> jax.Array:
  """Mean over the spatial axes of NHWC input, computed in float32."""
  return jnp.mean(x.astype(jnp.float32), axis=(1, 2))


# ---------------------------------------------------------------------------
# Weight import.

_LEAF_TO_TORCH = {
    'kernel': 'weight',
    'scale': 'weight',
    'embedding': 'weight',
    'bias': 'bias',
    'mean': 'running_mean',
    'var': 'running_var',
}

# PyTorch buffers that have no flax counterpart and are not weights.
_IGNORED_TORCH_SUFFIXES = ('num_batches_tracked', 'relative_position_index',
                           'attn_mask')


def _to_numpy(value: Any) -> np.ndarray:
  if hasattr(value, 'detach'):  # a torch.Tensor, without importing torch
    value = value.detach().cpu().numpy()
  return np.asarray(value, dtype=np.float32)


def torch_to_flax(state_dict: Mapping[str, Any], target: Any,
                  module_to_torch: Callable[[tuple[str, ...]], str],
                  leaf_to_torch: Mapping[str, str] | None = None,
                  source: str = 'state dict') -> dict[str, Any]:
  """Converts a PyTorch state dict into flax variables shaped like `target`.

  Every leaf of `target` is looked up under
  `module_to_torch(module_path) + '.' + leaf_to_torch[leaf_name]`; conv kernels
  are transposed OIHW -> HWIO and linear kernels (out, in) -> (in, out).

  Args:
    state_dict: name -> tensor (torch tensors or arrays).
    target: the flax variables (arrays or `jax.ShapeDtypeStruct`s), e.g. from
      `registry.init_shapes`.
    module_to_torch: maps a flax module path (tuple of names) to the PyTorch
      module prefix.
    leaf_to_torch: overrides of the leaf-name map (default: kernel/scale ->
      weight, mean -> running_mean, var -> running_var; other names as is).
    source: what the state dict is, for error messages.

  Returns:
    Nested dict of float32 NumPy arrays with the structure of `target`.

  Raises:
    ValueError: listing the first missing, unexpected and mis-shaped keys when
      the state dict does not fit the architecture.
  """
  leaf_map = {**_LEAF_TO_TORCH, **(leaf_to_torch or {})}
  flat = jax.tree_util.tree_flatten_with_path(target)[0]
  used, missing, misshaped = set(), [], []
  out: dict[str, Any] = {}
  for path, leaf in flat:
    names = tuple(getattr(k, 'key', str(k)) for k in path)
    collection, modules, leaf_name = names[0], names[1:-1], names[-1]
    prefix = module_to_torch(modules)
    tname = leaf_map.get(leaf_name, leaf_name)
    key = f'{prefix}.{tname}' if prefix else tname
    if key not in state_dict:
      missing.append(f'{key} (for {"/".join(names)})')
      continue
    used.add(key)
    value = _to_numpy(state_dict[key])
    if leaf_name == 'kernel' and value.ndim == 4:
      value = value.transpose(2, 3, 1, 0)
    elif leaf_name == 'kernel' and value.ndim == 2:
      value = value.T
    if tuple(value.shape) != tuple(leaf.shape):
      misshaped.append(f'{key}: got {tuple(value.shape)} after transposing, '
                       f'expected {tuple(leaf.shape)}')
      continue
    node = out.setdefault(collection, {})
    for m in modules:
      node = node.setdefault(m, {})
    node[leaf_name] = value
  unexpected = [k for k in state_dict if k not in used
                and not k.endswith(_IGNORED_TORCH_SUFFIXES)]
  if missing or unexpected or misshaped:
    def first(items):
      return ', '.join(items[:5]) + (f' (+{len(items) - 5} more)'
                                     if len(items) > 5 else '')
    raise ValueError(
        f'{source} does not match the architecture: '
        f'{len(missing)} missing [{first(missing)}]; '
        f'{len(unexpected)} unexpected [{first(unexpected)}]; '
        f'{len(misshaped)} mis-shaped [{first(misshaped)}].')
  return out


def regex_renamer(rules: Sequence[tuple[str, str]]
                  ) -> Callable[[tuple[str, ...]], str]:
  """A `module_to_torch` that joins the path with '.' then applies `rules`.

  Args:
    rules: `(pattern, replacement)` pairs applied in order with `re.sub`.

  Returns:
    Function mapping a flax module path to a PyTorch module prefix.
  """
  compiled = [(re.compile(p), r) for p, r in rules]

  def rename(modules: tuple[str, ...]) -> str:
    name = '.'.join(modules)
    for pattern, repl in compiled:
      name = pattern.sub(repl, name)
    return name

  return rename


def layer_norm(epsilon: float, dtype: Dtype = jnp.float32,
               name: str | None = None) -> nn.LayerNorm:
  """`torch.nn.LayerNorm` over the last axis (two-pass variance, float32)."""
  return nn.LayerNorm(epsilon=epsilon, dtype=dtype, use_fast_variance=False,
                      name=name)


def drop_path_rates(rate: float, depths: Sequence[int]) -> list[list[float]]:
  """timm's stochastic-depth schedule: linear 0 -> `rate` over all blocks."""
  flat = np.linspace(0.0, rate, sum(depths)).tolist() if sum(depths) else []
  out, start = [], 0
  for d in depths:
    out.append(flat[start:start + d])
    start += d
  return out


class DropPath(nn.Module):
  """Stochastic depth per sample (timm's `DropPath`, scaled by 1/keep).

  Active only with `deterministic=False` and `rate > 0`; then it needs the
  'dropout' rng.
  """
  rate: float = 0.0

  @nn.compact
  def __call__(self, x: jax.Array, deterministic: bool = True) -> jax.Array:
    if deterministic or self.rate == 0.0:
      return x
    keep = 1.0 - self.rate
    mask = jax.random.bernoulli(self.make_rng('dropout'), keep,
                                (x.shape[0],) + (1,) * (x.ndim - 1))
    return jnp.where(mask, x / keep, jnp.zeros_like(x))


def random_variables(shapes: Any, seed: int = 0) -> Any:
  """Host-side random variables shaped like `shapes` (no model init compiled).

  Compiling a model's `init` costs more than a forward pass on a CPU (every
  initializer is traced); benchmarks and tests that only need sensible
  weights use this instead: fan-in-scaled normal kernels, small biases,
  scales near 1, BatchNorm running means near 0 and variances in [0.5, 1.5].

  Args:
    shapes: a variables tree of arrays or `jax.ShapeDtypeStruct`s (e.g. from
      `registry.init_shapes`).
    seed: NumPy seed.

  Returns:
    The same tree with float32 NumPy arrays.
  """
  rng = np.random.default_rng(seed)

  def make(path, leaf):
    name = getattr(path[-1], 'key', str(path[-1]))
    shape = tuple(leaf.shape)
    if name == 'var':
      return rng.uniform(0.5, 1.5, shape).astype(np.float32)
    if name == 'scale':
      return rng.uniform(0.5, 1.5, shape).astype(np.float32)
    if name == 'kernel' and len(shape) >= 2:
      fan_in = int(np.prod(shape[:-1]))
      return (rng.standard_normal(shape) / np.sqrt(fan_in)).astype(np.float32)
    return (0.1 * rng.standard_normal(shape)).astype(np.float32)

  return jax.tree_util.tree_map_with_path(make, shapes)
