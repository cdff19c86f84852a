"""Texture tasks: procedural patterns in two random, well-separated colors.

A texture is a [28, 28] pattern in [0, 1] (stripes, checkers, dots, noise,
waves, grids, rings, blotches, sine gratings) at a frequency and orientation;
a task labels it by its kind, an orientation bin or a frequency bin.
"""

import numpy as np

from fennec_jax.data import task_images

TEXTURES = ('stripes', 'checker', 'dots', 'noise', 'waves', 'grid', 'rings',
            'blotches')
_YY, _XX = np.mgrid[0:28, 0:28].astype(np.float32)


def _texture(rng: np.random.Generator, kind: str, freq: float,
             theta: float) -> np.ndarray:
  """A [28, 28] pattern in [0, 1]."""
  phase = rng.uniform(0, 2 * np.pi)
  u = _XX * np.cos(theta) + _YY * np.sin(theta)
  v = -_XX * np.sin(theta) + _YY * np.cos(theta)
  if kind == 'stripes':
    p = np.sin(2 * np.pi * freq * u + phase) > 0
  elif kind == 'sine':
    p = 0.5 + 0.5 * np.sin(2 * np.pi * freq * u + phase)
  elif kind == 'checker':
    s = 0.5 / freq
    p = (np.floor(u / s) + np.floor(v / s)) % 2
  elif kind == 'dots':
    s = 1.0 / freq
    p = (((u % s) - s / 2) ** 2 + ((v % s) - s / 2) ** 2) < (s / 3.2) ** 2
  elif kind == 'noise':
    p = rng.random((28, 28)) > 0.5
  elif kind == 'waves':
    p = np.sin(2 * np.pi * freq * u + phase) * np.sin(
        2 * np.pi * freq * v + phase)
    p = p > 0.0
  elif kind == 'grid':
    s = 1.0 / freq
    p = ((u % s) < 1.6) | ((v % s) < 1.6)
  elif kind == 'rings':
    cx, cy = rng.uniform(4, 24, 2)
    p = np.sin(2 * np.pi * freq * np.hypot(_XX - cx, _YY - cy) + phase) > 0
  elif kind == 'blotches':
    from scipy import ndimage  # pylint: disable=g-import-not-at-top
    z = ndimage.gaussian_filter(rng.normal(size=(28, 28)), 0.35 / freq,
                                mode='wrap')
    p = z > 0
  else:
    raise ValueError(f'Unknown texture {kind!r}')
  return p.astype(np.float32)


def _colorize(rng, p, noise=14.0):
  """Pattern `p` blended between two random colors at least 150 apart."""
  a, b = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
  while np.abs(a - b).sum() < 150:
    b = rng.uniform(0, 255, 3)
  img = a + (b - a) * p[..., None]
  return task_images.add_noise(rng, img, noise)


def texture_task(label: str, kinds: tuple[str, ...] = TEXTURES,
                 bins: int = 8, fmin: float = 0.08,
                 fmax: float = 0.3) -> task_images.Generator:
  """Texture label: its kind, orientation bin, frequency bin or blob scale.

  Args:
    label: 'kind' (one class per entry of `kinds`), 'orientation' or
      'frequency' (`bins` classes; frequency bins are log-spaced).
    kinds: the texture kinds drawn (see `TEXTURES`; also 'sine').
    bins: number of orientation or frequency bins.
    fmin: lowest spatial frequency (cycles per pixel).
    fmax: highest spatial frequency.

  Returns:
    The task's generator.
  """
  k = len(kinds) if label == 'kind' else bins

  def gen(rng, split, n):
    del split
    y = task_images.balanced_labels(rng, n, k)
    out = np.empty((n, *task_images.IMAGE_SHAPE), np.uint8)
    for i, yi in enumerate(y):
      freq = rng.uniform(fmin, fmax)
      theta = rng.uniform(0, np.pi)
      kind = kinds[rng.integers(len(kinds))]
      if label == 'kind':
        kind = kinds[yi]
      elif label == 'orientation':
        theta = (yi + rng.uniform(0.1, 0.9)) * np.pi / bins
      elif label == 'frequency':
        edges = np.geomspace(fmin, fmax, bins + 1)
        freq = rng.uniform(edges[yi], edges[yi + 1])
      out[i] = _colorize(rng, _texture(rng, kind, freq, theta))
    return out, y

  return gen

