"""Mesh-sharded, jitted feature extraction from uint8 images.

The host only decodes and batches uint8 pixels; conversion to float, channel
fix-up (grayscale -> RGB, RGBA -> RGB), resize + center crop and normalization
with the checkpoint's own mean/std run on the device inside the same jitted step
as the model, so XLA fuses them and only uint8 crosses the host->device link.

* Static shapes: every batch has `batch_size` rows; the last one is padded with
  zeros and its padded rows are dropped from the result, so one compile serves
  the whole run (tests assert it with `chex.assert_max_traces`).
* Data parallel over a `fennec_jax.sharding` mesh of all devices (batch axis
  `'data'`, parameters replicated). `batch_size` is global and must be
  divisible by the device count (a clear `ValueError` otherwise). Multi-host:
  each process reads its own `batch_size / process_count` rows of every batch
  and hands only those to `sharding.global_array`; the variables go through
  `sharding.put_replicated`; the features are gathered back.
* A prefetch thread decodes and transfers the next batches while the device
  computes the current one; progress and ETA go to `absl.logging`.
* Sources with one common image shape are resized on the device; sources of
  mixed sizes are resized per image on the host (PIL, same geometry: shorter
  side to `size / crop_fraction`, then a center crop) and normalized on device.
"""

import dataclasses
import math
import queue
import threading
import time
from typing import Any, Callable

from absl import logging
import chex
import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import numpy as np

from fennec_jax import sharding
from fennec_jax.data import sources

# The proxy's mesh is the package's: `make_mesh(num_devices=None, axis='data',
# devices=None)`, re-exported as `fennec_jax.proxy.make_mesh`.
make_mesh = sharding.make_mesh


@dataclasses.dataclass(frozen=True)
class Preprocessing:
  """A checkpoint's evaluation preprocessing (timm / open_clip conventions).

  Attributes:
    size: model input `(height, width)`.
    mean: per-channel mean of pixels scaled to [0, 1].
    std: per-channel standard deviation.
    interpolation: `'bilinear'` or `'bicubic'`.
    crop_fraction: the shorter side is resized to `size / crop_fraction`, then
      the center `size` is cropped (1.0: resize the shorter side to `size`).
  """
  size: tuple[int, int] = (224, 224)
  mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
  std: tuple[float, float, float] = (0.229, 0.224, 0.225)
  interpolation: str = 'bicubic'
  crop_fraction: float = 1.0

  def geometry(self, h: int, w: int) -> tuple[int, int, int, int]:
    """(resized_h, resized_w, top, left) for an `h x w` input."""
    th, tw = self.size
    scale = max(th, tw) / self.crop_fraction / min(h, w)
    rh = max(th, int(math.floor(h * scale + 0.5)))
    rw = max(tw, int(math.floor(w * scale + 0.5)))
    return rh, rw, (rh - th) // 2, (rw - tw) // 2


def to_model_input(images: jax.Array, prep: Preprocessing) -> jax.Array:
  """uint8 `[b, h, w, c]` (c in 1..4) -> normalized float32 `[b, *size, 3]`."""
  x = images.astype(jnp.float32) / 255.0
  c = x.shape[-1]
  if c in (1, 2):  # Gray (+ alpha): replicate the gray channel.
    x = jnp.broadcast_to(x[..., :1], (*x.shape[:-1], 3))
  elif c == 4:  # RGBA: drop alpha.
    x = x[..., :3]
  b, h, w, _ = x.shape
  th, tw = prep.size
  rh, rw, top, left = prep.geometry(h, w)
  if (rh, rw) != (h, w):
    x = jax.image.resize(x, (b, rh, rw, 3), method=prep.interpolation,
                         antialias=True)
  x = x[:, top:top + th, left:left + tw]
  if prep.interpolation == 'bicubic':
    x = jnp.clip(x, 0.0, 1.0)  # Bicubic overshoot, as PIL clips to uint8.
  mean = jnp.asarray(prep.mean, jnp.float32)
  std = jnp.asarray(prep.std, jnp.float32)
  return (x - mean) / std


