"""Candidate checkpoints: read each source's file, convert, split the head.

A candidate is a catalogue row (`catalogue.Checkpoint`): a registry
architecture and a file in its source's own format (a torchvision `.pth`
state dict, a timm state dict or `.safetensors`, a Hugging Face directory),
converted with the converters of `fennec_jax.models` / `fennec_jax.proxy`.
`load_candidate` returns the headless model, its variables and the source
classifier (for LEEP / NCE): one pass gives the pooled features and the
source-class probabilities.

The small-scale twin writes random-weight checkpoints in the same formats
(`write_tiny_candidate`, `write_tiny_proxy`): torchvision's own classes at a
reduced depth / width, saved with `torch.save(state_dict)`, and a
transformers CLIP vision tower saved with `save_pretrained` (safetensors);
the run then reads them back through the real loading path.
"""

import dataclasses
import functools
import os
from typing import Any, Callable

from absl import logging
import flax.linen as nn
import jax
import jax.numpy as jnp

from fennec_jax import files
from fennec_jax import models
from fennec_jax.benchmarks.full import catalogue
from fennec_jax.models import alexnet
from fennec_jax.models import densenet
from fennec_jax.models import inception
from fennec_jax.models import mobilenet
from fennec_jax.models import resnet
from fennec_jax.proxy import extract
from fennec_jax.proxy import proxy as proxy_lib
from fennec_jax.proxy import weights

# torchvision converters by architecture-name prefix (first match wins).
_TORCHVISION = (
    ('resnet', resnet.torchvision_resnet_to_flax),
    ('densenet', densenet.torchvision_densenet_to_flax),
    ('mobilenet_v2', mobilenet.torchvision_mobilenet_to_flax),
    ('mnasnet', mobilenet.torchvision_mobilenet_to_flax),
    ('googlenet', inception.torchvision_inception_to_flax),
    ('inception_v3', inception.torchvision_inception_to_flax),
    ('alexnet', alexnet.torchvision_alexnet_to_flax),
)

# The twin's reduced architectures: registry overrides and the torchvision
# constructor that builds the same network (`tiny_torch_module`).
TINY_OVERRIDES = {
    'resnet34': dict(stage_sizes=(1, 1, 1, 1)),
    'resnet50': dict(stage_sizes=(1, 1, 1, 1)),
    'resnet101': dict(stage_sizes=(1, 1, 1, 1)),
    'resnet152': dict(stage_sizes=(1, 1, 1, 1)),
    'densenet121': dict(growth_rate=8, block_config=(2, 2),
                        num_init_features=16, bn_size=2),
    'densenet169': dict(growth_rate=8, block_config=(2, 2),
                        num_init_features=16, bn_size=2),
    'densenet201': dict(growth_rate=8, block_config=(2, 2),
                        num_init_features=16, bn_size=2),
    'mobilenet_v2': dict(width_mult=0.25, inverted_residual_setting=(
        (1, 16, 1, 1), (6, 24, 2, 2))),
    'mnasnet1_0': dict(alpha=0.25),
}
TINY_PROXY = 'clip_test_tiny'


class CheckpointFileError(ValueError):
  """A candidate checkpoint that is missing or of the wrong architecture."""


def torchvision_preprocessing(arch: str, size: int | None = None
                              ) -> extract.Preprocessing:
  """torchvision's evaluation transform (resize 256 -> crop 224 at 224)."""
  side = size or models.get_spec(arch).input_shape[0]
  return extract.Preprocessing((side, side), proxy_lib.IMAGENET_MEAN,
                               proxy_lib.IMAGENET_STD, 'bilinear', 0.875)


@dataclasses.dataclass
class Candidate:
  """A loaded candidate model.

  Attributes:
    model_key: the store key (its checkpoint file).
    arch: the registry architecture.
    apply: `apply(variables, x) -> [b, d + c_src]` (features, then the
      source-class probabilities; `num_features` splits them).
    variables: the converted weights (head included).
    num_features: feature width d.
    preprocessing: the source's evaluation preprocessing.
  """
  model_key: str
  arch: str
  apply: Callable[[Any, jax.Array], jax.Array]
  variables: Any
  num_features: int
  preprocessing: extract.Preprocessing


def model_key(ckpt: catalogue.Checkpoint) -> str:
  """A file-name-safe store key of a checkpoint file (shared by
  benchmarks)."""
  return ckpt.file.replace('/', '__')


def _converter(arch: str) -> Callable[[Any, Any], dict[str, Any]]:
  for prefix, fn in _TORCHVISION:
    if arch.startswith(prefix):
      return fn
  raise CheckpointFileError(f'architecture {arch!r} has no torchvision '
                            'converter; valid prefixes: '
                            f'{[p for p, _ in _TORCHVISION]}.')


def _shapes(model: nn.Module, size: int) -> Any:
  x = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
  return jax.eval_shape(functools.partial(model.init, train=False),
                        jax.random.key(0), x)


