"""A catalogue task's images: its class-balanced probe, read by shards.

`open_task` opens a task's split with `tfds.data_source` (array_record; no
TensorFlow) or an image folder. `draw_probe` picks the probe the way the
paper does (class-balanced, 500 images for the estimators; a class-balanced
100 of those for the proxy) from a seeded candidate pool, so the labels of a
large split are never all read: each process reads its share of the pool's
labels and the shares are gathered. `ProbeImages` is the probe as an image
source for `fennec_jax.proxy.extract.FeatureExtractor`, which asks each
process only for its own rows of every batch: those rows alone are decoded
(once per task, then cached for every candidate model).

For the small-scale twin, the run serves every task from
`tfds.testing.mock_data` (random images of the data set's own feature specs,
deterministic), so the real reading path runs without prepared data.
"""

from concurrent import futures
import dataclasses
import os
from typing import Any

from absl import logging
import jax
from jax.experimental import multihost_utils
import numpy as np

from fennec_jax import sharding
from fennec_jax.benchmarks.full import catalogue
from fennec_jax.data import sources
from fennec_jax.proxy import embed
from fennec_jax.proxy import extract


class TaskDataError(ValueError):
  """A task whose data is not prepared or not readable."""


def _label(value: Any, where: str) -> int:
  """An int label; a sequence feature (VOC's `labels`) gives its first."""
  arr = np.asarray(value)
  if arr.ndim == 0:
    return int(arr)
  if arr.size == 0:
    return -1  # An image without a label; never drawn into the probe.
  if arr.ndim != 1:
    raise TaskDataError(f'{where}: label of shape {arr.shape}; expected a '
                        'scalar or a 1-D sequence.')
  return int(arr[0])


class TaskReader:
  """Random access to one task's images and labels."""

  def __init__(self, task: catalogue.Task, *, data_dir: str | None = None,
               folder: str | None = None):
    """Opens the task's split or image folder.

    Args:
      task: the catalogue row.
      data_dir: the tfds data directory (nothing is downloaded).
      folder: an image folder (class sub-folders) to use instead of tfds;
        required for `status='image_folder'` tasks.

    Raises:
      TaskDataError: the split is not prepared (naming the task, the tfds
        name, the data directory and the command that prepares it), the
        folder is missing, or the features are not there.
    """
    self.task = task
    self._folder = None
    self._src = None
    if folder:
      self._folder = sources.FolderSource(folder)
      if self._folder.labels is None:
        raise TaskDataError(f'task {task.key}: image folder {folder} has no '
                            'class sub-folders (labels are needed).')
      self.where = f'task {task.key} (folder {folder})'
      return
    if task.status != 'tfds':
      raise TaskDataError(
          f'task {task.key} ({task.benchmark}/{task.task}) has no tfds data '
          f'set: {task.note}. Give it with config.task_folders.{task.key}='
          'DIR, or leave it out of config.tasks.')
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    self.where = f'task {task.key} (tfds {task.tfds_name}[{task.split}])'
    try:
      self._src = tfds.data_source(task.tfds_name, split=task.split,
                                   data_dir=data_dir, download=False)
    except Exception as e:  # tfds raises many types for a missing set.
      raise TaskDataError(
          f'{self.where}: cannot open it from data_dir={data_dir!r} '
          f'({type(e).__name__}: {" ".join(str(e).split())[:200]}). '
          f'Prepare it once with '
          f'`tfds build {task.tfds_name} --data_dir=DIR '
          '--file_format=array_record` (see README, "The full benchmark on '
          'a TPU VM").') from None
    if len(self._src) == 0:
      raise TaskDataError(f'{self.where} is empty.')
    first = self._src[0]
    for key in (task.image_key, task.label_key):
      if key not in first:
        raise TaskDataError(f'{self.where} has no feature {key!r}; '
                            f'features: {sorted(first)}.')

  def close(self) -> None:
    """Drops the data source (its files are reopened on next use)."""
    self._src = None

  def __len__(self) -> int:
    return len(self._folder if self._folder is not None else self._src)

  def label(self, index: int) -> int:
    if self._folder is not None:
      return int(self._folder.labels[index])
    return _label(self._src[int(index)][self.task.label_key],
                  f'{self.where} record {index}')

  def image(self, index: int) -> np.ndarray:
    if self._folder is not None:
      return self._folder[int(index)]
    image = np.asarray(self._src[int(index)][self.task.image_key])
    if image.dtype != np.uint8:
      raise TaskDataError(f'{self.where} record {index}: image dtype '
                          f'{image.dtype}; expected uint8.')
    return image[..., None] if image.ndim == 2 else image


def open_task(task: catalogue.Task, data_dir: str | None,
              folders: dict[str, str]) -> TaskReader:
  """`TaskReader` of a catalogue task (a folder from `folders` wins)."""
  folder = folders.get(task.key)
  if folder and not os.path.isdir(folder):
    raise TaskDataError(f'task {task.key}: image folder {folder} does not '
                        'exist.')
  return TaskReader(task, data_dir=data_dir, folder=folder)


