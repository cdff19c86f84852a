"""tfds builder for the offline task suite: one builder config per task.

Array_record files with `Tensor` image features (PNG encoding would need
TensorFlow), so the suite builds and reads without TF:

  builder = offline_tasks.make_builder('shape_kind', data_dir)
  builder.download_and_prepare()
  src = builder.as_data_source('train')   # random access, numpy dicts
  # or, once prepared: tfds.data_source('offline_tasks/shape_kind', data_dir=d)
"""

from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from fennec_jax.data import tasks


class OfflineTaskConfig(tfds.core.BuilderConfig):
  """One task; non-default split sizes get their own config name."""

  def __init__(self, *, task: str, train_size: int | None = None,
               test_size: int | None = None, **kwargs: Any):
    spec = tasks.get_task(task)
    self.task = task
    self.train_size = int(train_size or spec.train_size)
    self.test_size = int(test_size or spec.test_size)
    name = task
    if (self.train_size, self.test_size) != (spec.train_size, spec.test_size):
      name = f'{task}_n{self.train_size}_{self.test_size}'
    super().__init__(name=name, version='1.0.0', description=spec.description,
                     **kwargs)


class OfflineTasks(tfds.core.GeneratorBasedBuilder):
  """The offline task suite (see `fennec_jax.data.tasks`)."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'First release.'}
  BUILDER_CONFIGS = [OfflineTaskConfig(task=n)
                     for n in tasks.list_tasks(suite=None)]

  def __init__(self, **kwargs: Any):
    kwargs.setdefault('file_format', 'array_record')
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    spec = tasks.get_task(self.builder_config.task)
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Tensor(shape=tasks.IMAGE_SHAPE,
                                          dtype=np.uint8),
            'label': tfds.features.ClassLabel(num_classes=spec.num_classes),
        }),
        supervised_keys=('image', 'label'),
        # Keep generation order: probes are reproducible.
        disable_shuffling=True,
        homepage='https://github.com/fennec-jax',
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Everything is generated locally.
    return {split: self._generate_examples(split) for split in tasks.SPLITS}

  def _generate_examples(self, split: str):
    cfg = self.builder_config
    size = cfg.train_size if split == 'train' else cfg.test_size
    images, labels = tasks.generate(cfg.task, split, size)
    for i in range(len(labels)):
      yield i, {'image': images[i], 'label': int(labels[i])}


def make_builder(task: str, data_dir: str, train_size: int | None = None,
                 test_size: int | None = None) -> OfflineTasks:
  """The builder of `task` (optionally with non-default split sizes)."""
  cfg = OfflineTaskConfig(task=task, train_size=train_size,
                          test_size=test_size)
  # A registered config is passed by name (tfds refuses a same-named object).
  return OfflineTasks(config=cfg.name if cfg.name == task else cfg,
                      data_dir=data_dir)


def load_arrays(task: str, split: str, data_dir: str,
                train_size: int | None = None,
                test_size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
  """Prepares `task` under `data_dir` if needed; returns a split as arrays.

  Args:
    task: task name.
    split: 'train' or 'test'.
    data_dir: tfds data directory.
    train_size: train split size (default: the task's).
    test_size: test split size (default: the task's).

  Returns:
    `(images uint8 [n, 28, 28, 3], labels int32 [n])`, in example order.
  """
  builder = make_builder(task, data_dir, train_size, test_size)
  builder.download_and_prepare()
  src = builder.as_data_source(split)
  rows = src.__getitems__(list(range(len(src))))
  images = np.stack([r['image'] for r in rows]).astype(np.uint8)
  labels = np.array([r['label'] for r in rows], np.int32)
  return images, labels
