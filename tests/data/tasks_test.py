"""Tests of the offline task suite and its tfds builder.

References are independent of the generators: colors are read back from the
pixels, positions from foreground centroids, grating orientation from the 2-D
FFT peak, glyph classes from a nearest-centroid classifier; Fashion-MNIST
targets are checked against the raw IDX test file.
"""

import os
import tempfile
from unittest import mock

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np
import tensorflow_datasets as tfds

from fennec_jax.data import tasks
from fennec_jax.data.builders import offline_tasks


def _fashion_installed() -> bool:
  try:
    tasks.fashion_mnist('t10k')
    return True
  except tasks.MissingSystemDataError:
    return False


class RegistryTest(absltest.TestCase):

  def test_suite_shape(self):
    targets = tasks.list_tasks(role='target')
    self.assertGreaterEqual(len(targets), 24)
    specs = [tasks.get_task(t) for t in targets]
    self.assertGreaterEqual(len({s.domain for s in specs}), 4)
    classes = [s.num_classes for s in specs]
    self.assertEqual(min(classes), 2)
    self.assertEqual(max(classes), 50)
    self.assertGreater(len({s.train_size for s in specs}), 3)
    sources = tasks.list_tasks(role='source')
    self.assertGreaterEqual(len(sources), 30)
    self.assertEmpty(set(targets) & set(sources))

  def test_unknown_task_lists_valid_names(self):
    with self.assertRaisesRegex(ValueError, "Unknown task 'nope'.*shape_kind"):
      tasks.get_task('nope')
    with self.assertRaisesRegex(ValueError, 'valid splits'):
      tasks.generate('shape_kind', 'validation')

  def test_no_system_data_filter(self):
    free = tasks.list_tasks(system_data=False)
    self.assertNotIn('fashion_all', free)
    self.assertIn('glyph_hebrew', free)
    self.assertTrue(all(not tasks.get_task(t).needs_system_data
                        for t in free))


class GeneratorTest(parameterized.TestCase):

  @parameterized.parameters('shape_kind', 'texture_kind', 'count_dots',
                            'glyph_hebrew', 'mix_shape-kind4_texture-kind4')
  def test_deterministic_balanced_and_split_dependent(self, name):
    x1, y1 = tasks.generate(name, 'train', 40)
    x2, y2 = tasks.generate(name, 'train', 40)
    x3, _ = tasks.generate(name, 'test', 40)
    np.testing.assert_array_equal(x1, x2)
    np.testing.assert_array_equal(y1, y2)
    self.assertFalse(np.array_equal(x1, x3))
    self.assertEqual(x1.shape, (40, 28, 28, 3))
    self.assertEqual(x1.dtype, np.uint8)
    k = tasks.get_task(name).num_classes
    counts = np.bincount(y1, minlength=k)
    self.assertLessEqual(counts.max() - counts.min(), 1)

  def test_shape_color_matches_pixels(self):
    x, y = tasks.generate('shape_color', 'test', 80)
    hits = 0
    for img, label in zip(x.astype(np.float32), y):
      flat = img.reshape(-1, 3)
      bg = np.median(flat, axis=0)
      dist = np.linalg.norm(flat - bg, axis=1)
      fg = np.median(flat[dist >= np.quantile(dist, 0.95)], axis=0)
      hits += np.argmin(np.linalg.norm(tasks.COLORS - fg, axis=1)) == label
    self.assertGreaterEqual(hits / len(y), 0.9)

  def test_shape_position_matches_centroid(self):
    x, y = tasks.generate('shape_position', 'test', 80)
    hits = 0
    for img, label in zip(x.astype(np.float32), y):
      flat = img.reshape(28, 28, 3)
      dist = np.linalg.norm(flat - np.median(flat.reshape(-1, 3), 0), axis=-1)
      rows, cols = np.nonzero(dist > np.quantile(dist, 0.9))
      quadrant = int(cols.mean() >= 14) + 2 * int(rows.mean() >= 14)
      hits += quadrant == label
    self.assertGreaterEqual(hits / len(y), 0.95)

  def test_texture_orientation_matches_fft_peak(self):
    x, y = tasks.generate('texture_orientation', 'test', 80)
    hits = 0
    for img, label in zip(x.astype(np.float32), y):
      g = img.mean(-1)
      f = np.abs(np.fft.fftshift(np.fft.fft2(g - g.mean())))
      f[14, 14] = 0
      r, c = np.unravel_index(np.argmax(f), f.shape)
      theta = np.arctan2(r - 14, c - 14) % np.pi
      bins = (theta / (np.pi / 8)).astype(int) % 8
      hits += bins == label
    # Integer FFT frequencies quantize angles; most land in the right bin.
    self.assertGreaterEqual(hits / len(y), 0.6)

  def test_count_dots_components(self):
    from scipy import ndimage  # pylint: disable=g-import-not-at-top
    x, y = tasks.generate('count_dots', 'test', 60)
    hits = 0
    for img, label in zip(x.astype(np.float32), y):
      dist = np.linalg.norm(img - np.median(img.reshape(-1, 3), 0), axis=-1)
      _, n = ndimage.label(dist > 60)
      hits += n == label + 1
    self.assertGreaterEqual(hits / len(y), 0.7)

  def test_glyph_classes_are_learnable(self):
    # A nearest-centroid classifier beats chance by far: labels follow glyphs.
    x, y = tasks.generate('glyph_digits', 'train', 300)
    xt, yt = tasks.generate('glyph_digits', 'test', 100)
    def norm(a):
      a = a.reshape(len(a), -1).astype(np.float32)
      return (a - a.mean(1, keepdims=True)) / a.std(1, keepdims=True)
    f, ft = norm(x), norm(xt)
    cent = np.stack([f[y == c].mean(0) for c in range(10)])
    pred = np.argmin(((ft[:, None] - cent[None]) ** 2).sum(-1), axis=1)
    self.assertGreater(np.mean(pred == yt), 0.2)  # Chance: 0.1.

  def test_mixture_offsets_labels(self):
    spec = tasks.get_task('mix_texture-gabor_count-big')
    _, y = tasks.generate(spec.name, 'train', 90)
    self.assertEqual(spec.num_classes, 4 + 5)
    self.assertEqual(set(y.tolist()), set(range(9)))
    self.assertEqual(spec.domains, ('texture', 'count'))