def _gather_rows(local: np.ndarray, n: int) -> np.ndarray:
  """The `[n]` array whose `process_rows(n)` slice each process holds."""
  if jax.process_count() == 1:
    return local
  per = -(-n // jax.process_count())
  padded = np.full((per,), -2, np.int64)
  padded[:len(local)] = local
  out = np.asarray(multihost_utils.process_allgather(padded, tiled=True))
  return out[:n]


@dataclasses.dataclass(frozen=True)
class Probe:
  """A task's probe.

  Attributes:
    indices: `[n]` record indices in the split (the estimators' probe).
    labels: `[n]` contiguous class ids 0..C-1 (as the estimators need).
    proxy: `[p]` positions in `indices` of the proxy's subset.
  """
  indices: np.ndarray
  labels: np.ndarray
  proxy: np.ndarray


def draw_probe(reader: TaskReader, num_images: int, num_proxy: int,
               seed: int, pool_factor: int = 10) -> Probe:
  """The class-balanced probe and the proxy's subset of it, seeded.

  A deterministic function of (split size, labels, sizes, seed): every
  process computes the same probe; a restart draws it again identically.

  Args:
    reader: the task.
    num_images: probe size for the estimators (500 in the paper).
    num_proxy: the proxy's images, drawn class-balanced from the probe.
    seed: the draw's seed.
    pool_factor: labels of `pool_factor * num_images` random records are
      read to balance the classes (the whole split if smaller).

  Returns:
    The `Probe`.

  Raises:
    TaskDataError: fewer than 2 classes among the labelled pool records.
  """
  n = len(reader)
  rng = np.random.default_rng([seed, n])
  pool = np.sort(rng.permutation(n)[:min(n, pool_factor * num_images)])
  rows = sharding.process_rows(len(pool))
  local = np.asarray([reader.label(i) for i in pool[rows]], np.int64)
  labels = _gather_rows(local, len(pool))
  keep = labels >= 0
  pool, labels = pool[keep], labels[keep]
  if len(np.unique(labels)) < 2:
    raise TaskDataError(f'{reader.where}: fewer than 2 classes among '
                        f'{len(pool)} labelled records.')
  pick = embed.probe_indices(len(pool), labels, budget=num_images, seed=seed)
  indices, raw = pool[pick], labels[pick]
  _, contiguous = np.unique(raw, return_inverse=True)
  proxy = embed.probe_indices(len(indices), contiguous, budget=num_proxy,
                              seed=seed)
  logging.info('%s: probe of %d images (%d classes), proxy subset %d, from '
               'a pool of %d of %d records.', reader.where, len(indices),
               contiguous.max() + 1, len(proxy), len(pool), n)
  return Probe(indices.astype(np.int64), contiguous.astype(np.int64),
               proxy.astype(np.int64))


class ProbeImages:
  """The probe (or a subset of it) as a `FeatureExtractor` image source.

  Decodes an image the first time a process asks for it and keeps it for
  the task's other models; the extractor asks each process only for its own
  rows, so each process reads its shard of the probe.
  """

  def __init__(self, reader: TaskReader, indices: np.ndarray,
               cache: dict[int, np.ndarray] | None = None):
    self._reader = reader
    self._indices = np.asarray(indices, np.int64)
    self._cache = {} if cache is None else cache
    self.labels = None
    self.names = None
    self.image_shape = None  # Sizes may differ: resized per model.

  def subset(self, positions: np.ndarray) -> 'ProbeImages':
    """The images at `positions` of this probe, sharing its cache."""
    return ProbeImages(self._reader, self._indices[positions], self._cache)

  @property
  def decoded(self) -> int:
    """Images this process has decoded so far."""
    return len(self._cache)

  def __len__(self) -> int:
    return len(self._indices)

  def __getitem__(self, index: int) -> np.ndarray:
    record = int(self._indices[index])
    if record not in self._cache:
      self._cache[record] = self._reader.image(record)
    return self._cache[record]

  def resized(self, prep: extract.Preprocessing,
              pool: futures.Executor) -> 'ResizedProbe':
    """This probe at `prep`'s input size, resized by `pool`'s threads."""
    return ResizedProbe(self, prep, pool)


class ResizedProbe:
  """A probe resized on the host to a model's input, batch by batch in a
  thread pool (PIL decodes and resizes without the GIL).

  The extractor reads a source of its input size whole batches at a time
  (`get_batch`); its own fallback resizes one image after another in its
  prefetch thread. The pixels are the same (`extract.host_resize`); measured
  with experiments/benchmarks/full_input_pipeline.py.
  """

  def __init__(self, images: ProbeImages, prep: extract.Preprocessing,
               pool: futures.Executor):
    self._images, self._prep, self._pool = images, prep, pool
    self._done: dict[int, np.ndarray] = {}
    self.image_shape = (*prep.size, 3)
    self.labels = None
    self.names = None

  def __len__(self) -> int:
    return len(self._images)

  def _one(self, index: int) -> np.ndarray:
    if index not in self._done:
      image = self._images[index]
      if image.shape != self.image_shape:
        image = extract.host_resize(image, self._prep)
      self._done[index] = image
    return self._done[index]

  def __getitem__(self, index: int) -> np.ndarray:
    return self._one(int(index))

  def get_batch(self, start: int, stop: int) -> np.ndarray:
    """Rows `start:stop`, resized in parallel (none: a process whose share
    of a short batch is empty)."""
    if stop <= start:
      return np.zeros((0, *self.image_shape), np.uint8)
    return np.stack(list(self._pool.map(self._one, range(start, stop))))
