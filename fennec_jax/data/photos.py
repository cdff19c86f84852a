"""Photo tasks: 28x28 patches of the sample photographs in scikit-image.

The photographs ship inside the scikit-image wheel (`skimage/data`, read as
files; see `packaged`). Targets and sources use disjoint photographs
(`TARGET_PHOTOS`, `SOURCE_PHOTOS`). Inside a target photograph the train
split crops from the left 70% of the columns and the test split from the
right 30%, so no test pixel is ever seen in training. A patch is a square
crop of a random side, resized to 28x28 (box filter), with a little noise; a
task labels it by its photograph, its crop scale, a rotation, an RGB channel
order, a blur level or a contrast level.
"""

import functools
import itertools

import numpy as np
from PIL import Image
from PIL import ImageFilter

from fennec_jax.data import packaged
from fennec_jax.data import task_images

TARGET_PHOTOS = ('astronaut.png', 'coffee.png', 'chelsea.png', 'rocket.jpg',
                 'hubble_deep_field.jpg', 'ihc.png', 'motorcycle_left.png',
                 'retina.jpg')
SOURCE_PHOTOS = ('camera.png', 'coins.png', 'moon.png', 'page.png',
                 'cell.png', 'brick.png', 'grass.png', 'gravel.png')
_TRAIN_FRACTION = 0.7
_PERMS = tuple(itertools.permutations(range(3)))
# Crop sides (pixels) of the 'scale' label's 3 bins.
SCALE_BINS = ((12, 18), (36, 48), (96, 128))


@functools.cache
def photo(name: str) -> np.ndarray:
  """A sample photograph as uint8 RGB [h, w, 3] (gray replicated)."""
  path = packaged.package_file('skimage', 'data', name)
  with Image.open(path) as im:
    return np.asarray(im.convert('RGB'))


def _region(name: str, role: str, split: str) -> np.ndarray:
  """The part of the photograph a (role, split) may crop from."""
  img = photo(name)
  if role == 'source':
    return img
  cut = int(_TRAIN_FRACTION * img.shape[1])
  return img[:, :cut] if split == 'train' else img[:, cut:]


def _crop(rng: np.random.Generator, region: np.ndarray, side: int) -> Image.Image:
  """A random square crop of `side` (clipped to the region), resized to 28."""
  h, w = region.shape[:2]
  side = int(min(side, h, w))
  y0 = int(rng.integers(0, h - side + 1))
  x0 = int(rng.integers(0, w - side + 1))
  patch = Image.fromarray(region[y0:y0 + side, x0:x0 + side])
  return patch.resize((28, 28), Image.Resampling.BOX)


def photo_task(role: str, label: str,
               photos: tuple[str, ...] | None = None,
               side: tuple[int, int] = (32, 97),
               gray: bool = False) -> task_images.Generator:
  """Patches of `photos`; the label is one property of the patch.

  Args:
    role: 'target' or 'source' (which photographs and regions).
    label: 'photo' (which of `photos`), 'scale' (`SCALE_BINS`), 'rotation'
      (4 right angles), 'channels' (6 RGB orders), 'blur' (Gaussian sigma 0,
      0.8, 1.6) or 'contrast' (0.35, 0.65 or 1.0 of the original).
    photos: the photographs (default: the role's set).
    side: [lo, hi) crop side in pixels (all labels but 'scale').
    gray: convert patches to gray (after the label's transform).

  Returns:
    The task's generator.
  """
  photos = photos or (TARGET_PHOTOS if role == 'target' else SOURCE_PHOTOS)
  k = {'photo': len(photos), 'scale': len(SCALE_BINS), 'rotation': 4,
       'channels': len(_PERMS), 'blur': 3, 'contrast': 3}[label]

  def gen(rng, split, n):
    regions = [_region(p, role, split) for p in photos]
    y = task_images.balanced_labels(rng, n, k)
    out = np.empty((n, *task_images.IMAGE_SHAPE), np.uint8)
    for i, yi in enumerate(y):
      p = int(yi) if label == 'photo' else int(rng.integers(len(photos)))
      lo, hi = SCALE_BINS[yi] if label == 'scale' else side
      patch = _crop(rng, regions[p], int(rng.integers(lo, hi)))
      if label == 'blur' and yi:
        patch = patch.filter(ImageFilter.GaussianBlur(0.8 * float(yi)))
      img = np.asarray(patch, np.float32)
      if label == 'rotation':
        img = np.rot90(img, int(yi))
      elif label == 'channels':
        img = img[..., list(_PERMS[yi])]
      elif label == 'contrast':
        mean = img.mean()
        img = mean + (0.35, 0.65, 1.0)[yi] * (img - mean)
      if gray:
        img = task_images.gray_to_rgb(img.mean(-1))
      out[i] = task_images.add_noise(rng, img, 4.0)
    return out, y

  return gen
