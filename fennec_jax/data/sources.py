"""Image sources for feature extraction: NumPy arrays, an image folder, tfds.

A source is a random-access sequence of uint8 images (`len(src)`, `src[i] ->
[h, w, c]` uint8) with optional integer `labels`, per-image `names`, and
`image_shape`: the common `(h, w, c)` when every image has it (then resizing
runs on the device for the whole batch), else None (the extractor resizes each
image on the host first; see `fennec_jax.proxy.extract`).

Conversions (documented, never silent):
* `ArraySource`: `[n, h, w]` grayscale becomes `[n, h, w, 1]`; only uint8 is
  accepted (a float array's scale is ambiguous, so it is a `ValueError`).
* `FolderSource`: files are taken in sorted relative-path order; every image is
  decoded to 8-bit RGB (grayscale replicated, the alpha channel of RGBA / LA
  dropped, palettes expanded, 16-bit scaled); unreadable files are skipped and
  counted in a log line (`skipped` holds their paths). Images directly in the
  folder have no labels; images in sub-folders are labelled by the sub-folder
  (class ids follow the sorted sub-folder names).
* `TfdsSource`: a `tfds.data_source` (array_record; no TensorFlow needed),
  reading the `image` and `label` features.
"""

from collections.abc import Sequence
import os
from typing import Any, Protocol

from absl import logging
import numpy as np

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.gif', '.tif', '.tiff',
                    '.webp', '.ppm', '.pgm')


class ImageSource(Protocol):
  """What the extractor needs from a source."""
  labels: np.ndarray | None
  names: Sequence[str] | None
  image_shape: tuple[int, int, int] | None

  def __len__(self) -> int:
    ...

  def __getitem__(self, index: int) -> np.ndarray:
    ...


def _as_hwc_uint8(image: Any, where: str) -> np.ndarray:
  arr = np.asarray(image)
  if arr.dtype != np.uint8:
    raise ValueError(f'{where}: images must be uint8, got {arr.dtype}; scale '
                     'floats to 0..255 and cast, or pass uint8 pixels.')
  if arr.ndim == 2:
    arr = arr[..., None]
  if arr.ndim != 3 or arr.shape[-1] not in (1, 2, 3, 4):
    raise ValueError(f'{where}: expected an image [h, w] or [h, w, c] with c '
                     f'in 1..4, got shape {arr.shape}.')
  return arr


class ArraySource:
  """Images from a uint8 array `[n, h, w(, c)]` or a list of `[h, w(, c)]`."""

  def __init__(self, images: np.ndarray | Sequence[np.ndarray],
               labels: np.ndarray | Sequence[int] | None = None,
               names: Sequence[str] | None = None):
    """Wraps in-memory images.

    Args:
      images: uint8 `[n, h, w]`, `[n, h, w, c]` or a sequence of per-image
        arrays (sizes and channel counts may differ).
      labels: optional `[n]` integer labels.
      names: optional `[n]` names (e.g. file names).

    Raises:
      ValueError: empty input, a non-uint8 array, a bad shape, or labels /
        names of the wrong length.
    """
    if isinstance(images, np.ndarray):
      if images.dtype != np.uint8:
        raise ValueError(f'ArraySource: images must be uint8, got '
                         f'{images.dtype}.')
      if images.ndim == 3:
        images = images[..., None]
      if images.ndim != 4 or images.shape[-1] not in (1, 2, 3, 4):
        raise ValueError('ArraySource: expected [n, h, w] or [n, h, w, c] '
                         f'with c in 1..4, got shape {images.shape}.')
      self._images = images
      self.image_shape = tuple(images.shape[1:])
    else:
      self._images = [_as_hwc_uint8(im, f'ArraySource image {i}')
                      for i, im in enumerate(images)]
      shapes = {im.shape for im in self._images}
      self.image_shape = shapes.pop() if len(shapes) == 1 else None
    n = len(self._images)
    if n == 0:
      raise ValueError('ArraySource: no images.')
    self.labels = None if labels is None else np.asarray(labels)
    if self.labels is not None and self.labels.shape != (n,):
      raise ValueError(f'ArraySource: labels has shape {self.labels.shape}, '
                       f'expected ({n},).')
    self.names = None if names is None else list(names)
    if self.names is not None and len(self.names) != n:
      raise ValueError(f'ArraySource: {len(self.names)} names for {n} images.')

  def __len__(self) -> int:
    return len(self._images)

  def __getitem__(self, index: int) -> np.ndarray:
    return self._images[index]

  def get_batch(self, start: int, stop: int) -> np.ndarray | None:
    """Rows `start:stop` as one array without a per-image copy (or None)."""
    if isinstance(self._images, np.ndarray):
      return self._images[start:stop]
    return None


