"""Image sources: folder conventions, conversions, skips and errors; tfds."""

import os
import shutil
import tempfile

from absl.testing import absltest
import numpy as np
from PIL import Image
import tensorflow_datasets as tfds

from fennec_jax.data import sources


def _tempdir(test):
  path = tempfile.mkdtemp()
  test.addCleanup(shutil.rmtree, path, ignore_errors=True)
  return path


class FolderSourceTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.root = _tempdir(self)
    rng = np.random.default_rng(0)
    self.rgb = rng.integers(0, 256, (6, 5, 3), np.uint8)
    self.gray = rng.integers(0, 256, (4, 7), np.uint8)
    self.rgba = rng.integers(0, 256, (6, 5, 4), np.uint8)
    os.makedirs(os.path.join(self.root, 'zebra'))
    os.makedirs(os.path.join(self.root, 'ant', 'nested'))
    Image.fromarray(self.rgb).save(os.path.join(self.root, 'zebra', 'b.png'))
    Image.fromarray(self.gray).save(os.path.join(self.root, 'zebra', 'a.png'))
    Image.fromarray(self.rgba).save(
        os.path.join(self.root, 'ant', 'nested', 'c.png'))
    with open(os.path.join(self.root, 'ant', 'broken.jpg'), 'wb') as f:
      f.write(b'not an image')
    with open(os.path.join(self.root, 'ant', 'notes.txt'), 'w') as f:
      f.write('ignored: not an image extension')

  def test_order_labels_conversion_and_skips(self):
    src = sources.FolderSource(self.root)
    self.assertEqual(src.names, [os.path.join('ant', 'nested', 'c.png'),
                                 os.path.join('zebra', 'a.png'),
                                 os.path.join('zebra', 'b.png')])
    self.assertEqual(src.skipped, [os.path.join('ant', 'broken.jpg')])
    self.assertEqual(src.class_names, ['ant', 'zebra'])
    np.testing.assert_array_equal(src.labels, [0, 1, 1])
    self.assertIsNone(src.image_shape)  # Mixed sizes.
    np.testing.assert_array_equal(src[0], self.rgba[..., :3])
    np.testing.assert_array_equal(src[1], np.repeat(self.gray[..., None], 3,
                                                    axis=-1))
    np.testing.assert_array_equal(src[2], self.rgb)

  def test_unlabelled_uniform_folder(self):
    root = _tempdir(self)
    for name in ('2.png', '10.png'):
      Image.fromarray(self.rgb).save(os.path.join(root, name))
    src = sources.FolderSource(root)
    self.assertEqual(src.names, ['10.png', '2.png'])  # Sorted names.
    self.assertIsNone(src.labels)
    self.assertEqual(src.image_shape, (6, 5, 3))

  def test_errors(self):
    with self.assertRaisesRegex(ValueError, 'does not exist'):
      sources.FolderSource(os.path.join(self.root, 'missing'))
    empty = _tempdir(self)
    with self.assertRaisesRegex(ValueError, 'holds no files'):
      sources.FolderSource(empty)
    Image.fromarray(self.rgb).save(os.path.join(self.root, 'top.png'))
    with self.assertRaisesRegex(ValueError, 'mixes images at the top level'):
      sources.FolderSource(self.root)
    only_bad = _tempdir(self)
    with open(os.path.join(only_bad, 'x.png'), 'wb') as f:
      f.write(b'junk')
    with self.assertRaisesRegex(ValueError, 'none of the 1 image files'):
      sources.FolderSource(only_bad)


class ArraySourceTest(absltest.TestCase):

  def test_arrays_and_lists(self):
    src = sources.ArraySource(np.zeros((3, 4, 5), np.uint8), labels=[0, 1, 0])
    self.assertEqual(src.image_shape, (4, 5, 1))
    self.assertEqual(src[2].shape, (4, 5, 1))
    mixed = sources.ArraySource([np.zeros((4, 4, 3), np.uint8),
                                 np.zeros((2, 2), np.uint8)])
    self.assertIsNone(mixed.image_shape)
    with self.assertRaisesRegex(ValueError, 'must be uint8'):
      sources.ArraySource(np.zeros((2, 4, 4, 3), np.float32))
    with self.assertRaisesRegex(ValueError, r'labels has shape \(2,\)'):
      sources.ArraySource(np.zeros((3, 4, 4, 3), np.uint8), labels=[0, 1])
    with self.assertRaisesRegex(ValueError, 'c in 1..4'):
      sources.ArraySource(np.zeros((3, 4, 4, 5), np.uint8))
    with self.assertRaisesRegex(ValueError, 'no images'):
      sources.ArraySource([])


class TfdsSourceTest(absltest.TestCase):

  def test_mock_mnist(self):
    with tfds.testing.mock_data(num_examples=6):
      src = sources.TfdsSource('mnist', split='train')
      self.assertLen(src, 6)
      self.assertEqual(src.image_shape, (28, 28, 1))
      self.assertEqual(src[3].dtype, np.uint8)
      labels = src.labels
      self.assertEqual(labels.shape, (6,))
      # Labels agree with the records, read independently.
      raw = tfds.data_source('mnist', split='train', download=False)
      np.testing.assert_array_equal(labels, [raw[i]['label'] for i in range(6)])
      with self.assertRaisesRegex(ValueError, "no feature 'pixels'"):
        sources.TfdsSource('mnist', split='train', image_key='pixels')


if __name__ == '__main__':
  absltest.main()
