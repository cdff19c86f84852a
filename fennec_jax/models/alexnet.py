"""AlexNet with torchvision's structure, names and parameter count.

torchvision flattens the 256x6x6 pooled map in (C, H, W) order; this module
flattens NHWC in (H, W, C) order, so `torchvision_alexnet_to_flax` permutes the
input axis of `classifier.1` accordingly. `num_classes=0` returns the 4096-d
penultimate activations (after `classifier_4` + ReLU), the usual AlexNet
features.
"""

from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from fennec_jax.models import layers
from fennec_jax.models import registry

Dtype = Any

# (out channels, kernel, stride, padding, pool after) of features.0/3/6/8/10.
_CONVS = ((64, 11, 4, 2, True), (192, 5, 1, 2, True), (384, 3, 1, 1, False),
          (256, 3, 1, 1, False), (256, 3, 1, 1, True))
_CONV_INDEX = (0, 3, 6, 8, 10)


class AlexNet(nn.Module):
  """torchvision's AlexNet (the one-tower variant of Krizhevsky's 2014 note).

  Attributes:
    num_classes: classifier outputs; 0 returns the 4096 penultimate features.
    width: channel multiplier of the conv trunk (1.0 for torchvision); hidden
      width of the classifier is `hidden`.
    hidden: classifier hidden width (4096).
    dropout_rate: classifier dropout (train mode only; needs a 'dropout' rng).
    dtype: compute dtype (parameters and output float32).
  """
  num_classes: int = 1000
  width: float = 1.0
  hidden: int = 4096
  dropout_rate: float = 0.5
  dtype: Dtype = jnp.float32

  @property
  def num_features(self) -> int:
    """Width of the features returned with `num_classes=0`."""
    return self.hidden

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    """Logits `[n, num_classes]` (or features `[n, hidden]`), float32."""
    x = x.astype(self.dtype)
    for idx, (c, k, s, p, pool) in zip(_CONV_INDEX, _CONVS):
      x = layers.conv2d(max(1, int(c * self.width)), k, s, p, use_bias=True,
                        dtype=self.dtype, name=f'features_{idx}')(x)
      x = nn.relu(x)
      if pool:
        x = layers.max_pool(x, 3, 2)
    x = layers.adaptive_avg_pool(x, 6)
    x = x.reshape(x.shape[0], -1)
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    x = nn.relu(nn.Dense(self.hidden, dtype=self.dtype,
                         name='classifier_1')(x))
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    x = nn.relu(nn.Dense(self.hidden, dtype=self.dtype,
                         name='classifier_4')(x))
    if self.num_classes:
      x = nn.Dense(self.num_classes, dtype=self.dtype, name='classifier_6')(x)
    return x.astype(jnp.float32)


_torch_names = layers.regex_renamer([(r'_', '.')])


def torchvision_alexnet_to_flax(state_dict: Mapping[str, Any],
                                target: Any) -> dict[str, Any]:
  """Flax variables from a torchvision AlexNet `state_dict()`.

  Args:
    state_dict: the torchvision model's state dict.
    target: flax variables or shapes of the matching `AlexNet`.

  Returns:
    `{'params': ...}` of float32 NumPy arrays.

  Raises:
    ValueError: when keys or shapes do not match.
  """
  state = dict(state_dict)
  key = 'classifier.1.weight'
  if key in state:
    w = state[key]
    if hasattr(w, 'detach'):
      w = w.detach().cpu().numpy()
    w = np.asarray(w, np.float32)
    out_dim, in_dim = w.shape
    c = in_dim // 36
    # (out, C*6*6) in (C, H, W) order -> (out, 6*6*C) in (H, W, C) order.
    state[key] = w.reshape(out_dim, c, 6, 6).transpose(0, 2, 3, 1).reshape(
        out_dim, in_dim)
  return layers.torch_to_flax(state, target, _torch_names,
                              source='torchvision AlexNet state dict')


registry.register_model('alexnet', AlexNet)
registry.register_model('alexnet_tiny', AlexNet, input_shape=(64, 64, 3),
                        width=0.125, hidden=32, num_classes=10)
