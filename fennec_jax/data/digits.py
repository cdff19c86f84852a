"""Digit tasks: the UCI handwritten digits that ship with scikit-learn.

1,797 real 8x8 scans (values 0..16) of digits written by 43 people, read from
`sklearn/datasets/data/digits.csv.gz` (see `packaged`). Each image is
upsampled to a random size, placed at a random offset on a 28x28 canvas with
random foreground/background gray levels and pixel noise. Disjoint pools keep
the benchmark honest: even rows feed targets (their first 60%, in a fixed
permutation, the target train split, the rest the test split) and odd rows
feed sources. A pool smaller than the request is cycled, each repeat
rendered anew.
"""

import functools
import gzip

import numpy as np
from PIL import Image

from fennec_jax.data import packaged
from fennec_jax.data import task_images


@functools.cache
def uci_digits() -> tuple[np.ndarray, np.ndarray]:
  """(images uint8 [1797, 8, 8] in 0..255, labels int32 [1797])."""
  path = packaged.package_file('sklearn', 'datasets', 'data', 'digits.csv.gz')
  with gzip.open(path, 'rt') as f:
    data = np.loadtxt(f, delimiter=',', dtype=np.float32)
  if data.ndim != 2 or data.shape[1] != 65:
    raise ValueError(f'{path}: expected rows of 64 pixels + label, got shape '
                     f'{data.shape}.')
  images = np.round(data[:, :64] * (255.0 / 16.0)).astype(np.uint8)
  return images.reshape(-1, 8, 8), data[:, 64].astype(np.int32)


def _pool(role: str, split: str) -> np.ndarray:
  """Row indices of the pool a (role, split) draws from."""
  n = len(uci_digits()[1])
  if role == 'source':
    return np.arange(1, n, 2)
  even = np.arange(0, n, 2)
  order = np.random.default_rng(20260102).permutation(len(even))
  cut = int(0.6 * len(even))
  return even[np.sort(order[:cut] if split == 'train' else order[cut:])]


def _render(rng: np.random.Generator, digit: np.ndarray,
            size_range: tuple[int, int]) -> np.ndarray:
  """An 8x8 digit upsampled to a random size at a random place, [28, 28]."""
  s = int(rng.integers(*size_range))
  glyph = np.asarray(Image.fromarray(digit).resize(
      (s, s), Image.Resampling.BILINEAR), np.float32) / 255.0
  canvas = np.zeros((28, 28), np.float32)
  ox, oy = rng.integers(0, 28 - s + 1, 2)
  canvas[oy:oy + s, ox:ox + s] = glyph
  fg, bg = rng.uniform(150, 255), rng.uniform(0, 80)
  return bg + (fg - bg) * canvas


def digit_task(role: str, classes: tuple[int, ...] = tuple(range(10)),
               transform: str = 'none',
               size_range: tuple[int, int] = (16, 25)) -> task_images.Generator:
  """Digits of `classes` (class `classes[i]` becomes label i).

  Args:
    role: 'target' or 'source' (which pool; see the module docstring).
    classes: the digits kept.
    transform: 'none', 'invert' (contrast), 'rot90', 'parity' (label: odd)
      or 'rotation_label' (any digit; the label is which of 4 rotations).
    size_range: [lo, hi) side in pixels of the upsampled digit.

  Returns:
    The task's generator.
  """

  def gen(rng, split, n):
    images, labels = uci_digits()
    pool = _pool(role, split)
    pool = pool[np.isin(labels[pool], classes)]
    if not len(pool):
      raise ValueError(f'No UCI digits of classes {classes} in the {role} '
                       f'{split} pool.')
    order = rng.permutation(len(pool))
    idx = pool[order[np.arange(n) % len(pool)]]
    remap = {c: i for i, c in enumerate(classes)}
    y = np.array([remap[c] for c in labels[idx]], np.int32)
    if transform == 'rotation_label':
      y = task_images.balanced_labels(rng, n, 4)
    elif transform == 'parity':
      y = (labels[idx] % 2).astype(np.int32)
    out = np.empty((n, *task_images.IMAGE_SHAPE), np.uint8)
    for i, j in enumerate(idx):
      img = _render(rng, images[j], size_range)
      if transform == 'rot90':
        img = np.rot90(img)
      elif transform == 'rotation_label':
        img = np.rot90(img, int(y[i]))
      elif transform == 'invert':
        img = 255.0 - img
      out[i] = task_images.add_noise(rng, task_images.gray_to_rgb(img), 10.0)
    return out, y

  return gen