def load_candidate(ckpt: catalogue.Checkpoint, checkpoint_dir: str, *,
                   overrides: dict[str, Any] | None = None,
                   image_size: int | None = None) -> Candidate:
  """Reads and converts one candidate's checkpoint file.

  Args:
    ckpt: the catalogue row (mapped).
    checkpoint_dir: the directory holding `ckpt.file`.
    overrides: registry overrides of the architecture (the twin's reduced
      sizes); None builds the registered one.
    image_size: input side (default: the architecture's).

  Returns:
    The `Candidate`.

  Raises:
    CheckpointFileError: the file is missing (naming it and its download
      URL) or does not fit the architecture (naming the model, the file and
      the converter's first mismatches).
  """
  path = os.path.join(checkpoint_dir, ckpt.file)
  where = f'{ckpt.benchmark}/{ckpt.model} ({path})'
  if not os.path.exists(path):
    raise CheckpointFileError(
        f'checkpoint of {where} is missing; download it once from '
        f'{ckpt.url} to that path.')
  spec = models.get_spec(ckpt.arch)
  size = image_size or spec.input_shape[0]
  kwargs = dict(overrides or {})
  try:
    state = weights.read_checkpoint(path)
    if ckpt.format == 'torchvision':
      full = models.get_model(ckpt.arch, **kwargs)
      variables = _converter(ckpt.arch)(state, _shapes(full, size))
    else:  # timm / hf_vit: the ViT converter, classifier dropped.
      full = models.get_model(ckpt.arch, num_classes=0, **kwargs)
      variables = weights.convert(state, full, (size, size, 3),
                                  layout=ckpt.format, source=path)
  except ValueError as e:
    raise CheckpointFileError(f'checkpoint of {where} does not fit '
                              f'architecture {ckpt.arch!r}: {e}') from None
  headless = models.get_model(ckpt.arch, **{**kwargs, 'num_classes': 0})
  head_keys = sorted(set(variables['params'])
                     - set(_shapes(headless, size)['params']))
  head = None
  if len(head_keys) == 1 and set(variables['params'][head_keys[0]]) == {
      'kernel', 'bias'}:
    head = head_keys[0]
  elif head_keys:
    logging.warning('%s: classifier %s is not one dense layer; no source '
                    'probabilities (LEEP / NCE skip it).', where, head_keys)
  num_features = int(jax.eval_shape(
      functools.partial(headless.apply, train=False),
      {c: {k: v for k, v in t.items() if k not in head_keys}
       for c, t in variables.items()},
      jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)).shape[-1])

  def features_and_probs(v, x):
    body = {c: {k: t for k, t in tree.items() if k not in head_keys}
            for c, tree in v.items()}
    feats = headless.apply(body, x, train=False)
    if head is None:
      return feats
    w = v['params'][head]
    logits = feats @ w['kernel'].astype(feats.dtype) + w['bias']
    return jnp.concatenate([feats, jax.nn.softmax(logits, -1)], -1)

  prep = (torchvision_preprocessing(ckpt.arch, size)
          if ckpt.format == 'torchvision'
          else dataclasses.replace(proxy_lib.default_preprocessing(ckpt.arch),
                                   size=(size, size)))
  return Candidate(model_key(ckpt), ckpt.arch, features_and_probs,
                   variables, num_features, prep)


# -- the small-scale twin's files -----------------------------------------------


def tiny_torch_module(arch: str, seed: int) -> Any:
  """torchvision's own class for `arch` at the twin's reduced size, random
  weights (non-trivial BatchNorm statistics), in eval mode."""
  import torch  # pylint: disable=g-import-not-at-top
  import torchvision  # pylint: disable=g-import-not-at-top
  tv = torchvision.models
  torch.manual_seed(seed)
  if arch in ('resnet18', 'resnet34'):
    module = tv.resnet.ResNet(tv.resnet.BasicBlock, [1, 1, 1, 1])
  elif arch.startswith('resnet'):
    module = tv.resnet.ResNet(tv.resnet.Bottleneck, [1, 1, 1, 1])
  elif arch.startswith('densenet'):
    o = TINY_OVERRIDES[arch]
    module = tv.DenseNet(growth_rate=o['growth_rate'],
                         block_config=o['block_config'],
                         num_init_features=o['num_init_features'],
                         bn_size=o['bn_size'])
  elif arch == 'mobilenet_v2':
    o = TINY_OVERRIDES[arch]
    module = tv.MobileNetV2(width_mult=o['width_mult'],
                            inverted_residual_setting=[
                                list(r) for r in
                                o['inverted_residual_setting']])
  elif arch == 'mnasnet1_0':
    module = tv.MNASNet(TINY_OVERRIDES[arch]['alpha'])
  else:
    raise ValueError(f'no tiny twin of {arch!r}; valid: '
                     f'{sorted(TINY_OVERRIDES)}.')
  for m in module.modules():
    if isinstance(m, torch.nn.BatchNorm2d):
      m.running_mean.uniform_(-0.5, 0.5)
      m.running_var.uniform_(0.5, 2.0)
  return module.eval()


def write_tiny_candidate(ckpt: catalogue.Checkpoint, checkpoint_dir: str,
                         seed: int) -> str:
  """Writes a random torchvision state dict for `ckpt` at its file path
  (`torch.save`, as torchvision's own downloads); returns the path."""
  import torch  # pylint: disable=g-import-not-at-top
  path = os.path.join(checkpoint_dir, ckpt.file)
  if os.path.exists(path):
    return path
  os.makedirs(os.path.dirname(path), exist_ok=True)
  state = tiny_torch_module(ckpt.arch, seed).state_dict()
  files.write_atomically(path, lambda tmp: torch.save(state, tmp))
  logging.info('wrote a random-weight torchvision checkpoint %s', path)
  return path


def write_tiny_proxy(path: str, seed: int) -> str:
  """Writes a random CLIP vision tower (transformers `save_pretrained`,
  safetensors) that `load_proxy(TINY_PROXY, path)` reads."""
  if os.path.exists(path):
    return path
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  torch.manual_seed(seed)
  cfg = transformers.CLIPVisionConfig(
      hidden_size=32, intermediate_size=128, num_hidden_layers=2,
      num_attention_heads=2, image_size=32, patch_size=8, projection_dim=16)
  model = transformers.CLIPVisionModelWithProjection(cfg).eval()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  files.write_atomically(path, lambda tmp: model.save_pretrained(
      tmp, safe_serialization=True))
  logging.info('wrote a random-weight CLIP vision checkpoint %s', path)
  return path