def decode_rgb(path: str) -> np.ndarray:
  """Decodes an image file to uint8 RGB `[h, w, 3]` (see module docstring)."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  with Image.open(path) as im:
    if im.mode in ('I;16', 'I;16B', 'I;16L', 'I'):
      arr = np.asarray(im, dtype=np.float64)
      top = 65535.0 if arr.max() > 255 else 255.0
      arr = np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
      return np.repeat(arr[..., None], 3, axis=-1)
    if im.mode != 'RGB':
      im = im.convert('RGB')  # L, LA, RGBA, P, CMYK, ...: alpha is dropped.
    return np.asarray(im, dtype=np.uint8)


class FolderSource:
  """Images under a directory (sorted names; sub-folder = class)."""

  def __init__(self, root: str | os.PathLike[str],
               extensions: Sequence[str] = IMAGE_EXTENSIONS):
    """Lists and checks the images under `root`.

    Args:
      root: the directory. Either all images lie directly in it (no labels) or
        all lie in sub-folders, one per class (nested deeper is fine).
      extensions: file extensions taken as images (case-insensitive).

    Raises:
      ValueError: missing or empty directory, no readable image, or images
        both at the top level and in sub-folders.
    """
    from PIL import Image  # pylint: disable=g-import-not-at-top
    root = os.fspath(root)
    if not os.path.isdir(root):
      raise ValueError(f'Image folder {root} does not exist or is not a '
                       'directory.')
    exts = tuple(e.lower() for e in extensions)
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
      dirnames.sort()
      for f in filenames:
        if f.lower().endswith(exts):
          files.append(os.path.relpath(os.path.join(dirpath, f), root))
    files.sort()
    if not files:
      raise ValueError(f'Image folder {root} holds no files with extensions '
                       f'{", ".join(exts)}.')
    top = [f for f in files if os.sep not in f]
    if top and len(top) != len(files):
      raise ValueError(
          f'Image folder {root} mixes images at the top level (e.g. {top[0]}) '
          'with images in class sub-folders; use one or the other.')
    self.root = root
    self.names, self.skipped, shapes = [], [], set()
    for f in files:
      try:
        with Image.open(os.path.join(root, f)) as im:
          im.verify()
        with Image.open(os.path.join(root, f)) as im:
          shapes.add((im.size[1], im.size[0], 3))
      except Exception as e:  # pylint: disable=broad-except
        logging.warning('FolderSource: skipping unreadable %s (%s).', f, e)
        self.skipped.append(f)
        continue
      self.names.append(f)
    if self.skipped:
      logging.warning('FolderSource: skipped %d of %d files in %s that could '
                      'not be read.', len(self.skipped), len(files), root)
    if not self.names:
      raise ValueError(f'Image folder {root}: none of the {len(files)} image '
                       'files could be read.')
    self.image_shape = shapes.pop() if len(shapes) == 1 else None
    if top:
      self.labels, self.class_names = None, None
    else:
      classes = [n.split(os.sep, 1)[0] for n in self.names]
      self.class_names = sorted(set(classes))
      index = {c: i for i, c in enumerate(self.class_names)}
      self.labels = np.array([index[c] for c in classes], np.int64)

  def __len__(self) -> int:
    return len(self.names)

  def __getitem__(self, index: int) -> np.ndarray:
    return decode_rgb(os.path.join(self.root, self.names[index]))


class TfdsSource:
  """A `tfds.data_source` split (array_record; works without TensorFlow)."""

  def __init__(self, name: str, *, split: str = 'train',
               data_dir: str | None = None, image_key: str = 'image',
               label_key: str | None = 'label'):
    """Opens `name` / `split` with `tfds.data_source`.

    Args:
      name: tfds data set name (e.g. `'mnist'`), prepared under `data_dir`.
      split: split, slicing allowed (`'train[:10%]'`).
      data_dir: tfds data directory; nothing is downloaded.
      image_key: feature holding the uint8 image.
      label_key: feature holding the integer label, or None.

    Raises:
      ValueError: the split is empty or the features are missing.
    """
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    self._src = tfds.data_source(name, split=split, data_dir=data_dir,
                                 download=False)
    self.where = f'tfds {name}[{split}]'
    if len(self._src) == 0:
      raise ValueError(f'{self.where} is empty.')
    first = self._src[0]
    if image_key not in first:
      raise ValueError(f'{self.where} has no feature {image_key!r}; '
                       f'features: {sorted(first)}.')
    if label_key is not None and label_key not in first:
      logging.info('%s has no %r feature; no labels.', self.where, label_key)
      label_key = None
    self._image_key, self._label_key = image_key, label_key
    shape = None
    try:
      feat = self._src.dataset_info.features[image_key]
      if all(isinstance(d, int) for d in feat.shape):
        shape = tuple(feat.shape)
        shape = shape + (1,) if len(shape) == 2 else shape
    except (AttributeError, KeyError, TypeError):
      shape = None
    self.image_shape = shape
    self.names = None
    self._labels = None

  @property
  def labels(self) -> np.ndarray | None:
    """All labels (read once, record by record)."""
    if self._label_key is None:
      return None
    if self._labels is None:
      self._labels = np.array(
          [int(self._src[i][self._label_key]) for i in range(len(self))],
          np.int64)
    return self._labels

  def __len__(self) -> int:
    return len(self._src)

  def __getitem__(self, index: int) -> np.ndarray:
    return _as_hwc_uint8(self._src[int(index)][self._image_key],
                         f'{self.where} record {index}')


class Subset:
  """A view of `source` at `indices` (e.g. the class-balanced probe)."""

  def __init__(self, source: ImageSource, indices: Sequence[int]):
    self._source = source
    self.indices = np.asarray(indices, np.int64)
    self.image_shape = source.image_shape
    labels = source.labels
    self.labels = None if labels is None else np.asarray(labels)[self.indices]
    names = source.names
    self.names = None if names is None else [names[i] for i in self.indices]

  def __len__(self) -> int:
    return len(self.indices)

  def __getitem__(self, index: int) -> np.ndarray:
    return self._source[int(self.indices[index])]


def as_source(images: Any) -> ImageSource:
  """Wraps an array or list as an `ArraySource`; passes sources through."""
  if isinstance(images, (np.ndarray, list, tuple)):
    return ArraySource(images)
  if hasattr(images, '__getitem__') and hasattr(images, '__len__') and hasattr(
      images, 'image_shape'):
    return images
  raise ValueError(f'Cannot read images from a {type(images).__name__}; pass '
                   'a uint8 array, a list of arrays or an ImageSource.')
