"""The offline zoo's definitions: architectures, sources, the classifier.

What the loader, the builder and the image source share: the zoo's
architectures, how sources are assigned to them (`zoo_plan`), the
backbone-plus-head `Classifier` and the input scaling every zoo model expects.
Nothing here trains; the optimizer lives in `build`.
"""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from fennec_jax import models as models_lib
from fennec_jax.data import tasks as tasks_lib

# Zoo architectures: (registry name, family, size).
ARCHS = (
    ('offline_mlp_s', 'mlp', 's'), ('offline_mlp_l', 'mlp', 'l'),
    ('offline_cnn_s', 'cnn', 's'), ('offline_cnn_l', 'cnn', 'l'),
    ('offline_resnet_s', 'resnet', 's'), ('offline_resnet_l', 'resnet', 'l'),
    ('offline_vit_s', 'vit', 's'), ('offline_vit_l', 'vit', 'l'),
    ('offline_mixer_s', 'mixer', 's'), ('offline_mixer_l', 'mixer', 'l'),
)


@dataclasses.dataclass(frozen=True)
class ZooModel:
  """One zoo member: an architecture pretrained on one source."""
  model_id: str
  arch: str
  family: str
  size: str
  source: str


def interleave_domains(task_names: list[str]) -> list[str]:
  """The tasks round robin over their domains (first-seen domain order)."""
  by_domain: dict[str, list[str]] = {}
  for name in task_names:
    by_domain.setdefault(tasks_lib.get_task(name).domain, []).append(name)
  order, lists = [], list(by_domain.values())
  while any(lists):
    order += [lst.pop(0) for lst in lists if lst]
  return order


def zoo_plan(config: ml_collections.ConfigDict) -> list[ZooModel]:
  """Assigns sources to architectures: model k = arch k % A, source k.

  Sources are first interleaved across domains (round robin), so each
  architecture sees several domains and no family owns one domain.

  Args:
    config: the build config.

  Returns:
    The zoo, grouped by architecture in `config.archs` order.

  Raises:
    ValueError: too few sources or an unknown task / model name.
  """
  archs = [tuple(a) for a in config.archs]
  need = len(archs) * config.models_per_arch
  if len(config.sources) != need:
    raise ValueError(f'config.sources has {len(config.sources)} tasks; '
                     f'{len(archs)} archs x {config.models_per_arch} models '
                     f'need exactly {need}.')
  order = interleave_domains(config.sources)
  for arch, _, _ in archs:
    models_lib.get_spec(arch)  # Raises on unknown names.
  out = []
  for a, (arch, family, size) in enumerate(archs):
    for m in range(config.models_per_arch):
      src = order[m * len(archs) + a]
      out.append(ZooModel(f'{family}_{size}__{src.removeprefix("src_")}',
                          arch, family, size, src))
  return out


# ----------------------------------------------------------------- the model


class Classifier(nn.Module):
  """A registry backbone (`num_classes=0`) plus a linear `head`."""
  backbone: nn.Module
  num_outputs: int

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    return nn.Dense(self.num_outputs, name='head')(self.backbone(x,
                                                                 train=train))


def preprocess(images: jax.Array) -> jax.Array:
  """uint8 NHWC images -> float32 in [-1, 1] (what every zoo model expects)."""
  return images.astype(jnp.float32) / 127.5 - 1.0


def make_classifier(arch: str, num_outputs: int) -> Classifier:
  """The registry's `arch` backbone with a new `num_outputs`-way head."""
  return Classifier(models_lib.get_model(arch, num_classes=0), num_outputs)
