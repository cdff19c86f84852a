"""Probes: class-balanced, seeded, and read only where asked; tfds mock data
through the real reader."""

from concurrent import futures
import tempfile

from absl.testing import absltest
import numpy as np
import tensorflow_datasets as tfds

from fennec_jax.benchmarks.full import catalogue
from fennec_jax.benchmarks.full import tasks as tasks_lib
from fennec_jax.proxy import extract


class FakeReader:
  """A task of `labels` whose images are their record index (counted)."""

  where = 'fake'

  def __init__(self, labels):
    self.labels = np.asarray(labels)
    self.images_read = []

  def __len__(self):
    return len(self.labels)

  def label(self, i):
    return int(self.labels[i])

  def image(self, i):
    self.images_read.append(i)
    return np.full((2, 2, 3), i % 256, np.uint8)


class ProbeTest(absltest.TestCase):

  def test_balanced_seeded_contiguous(self):
    labels = np.repeat([7, 3, 9, 5], [500, 300, 150, 50])  # Unbalanced.
    reader = FakeReader(labels)
    a = tasks_lib.draw_probe(reader, 40, 8, seed=0)
    b = tasks_lib.draw_probe(FakeReader(labels), 40, 8, seed=0)
    np.testing.assert_array_equal(a.indices, b.indices)
    self.assertLen(a.indices, 40)
    # Labels are the records' own, renumbered 0..C-1 in sorted order.
    raw = labels[a.indices]
    np.testing.assert_array_equal(np.unique(raw)[a.labels], raw)
    self.assertEqual(np.bincount(a.labels).tolist(), [10, 10, 10, 10])
    self.assertEqual(np.bincount(a.labels[a.proxy]).tolist(), [2, 2, 2, 2])
    c = tasks_lib.draw_probe(FakeReader(labels), 40, 8, seed=1)
    self.assertFalse(np.array_equal(a.indices, c.indices))
    self.assertEmpty(reader.images_read)  # Drawing reads labels only.

  def test_images_decoded_once_and_only_when_asked(self):
    reader = FakeReader(np.arange(100) % 4)
    images = tasks_lib.ProbeImages(reader, np.array([5, 17, 42, 80]))
    sub = images.subset(np.array([1, 3]))
    self.assertEqual(int(sub[1][0, 0, 0]), 80)
    self.assertEqual(int(images[3][0, 0, 0]), 80)  # Cached, shared.
    self.assertEqual(reader.images_read, [80])

  def test_resized_in_a_pool_equals_the_extractors_own_resizing(self):
    class Sizes(FakeReader):  # Mixed sizes, gray and RGB.
      def image(self, i):
        rng = np.random.default_rng(i)
        shape = (9 + i % 5, 12 - i % 3, 1 if i % 2 else 3)
        return rng.integers(0, 256, shape, np.uint8)

    images = tasks_lib.ProbeImages(Sizes(np.arange(40) % 4),
                                   np.arange(2, 40, 4))  # 10 images.
    prep = extract.Preprocessing(size=(8, 8), interpolation='bilinear')
    ex = extract.FeatureExtractor(
        lambda v, x: x.reshape(len(x), -1) * v, np.float32(1.0), prep,
        batch_size=8)  # A full batch of 8, then a padded one.
    want = ex(images)  # Its prefetch thread resizes image by image.
    with futures.ThreadPoolExecutor(3) as pool:
      resized = images.resized(prep, pool)
      self.assertEqual(resized.image_shape, (8, 8, 3))
      self.assertEqual(resized.get_batch(3, 3).shape, (0, 8, 8, 3))
      got = ex(resized)
    np.testing.assert_array_equal(got, want)

  def test_one_class_is_an_error(self):
    with self.assertRaisesRegex(tasks_lib.TaskDataError, 'fewer than 2'):
      tasks_lib.draw_probe(FakeReader(np.zeros(50)), 10, 5, seed=0)


def _task(key, name, label_key='label'):
  return catalogue.Task('b', key, key, 'tfds', name, '', 'train', 'image',
                        label_key, '')


class TfdsReaderTest(absltest.TestCase):

  def test_mock_data_through_the_reader(self):
    with tfds.testing.mock_data(num_examples=20):
      reader = tasks_lib.open_task(_task('dtd', 'dtd'), None, {})
      self.assertLen(reader, 20)
      image = reader.image(3)
      self.assertEqual((image.dtype, image.ndim, image.shape[-1]),
                       (np.uint8, 3, 3))
      self.assertBetween(reader.label(3), 0, 46)

  def test_missing_feature_and_folder_task(self):
    with tfds.testing.mock_data(num_examples=4):
      with self.assertRaisesRegex(tasks_lib.TaskDataError,
                                  "no feature 'labelz'.*features"):
        tasks_lib.open_task(_task('dtd', 'dtd', 'labelz'), None, {})
    folder = catalogue.Task('b', 'aid', 'aid', 'image_folder', '', '', '', '',
                            '', 'not in tfds')
    with self.assertRaisesRegex(tasks_lib.TaskDataError,
                                'task_folders.aid=DIR'):
      tasks_lib.open_task(folder, None, {})

  def test_unprepared_data_names_task_and_command(self):
    with self.assertRaisesRegex(tasks_lib.TaskDataError,
                                r'cifar10.*tfds build cifar10'):
      tasks_lib.open_task(_task('cifar10', 'cifar10'), self.enterContext(
          tempfile.TemporaryDirectory()), {})

  def test_voc_style_sequence_label_gives_its_first(self):
    self.assertEqual(tasks_lib._label(np.array([4, 2]), 'x'), 4)  # pylint: disable=protected-access
    self.assertEqual(tasks_lib._label(np.array([], np.int64), 'x'), -1)  # pylint: disable=protected-access


if __name__ == '__main__':
  absltest.main()
