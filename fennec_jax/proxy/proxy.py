"""`load_proxy(name, checkpoint_path) -> Proxy`: a frozen feature extractor.

A `Proxy` bundles a registered architecture built without its classifier
(`num_classes=0`), its weights and the checkpoint's evaluation preprocessing
(input size, mean/std, interpolation, crop fraction as timm / open_clip use
them), and exposes:

* `embed_normalized(x)`: float32 `[n, h, w, 3]` already normalized ->
  `[n, d]`; for a timm ViT the same vector as `timm_model(x)` built with
  `num_classes=0`, for a CLIP tower the projected `image_embeds` of
  transformers' `CLIPVisionModelWithProjection`.
* `embed(images)`: uint8 images of any size / channel count (array, list or
  `fennec_jax.data.sources` source) -> `[n, d]` through the mesh-sharded
  `FeatureExtractor`.
"""

import dataclasses
import functools
import inspect
import os
from typing import Any, Mapping

from absl import logging
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from fennec_jax import models
from fennec_jax.proxy import extract
from fennec_jax.proxy import weights

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INCEPTION_MEAN = (0.5, 0.5, 0.5)  # timm's augreg ViT checkpoints.
INCEPTION_STD = (0.5, 0.5, 0.5)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# Name prefix -> (mean, std, interpolation, crop_fraction); first match wins.
_PREPROCESSING = [
    ('clip_', (CLIP_MEAN, CLIP_STD, 'bicubic', 1.0)),
    ('dinov2_', (IMAGENET_MEAN, IMAGENET_STD, 'bicubic', 1.0)),
    ('deit_', (IMAGENET_MEAN, IMAGENET_STD, 'bicubic', 0.875)),
    ('vit_', (INCEPTION_MEAN, INCEPTION_STD, 'bicubic', 0.9)),
    ('resnet', (IMAGENET_MEAN, IMAGENET_STD, 'bilinear', 0.875)),
]


def default_preprocessing(name: str) -> extract.Preprocessing:
  """The evaluation preprocessing of the usual checkpoints of `name`."""
  size = tuple(models.get_spec(name).input_shape[:2])
  for prefix, (mean, std, interp, crop) in _PREPROCESSING:
    if name.startswith(prefix):
      return extract.Preprocessing(size, mean, std, interp, crop)
  return extract.Preprocessing(size, IMAGENET_MEAN, IMAGENET_STD, 'bilinear',
                               0.875)


@dataclasses.dataclass
class Proxy:
  """A frozen vision model used to embed a task's images.

  Attributes:
    name: registry name of the architecture.
    model: the linen module (built with `num_classes=0` unless the
      architecture's features are a projection, as CLIP's).
    variables: its weights.
    preprocessing: input size, mean/std, interpolation, crop.
  """
  name: str
  model: nn.Module
  variables: Any
  preprocessing: extract.Preprocessing

  def __post_init__(self):
    self._apply = jax.jit(functools.partial(self.model.apply, train=False))
    self._extractors: dict[Any, extract.FeatureExtractor] = {}

  @property
  def feature_dim(self) -> int:
    """Length of one feature vector."""
    h, w = self.preprocessing.size
    out = jax.eval_shape(self._apply, self.variables,
                         jax.ShapeDtypeStruct((1, h, w, 3), jnp.float32))
    return int(out.shape[-1])

  def embed_normalized(self, x: Any) -> np.ndarray:
    """Features `[n, d]` of normalized float32 images `[n, h, w, 3]`."""
    x = jnp.asarray(x, jnp.float32)
    if x.ndim != 4 or x.shape[-1] != 3:
      raise ValueError(f'embed_normalized expects [n, h, w, 3], got shape '
                       f'{x.shape}.')
    return np.asarray(self._apply(self.variables, x))

  def extractor(self, batch_size: int = 64,
                mesh: jax.sharding.Mesh | None = None,
                **kwargs: Any) -> extract.FeatureExtractor:
    """A cached `FeatureExtractor` for this proxy."""
    key = (batch_size, id(mesh), tuple(sorted(kwargs.items())))
    if key not in self._extractors:
      self._extractors[key] = extract.FeatureExtractor(
          lambda v, x: self.model.apply(v, x, train=False), self.variables,
          self.preprocessing, batch_size=batch_size, mesh=mesh, **kwargs)
    return self._extractors[key]

  def embed(self, images: Any, *, batch_size: int = 64,
            mesh: jax.sharding.Mesh | None = None, **kwargs: Any
            ) -> np.ndarray:
    """Features `[n, d]` of uint8 images, with this checkpoint's preprocessing.

    Args:
      images: uint8 array `[n, h, w(, c)]`, list of uint8 images or a
        `fennec_jax.data.sources` source.
      batch_size: global batch size (a multiple of the device count).
      mesh: device mesh (default: all devices).
      **kwargs: `FeatureExtractor` options (`prefetch`, `log_every_s`).

    Returns:
      float32 features in input order.
    """
    return self.extractor(batch_size, mesh, **kwargs)(images)


