"""Name registry of Flax (linen) architectures.

Every architecture is defined once and registered under the names people know
from torchvision and timm (`resnet50`, `vit_base_patch16_224`, ...). The same
module serves tracing (archi2vec), the proxy, the offline zoo and weight import.
Convention (timm's): `num_classes=0` drops the head and returns pooled features.
"""

import dataclasses
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """How to build one named architecture.

  Attributes:
    name: registry name.
    factory: `factory(**kwargs) -> nn.Module`.
    input_shape: default input `(height, width, channels)`, NHWC without batch.
    defaults: default keyword arguments passed to `factory`.
  """
  name: str
  factory: Callable[..., nn.Module]
  input_shape: tuple[int, int, int] = (224, 224, 3)
  defaults: dict[str, Any] = dataclasses.field(default_factory=dict)


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(name: str, factory: Callable[..., nn.Module], *,
                   input_shape: tuple[int, int, int] = (224, 224, 3),
                   **defaults: Any) -> None:
  """Registers `factory` under `name`; a duplicate name is a bug, so it raises."""
  if name in _REGISTRY:
    raise ValueError(f'Model name {name!r} is registered twice.')
  _REGISTRY[name] = ModelSpec(name, factory, tuple(input_shape), dict(defaults))


def list_models() -> list[str]:
  """All registered model names, sorted."""
  return sorted(_REGISTRY)


def get_spec(name: str) -> ModelSpec:
  """The `ModelSpec` of `name`; raises `ValueError` listing valid names."""
  try:
    return _REGISTRY[name]
  except KeyError:
    raise ValueError(
        f'Unknown model {name!r}; valid names: {", ".join(list_models())}'
    ) from None


def get_model(name: str, **kwargs: Any) -> nn.Module:
  """Builds the linen module registered as `name` (kwargs override defaults)."""
  spec = get_spec(name)
  return spec.factory(**{**spec.defaults, **kwargs})


def init_shapes(name: str, batch_size: int = 1, **kwargs: Any) -> Any:
  """Abstract variables (`jax.ShapeDtypeStruct` tree) of `name`; runs no FLOPs."""
  spec = get_spec(name)
  model = get_model(name, **kwargs)
  x = jax.ShapeDtypeStruct((batch_size, *spec.input_shape), jnp.float32)
  return jax.eval_shape(
      lambda rng, x: model.init(rng, x, train=False), jax.random.key(0), x)


def num_params(name: str, **kwargs: Any) -> int:
  """Number of trainable parameters of `name` (the `params` collection)."""
  shapes = init_shapes(name, **kwargs)
  return int(sum(np.prod(leaf.shape) for leaf in
                 jax.tree.leaves(shapes['params'])))
