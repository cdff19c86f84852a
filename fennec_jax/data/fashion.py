"""Fashion-MNIST tasks, read from the Debian package `dataset-fashion-mnist`.

Targets draw from the official 10k test file (split once, with a fixed seed,
into disjoint train and test pools); sources draw from the 60k train file,
so no source ever sees a target's images.
"""

import functools
import gzip
import os
import pathlib
import struct

import numpy as np

from fennec_jax.data import task_images

FASHION_ENV = 'FENNEC_FASHION_MNIST_DIR'
FASHION_DIR = '/usr/share/datasets/fashion-mnist'
FASHION_CLASSES = ('tshirt', 'trouser', 'pullover', 'dress', 'coat', 'sandal',
                   'shirt', 'sneaker', 'bag', 'ankle_boot')


def _read_idx(path: pathlib.Path) -> np.ndarray:
  """The uint8 array of a gzipped IDX file; `ValueError` if malformed."""
  with gzip.open(path, 'rb') as f:
    data = f.read()
  magic, = struct.unpack('>I', data[:4])
  ndim = magic & 0xFF
  if magic >> 8 != 0x08 or ndim not in (1, 3):
    raise ValueError(f'{path}: not an IDX ubyte file (magic {magic:#x}).')
  dims = struct.unpack('>' + 'I' * ndim, data[4:4 + 4 * ndim])
  arr = np.frombuffer(data, np.uint8, offset=4 + 4 * ndim)
  if arr.size != int(np.prod(dims)):
    raise ValueError(f'{path}: truncated, {arr.size} bytes for shape {dims}; '
                     'reinstall the dataset-fashion-mnist package.')
  return arr.reshape(dims)


@functools.cache
def fashion_mnist(part: str) -> tuple[np.ndarray, np.ndarray]:
  """Fashion-MNIST `part` ('train' = 60k file or 't10k' = 10k file).

  Args:
    part: 'train' or 't10k'.

  Returns:
    `(images uint8 [n, 28, 28], labels uint8 [n])`.

  Raises:
    task_images.MissingSystemDataError: the files are not installed.
  """
  root = pathlib.Path(os.environ.get(FASHION_ENV, FASHION_DIR))
  img = root / f'{part}-images-idx3-ubyte.gz'
  lab = root / f'{part}-labels-idx1-ubyte.gz'
  if not img.exists() or not lab.exists():
    raise task_images.MissingSystemDataError(
        f'Fashion-MNIST not found: {img} is missing. Install the Debian '
        'package `dataset-fashion-mnist` (sudo apt-get install '
        f'dataset-fashion-mnist) or point ${FASHION_ENV} at a folder with '
        'the four *-ubyte.gz files. Tasks that need no system data: '
        'list_tasks(system_data=False).')
  return _read_idx(img), _read_idx(lab)


def _fashion_pool(split: str, role: str) -> tuple[np.ndarray, np.ndarray]:
  """Targets draw from the 10k test file (train/test disjoint), sources 60k."""
  if role == 'source':
    return fashion_mnist('train')
  images, labels = fashion_mnist('t10k')
  order = np.random.default_rng(20260101).permutation(len(labels))
  idx = order[:6000] if split == 'train' else order[6000:]
  return images[idx], labels[idx]


def fashion_task(classes: tuple[int, ...], role: str,
                 transform: str = 'none') -> task_images.Generator:
  """Subset of Fashion classes, relabelled 0..k-1 (or rotation labels).

  Args:
    classes: Fashion-MNIST class ids kept; class `classes[i]` becomes label i.
    role: 'target' (draws from the 10k test file) or 'source' (60k file).
    transform: 'none', 'rot90', 'invert', 'binary' (first half of `classes`
      vs the rest) or 'rotation_label' (any class; the label is which of four
      rotations was applied).

  Returns:
    The task's generator.
  """

  def gen(rng, split, n):
    images, labels = _fashion_pool(split, role)
    if transform == 'rotation_label':
      idx = rng.choice(len(labels), n, replace=False)
      y = task_images.balanced_labels(rng, n, 4)
      x = np.stack([np.rot90(images[i], k) for i, k in zip(idx, y)])
      return task_images.gray_to_rgb(x), y
    keep = np.flatnonzero(np.isin(labels, classes))
    if len(keep) < n:
      raise ValueError(f'Fashion-MNIST pool has {len(keep)} images of classes '
                       f'{classes}, fewer than the {n} requested.')
    idx = rng.choice(keep, n, replace=False)
    remap = {c: i for i, c in enumerate(classes)}
    y = np.array([remap[c] for c in labels[idx]], np.int32)
    x = images[idx]
    if transform == 'rot90':
      x = np.rot90(x, 1, axes=(1, 2))
    elif transform == 'invert':
      x = 255 - x
    elif transform == 'binary':
      y = (y >= len(classes) // 2).astype(np.int32)
    return task_images.gray_to_rgb(np.ascontiguousarray(x)), y

  return gen