def _accepts(factory: Any, keyword: str) -> bool:
  """Whether `factory` takes `keyword` (the small zoo modules have no dtype)."""
  parameters = inspect.signature(factory).parameters.values()
  return any(p.name == keyword or p.kind is p.VAR_KEYWORD for p in parameters)


def load_proxy(name: str,
               checkpoint_path: str | os.PathLike[str] | Mapping[str, Any]
               | None = None, *,
               layout: str | None = None, dtype: Any = jnp.float32,
               attention_impl: str | None = None, seed: int = 0,
               preprocessing: extract.Preprocessing | None = None,
               **model_kwargs: Any) -> Proxy:
  """Builds the proxy `name` with weights from `checkpoint_path`.

  Args:
    name: a registered architecture (`models.list_models()`), e.g.
      `'clip_vit_l14'`, `'vit_base_patch16_224'`, `'resnet50'`.
    checkpoint_path: checkpoint in any format `weights.read_checkpoint` reads
      (a state-dict mapping works too). None uses random weights from `seed`
      (for tests and benchmarks only; logged as a warning).
    layout: checkpoint key layout (`weights.LAYOUTS`); None detects it.
    dtype: compute dtype (e.g. `jnp.bfloat16` on accelerators).
    attention_impl: ViT attention implementation (None = XLA, `'cudnn'`).
    seed: seed of the random weights when `checkpoint_path` is None.
    preprocessing: overrides `default_preprocessing(name)`.
    **model_kwargs: architecture overrides (e.g. `layer_norm_eps`).

  Returns:
    The `Proxy`.

  Raises:
    ValueError: unknown name, a `dtype` or `attention_impl` the architecture
      does not offer, or a checkpoint that does not match.
  """
  spec = models.get_spec(name)
  kwargs = dict(model_kwargs)
  kwargs.setdefault('num_classes', 0)
  if _accepts(spec.factory, 'dtype'):
    kwargs['dtype'] = dtype
  elif jnp.dtype(dtype) != jnp.float32:
    raise ValueError(f'Proxy {name!r} computes in float32 only; dtype '
                     f'{jnp.dtype(dtype).name} is not available for it.')
  if attention_impl is not None:
    if not _accepts(spec.factory, 'attention_impl'):
      raise ValueError(f'Proxy {name!r} has no attention layers; '
                       f'attention_impl={attention_impl!r} applies to ViT '
                       'architectures only.')
    kwargs['attention_impl'] = attention_impl
  model = models.get_model(name, **kwargs)
  if checkpoint_path is None:
    logging.warning('load_proxy(%s): no checkpoint, random weights (seed %d).',
                    name, seed)
    x = jnp.zeros((1, *spec.input_shape), jnp.float32)
    variables = jax.jit(functools.partial(model.init, train=False))(
        jax.random.key(seed), x)
  else:
    variables = weights.load_variables(model, spec.input_shape,
                                       checkpoint_path, layout=layout)
  return Proxy(name, model, variables,
               preprocessing or default_preprocessing(name))