class FashionTest(absltest.TestCase):

  def test_missing_package_error_names_it(self):
    tasks.fashion_mnist.cache_clear()
    empty = self.enterContext(tempfile.TemporaryDirectory())
    with mock.patch.dict(os.environ, {tasks.FASHION_ENV: empty}):
      with self.assertRaisesRegex(tasks.MissingSystemDataError,
                                  'dataset-fashion-mnist'):
        tasks.generate('fashion_all', 'train', 10)
    tasks.fashion_mnist.cache_clear()

  def test_targets_come_from_test_file_disjointly(self):
    if not _fashion_installed():
      self.skipTest('dataset-fashion-mnist is not installed')
    raw, raw_labels = tasks.fashion_mnist('t10k')
    train_raw, _ = tasks.fashion_mnist('train')
    index = {img.tobytes(): i for i, img in enumerate(raw)}
    x, y = tasks.generate('fashion_footwear', 'train', 100)
    xt, _ = tasks.generate('fashion_footwear', 'test', 100)
    ids = [index.get(img[..., 0].tobytes()) for img in x]
    ids_t = [index.get(img[..., 0].tobytes()) for img in xt]
    self.assertNotIn(None, ids + ids_t)
    self.assertEmpty(set(ids) & set(ids_t))
    # Labels map (5, 7, 9) -> (0, 1, 2).
    np.testing.assert_array_equal(np.array([5, 7, 9])[y], raw_labels[ids])
    train_set = {img.tobytes() for img in train_raw[:5000]}
    self.assertFalse(any(img[..., 0].tobytes() in train_set for img in x))


class BuilderTest(absltest.TestCase):

  def test_tfds_round_trip_keeps_order(self):
    tfds.disable_progress_bar()
    data_dir = self.enterContext(tempfile.TemporaryDirectory())
    x, y = offline_tasks.load_arrays('shape_size', 'train', data_dir, 24, 12)
    ref_x, ref_y = tasks.generate('shape_size', 'train', 24)
    np.testing.assert_array_equal(x, ref_x)
    np.testing.assert_array_equal(y, ref_y)
    builder = offline_tasks.make_builder('shape_size', data_dir, 24, 12)
    self.assertEqual(builder.info.features['label'].num_classes, 3)
    src = builder.as_data_source('test')
    self.assertLen(src, 12)
    np.testing.assert_array_equal(
        src[3]['image'], tasks.generate('shape_size', 'test', 12)[0][3])

  def test_registered_config_reads_by_name_via_data_source(self):
    tfds.disable_progress_bar()
    data_dir = self.enterContext(tempfile.TemporaryDirectory())
    builder = offline_tasks.make_builder('shape_filled', data_dir)
    self.assertEqual(builder.builder_config.name, 'shape_filled')
    builder.download_and_prepare()
    src = tfds.data_source('offline_tasks/shape_filled', data_dir=data_dir,
                           split='train')
    spec = tasks.get_task('shape_filled')
    self.assertLen(src, spec.train_size)
    ref_x, ref_y = tasks.generate('shape_filled', 'train')
    np.testing.assert_array_equal(src[7]['image'], ref_x[7])
    self.assertEqual(src[7]['label'], ref_y[7])


if __name__ == '__main__':
  absltest.main()
