"""What every task generator shares: the image format and pixel helpers.

A generator turns `(rng, split, n)` into `n` images of `IMAGE_SHAPE` (uint8)
and their int32 labels; the helpers here balance the labels and add the
pixel noise that keeps procedural images from being trivially separable.
"""

from typing import Callable

import numpy as np

IMAGE_SHAPE = (28, 28, 3)

# (rng, split, n) -> (images uint8 [n, 28, 28, 3], labels int32 [n]).
Generator = Callable[[np.random.Generator, str, int],
                     tuple[np.ndarray, np.ndarray]]


class MissingSystemDataError(FileNotFoundError):
  """Raised when a task needs system data that is not installed."""


def balanced_labels(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
  """`n` labels in 0..k-1, each class `n // k` or one more times, shuffled."""
  return rng.permutation(np.arange(n) % k).astype(np.int32)


def gray_to_rgb(x: np.ndarray) -> np.ndarray:
  """`[..., H, W]` gray -> `[..., H, W, 3]` by repeating the channel."""
  return np.repeat(x[..., None], 3, axis=-1)


def add_noise(rng: np.random.Generator, img: np.ndarray,
              sigma: float) -> np.ndarray:
  """`img` plus Gaussian noise of std `sigma`, clipped back to uint8."""
  out = img.astype(np.float32) + rng.normal(0, sigma, img.shape)
  return np.clip(out, 0, 255).astype(np.uint8)
