r"""`fennec features`: proxy features and the task embedding of a task's images.

  fennec features --model=clip_vit_l14 --checkpoint=ViT-L-14.pt \
      --images=DIR --out=task.npz
  fennec features --model=vit_base_patch16_224 --checkpoint=model.safetensors \
      --tfds=cifar10 --tfds_split=test --tfds_data_dir=DIR --probe=100 \
      --out=task.npz

`--images=DIR`: files in sorted name order; class sub-folders give labels.
Writes `features`, `indices`, `names`/`labels` when known, `task_embedding`
and its second-moment summary (see `fennec_jax.proxy.pipeline`).
"""

from absl import flags
import jax.numpy as jnp

from fennec_jax import files
from fennec_jax.commands import checks
from fennec_jax.data import sources
from fennec_jax.proxy import pipeline
from fennec_jax.proxy import proxy as proxy_lib

_MODEL = flags.DEFINE_string('model', 'clip_vit_l14',
                             'Registered proxy architecture.')
_CHECKPOINT = flags.DEFINE_string(
    'checkpoint', None, 'Weights: .safetensors, .pt/.pth/.bin, .npz or a '
    'Hugging Face model directory.')
_LAYOUT = flags.DEFINE_string('layout', None,
                              'Checkpoint key layout (default: detected).')
_RANDOM = flags.DEFINE_boolean(
    'random_weights', False, 'Use random weights instead of --checkpoint '
    '(demos and tests only).')
_IMAGES = flags.DEFINE_string('images', None, 'Image folder.')
_TFDS = flags.DEFINE_string('tfds', None, 'tfds data set name (prepared).')
_TFDS_SPLIT = flags.DEFINE_string('tfds_split', 'train', 'tfds split.')
_TFDS_DIR = flags.DEFINE_string('tfds_data_dir', None, 'tfds data_dir.')
_OUT = flags.DEFINE_string('out', None, 'Output .npz file.')
_BATCH = flags.DEFINE_integer(
    'batch_size', 64, 'Global batch size (a multiple of the device count).')
_PROBE = flags.DEFINE_integer(
    'probe', 0, 'Embed only a class-balanced probe of this many images '
    '(the paper uses 100); 0 embeds all.')
_SEED = flags.DEFINE_integer('seed', 0, 'Probe / random-weights seed.')
_DTYPE = flags.DEFINE_enum('dtype', 'float32', ['float32', 'bfloat16'],
                           'Compute dtype.')
_ATTENTION = flags.DEFINE_enum('attention', 'xla', ['xla', 'cudnn'],
                               'ViT attention implementation.')


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise ValueError(f'unexpected arguments {argv[1:]}; see --help.')
  if bool(_IMAGES.value) == bool(_TFDS.value):
    raise ValueError('Pass exactly one of --images=DIR or --tfds=NAME.')
  if not _OUT.value:
    raise ValueError('--out=FILE.npz is required.')
  checks.output_file('--out', _OUT.value, suffix='.npz')
  checks.at_least('--batch_size', _BATCH.value, 1)
  checks.at_least('--probe', _PROBE.value, 0)
  if not _CHECKPOINT.value and not _RANDOM.value:
    raise ValueError('--checkpoint is required (or --random_weights for a '
                     'demo with random weights).')
  if _IMAGES.value:
    source = sources.FolderSource(_IMAGES.value)
  else:
    source = sources.TfdsSource(_TFDS.value, split=_TFDS_SPLIT.value,
                                data_dir=_TFDS_DIR.value)
  proxy = proxy_lib.load_proxy(
      _MODEL.value, None if _RANDOM.value else _CHECKPOINT.value,
      layout=_LAYOUT.value, dtype=jnp.dtype(_DTYPE.value),
      attention_impl=None if _ATTENTION.value == 'xla' else 'cudnn',
      seed=_SEED.value)
  arrays = pipeline.task_features(proxy, source, probe=_PROBE.value,
                                  seed=_SEED.value, batch_size=_BATCH.value)
  files.write_atomically(_OUT.value, lambda path: pipeline.write_features(
      path, arrays, model=_MODEL.value,
      checkpoint='random' if _RANDOM.value else _CHECKPOINT.value))
  print(f'wrote {_OUT.value}: features {arrays["features"].shape}, '
        f'task_embedding {arrays["task_embedding"].shape}')