def host_resize(image: np.ndarray, prep: Preprocessing) -> np.ndarray:
  """Host-side resize + center crop of one uint8 image to RGB `[*size, 3]`."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  if image.shape[-1] in (1, 2):
    image = np.repeat(image[..., :1], 3, axis=-1)
  elif image.shape[-1] == 4:
    image = image[..., :3]
  h, w = image.shape[:2]
  th, tw = prep.size
  rh, rw, top, left = prep.geometry(h, w)
  resample = (Image.Resampling.BICUBIC if prep.interpolation == 'bicubic'
              else Image.Resampling.BILINEAR)
  out = np.asarray(Image.fromarray(image).resize((rw, rh), resample=resample))
  return out[top:top + th, left:left + tw]


class FeatureExtractor:
  """Runs `apply_fn(variables, x)` over uint8 images, sharded over a mesh."""

  def __init__(self, apply_fn: Callable[[Any, jax.Array], jax.Array],
               variables: Any, prep: Preprocessing, *, batch_size: int = 64,
               mesh: jax.sharding.Mesh | None = None, prefetch: int = 2,
               log_every_s: float = 30.0, max_traces: int | None = None):
    """Places the variables on the mesh and builds the jitted step.

    Args:
      apply_fn: `apply_fn(variables, x) -> [b, d]` for normalized float x.
      variables: model variables (replicated over the mesh).
      prep: the checkpoint's preprocessing.
      batch_size: global batch size (divisible by the mesh size).
      mesh: a mesh with a `'data'` axis (default: all devices).
      prefetch: number of batches the host thread prepares ahead.
      log_every_s: seconds between progress log lines.
      max_traces: if set, `chex.assert_max_traces` on the step (tests).

    Raises:
      ValueError: the batch size is not a positive multiple of the number of
        devices (and of the process count).
    """
    self.mesh = mesh if mesh is not None else sharding.make_mesh()
    n_dev = self.mesh.shape[sharding.DATA_AXIS]
    if batch_size <= 0 or batch_size % n_dev:
      suggestion = max(1, batch_size // n_dev) * n_dev
      raise ValueError(
          f'batch_size={batch_size} must be a positive multiple of the '
          f'{n_dev} devices on the mesh (e.g. {suggestion}).')
    self.batch_size = batch_size
    self.prep = prep
    self.prefetch = max(1, prefetch)
    self.log_every_s = log_every_s
    self._data = sharding.split(self.mesh, sharding.DATA_AXIS)
    replicated = sharding.replicated(self.mesh)
    # Every process holds the whole variables, so each hands over all of them.
    self.variables = sharding.put_replicated(variables, self.mesh)

    def step(variables, images):
      return apply_fn(variables, to_model_input(images, prep))

    if max_traces is not None:
      step = chex.assert_max_traces(step, n=max_traces)
    # Not donating: the uint8 input cannot hold the float32 features.
    self._step = jax.jit(step, in_shardings=(replicated, self._data),
                         out_shardings=self._data)

  def _local_rows(self) -> tuple[int, int]:
    """(first row, number of rows) of each global batch this process reads."""
    nproc = jax.process_count()
    if self.batch_size % nproc:
      raise ValueError(f'batch_size={self.batch_size} is not divisible by '
                       f'the {nproc} processes.')
    per = self.batch_size // nproc
    return jax.process_index() * per, per

  def _host_batches(self, src: sources.ImageSource, staging, out_q, stop):
    """Producer: decodes, pads and transfers batches (runs in a thread)."""
    try:
      n = len(src)
      first, per = self._local_rows()
      for start in range(0, n, self.batch_size):
        if stop.is_set():
          return
        lo, hi = min(start + first, n), min(start + first + per, n)
        rows = (src.get_batch(lo, hi) if hasattr(src, 'get_batch')
                and src.image_shape == staging else None)
        if rows is not None and hi - lo == per:
          batch = np.ascontiguousarray(rows)  # Fast path: one slice.
        else:
          batch = np.zeros((per, *staging), np.uint8)  # Padded rows: zeros.
          for r, i in enumerate(range(lo, hi)):
            img = src[i]
            if img.ndim == 2:
              img = img[..., None]
            if img.shape != staging:
              img = host_resize(img, self.prep)
            batch[r] = img
        arr = sharding.global_array(batch, self._data,
                                    (self.batch_size, *staging))
        out_q.put((start, arr))
      out_q.put(None)
    except BaseException as e:  # pylint: disable=broad-except
      out_q.put(e)

  def __call__(self, images: Any) -> np.ndarray:
    """Features `[n, d]` (float32) of every image, in source order.

    Args:
      images: an `ImageSource`, a uint8 array `[n, h, w(, c)]` or a list of
        uint8 images.

    Returns:
      float32 NumPy features, one row per image.

    Raises:
      ValueError: an empty source or malformed images.
    """
    src = sources.as_source(images)
    n = len(src)
    if n == 0:
      raise ValueError('No images to extract features from.')
    if src.image_shape is not None:
      staging = tuple(src.image_shape)
    else:
      staging = (*self.prep.size, 3)
      logging.info('extract: images of mixed sizes; resizing each to %s on '
                   'the host.', self.prep.size)
    num_batches = -(-n // self.batch_size)
    out_q: queue.Queue[Any] = queue.Queue(maxsize=self.prefetch)
    stop = threading.Event()
    thread = threading.Thread(target=self._host_batches,
                              args=(src, staging, out_q, stop), daemon=True)
    thread.start()
    chunks: list[np.ndarray] = []
    pending = None
    t0 = last_log = time.perf_counter()
    done = 0
    try:
      while True:
        item = out_q.get()
        if isinstance(item, BaseException):
          raise item
        if item is not None:
          start, arr = item
          out = self._step(self.variables, arr)  # Dispatch is asynchronous.
        if pending is not None:  # Fetch the previous batch while this runs.
          p_start, p_out = pending
          valid = min(self.batch_size, n - p_start)
          chunks.append(self._gather(p_out)[:valid])
          done += valid
          now = time.perf_counter()
          # Progress every log_every_s; the closing line only for a call
          # long enough to have needed one (short calls stay quiet).
          if now - last_log >= self.log_every_s or (
              done == n and now - t0 >= self.log_every_s):
            rate = done / max(now - t0, 1e-9)
            logging.info('extract: %d/%d images (%d batches), %.1f img/s, '
                         'ETA %.0f s', done, n, num_batches, rate,
                         (n - done) / max(rate, 1e-9))
            last_log = now
        if item is None:
          break
        pending = (start, out)
    finally:
      stop.set()
      while thread.is_alive():
        try:
          out_q.get(timeout=0.1)
        except queue.Empty:
          pass
      thread.join()
    return np.concatenate(chunks, axis=0)

  def _gather(self, out: jax.Array) -> np.ndarray:
    """The whole batch's features on every process, as NumPy."""
    if jax.process_count() > 1:
      return np.asarray(multihost_utils.process_allgather(out, tiled=True))
    return np.asarray(out)
