"""Tests of the v2 task suite: registry, packaged-data generators, splits.

The digit and photo generators are checked on synthetic stand-ins for the
packaged files (patched `uci_digits` / `photo`), so the checks run without
scikit-learn or scikit-image; the real files are read only where installed.
References are independent of the generators: a patch's photograph is read
back from its mean color, a channel order from the color's channel ranks, a
rotation from where a bright corner ends up.
"""

import itertools
from unittest import mock

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np

from fennec_jax.data import digits
from fennec_jax.data import glyphs
from fennec_jax.data import packaged
from fennec_jax.data import photos
from fennec_jax.data import suite_v2
from fennec_jax.data import tasks


def _installed(package: str, *parts: str) -> bool:
  try:
    packaged.package_file(package, *parts)
    return True
  except tasks.MissingSystemDataError:
    return False


def _fake_digits():
  """Digit c: an 8x8 image whose top row has c+1 bright pixels."""
  labels = (np.arange(200, dtype=np.int32) // 2) % 10
  images = np.zeros((200, 8, 8), np.uint8)
  for i, c in enumerate(labels):
    images[i, 0, :min(c + 1, 8)] = 255
    images[i, 4, :] = i % 7  # Makes rows distinct.
  return images, labels


# Distinct, channel-ordered colors: photo p is constant COLORS[p].
_COLORS = np.array([[200, 100, 30], [30, 200, 100], [100, 30, 200],
                    [220, 60, 140], [140, 220, 60], [60, 140, 220],
                    [250, 250, 10], [10, 250, 250]], np.uint8)


def _fake_photo(name):
  names = photos.TARGET_PHOTOS + photos.SOURCE_PHOTOS
  img = np.empty((200, 300, 3), np.uint8)
  img[:] = _COLORS[names.index(name) % 8]
  return img


class RegistryTest(absltest.TestCase):

  def test_v2_suite_shape_and_v1_unchanged(self):
    self.assertLen(tasks.list_tasks(role='target'), 26)
    self.assertLen(tasks.list_tasks(role='source'), 30)
    targets = tasks.list_tasks(role='target', suite='v2')
    sources = tasks.list_tasks(role='source', suite='v2')
    self.assertGreaterEqual(len(targets), 50)
    self.assertLen(sources, 42)
    specs = [tasks.get_task(t) for t in targets]
    self.assertGreaterEqual(len({s.domain for s in specs}), 6)
    self.assertLessEqual(max(s.num_classes for s in specs), 10)
    self.assertEmpty(set(targets) & set(sources))
    self.assertEmpty(set(tasks.list_tasks(suite='v2')) -
                     set(tasks.list_tasks(suite=None)))
    for name in suite_v2.V1_TARGETS + suite_v2.V1_SOURCES:
      self.assertEqual(tasks.get_task(name).suite, 'v1')
    with self.assertRaisesRegex(ValueError, "suite='v3'"):
      tasks.list_tasks(suite='v3')

  def test_packaged_domains_need_system_data(self):
    for name in ('digits_all', 'photo_which', 'src_photo_scale',
                 'mix_digits-all_glyph-lower'):
      self.assertTrue(tasks.get_task(name).needs_system_data, name)
    self.assertFalse(tasks.get_task('glyph10_hebrew').needs_system_data)

  def test_glyph_subsets_span_the_script(self):
    for cs in glyphs.SUBSET10:
      sub = glyphs.CHARSETS[f'{cs}_10']
      full = glyphs.CHARSETS[cs]
      self.assertLen(set(sub), 10)
      self.assertTrue(set(sub) <= set(full))
      self.assertGreater(full.index(sub[-1]), len(full) // 2)

  def test_missing_package_names_the_extra(self):
    with self.assertRaisesRegex(tasks.MissingSystemDataError,
                                r'nonexistent_pkg_x.*\.\[offline2\]'):
      packaged.package_file('nonexistent_pkg_x', 'data', 'a.png')


class DigitsTest(parameterized.TestCase):

  def test_pools_are_disjoint_and_cover_the_rows(self):
    with mock.patch.object(digits, 'uci_digits', _fake_digits):
      tr = digits._pool('target', 'train')
      te = digits._pool('target', 'test')
      src = digits._pool('source', 'train')
      np.testing.assert_array_equal(src, digits._pool('source', 'test'))
    self.assertEmpty(set(tr) & set(te))
    self.assertEmpty((set(tr) | set(te)) & set(src))
    self.assertEqual(len(tr) + len(te) + len(src), 200)

  @parameterized.parameters('none', 'invert', 'parity', 'rotation_label')
  def test_labels_follow_the_digit(self, transform):
    with mock.patch.object(digits, 'uci_digits', _fake_digits):
      gen = digits.digit_task('target', (3, 7), transform, (16, 17))
      x1, y1 = gen(np.random.default_rng(0), 'train', 30)
      x2, y2 = gen(np.random.default_rng(0), 'train', 30)
    np.testing.assert_array_equal(x1, x2)
    np.testing.assert_array_equal(y1, y2)
    self.assertEqual(x1.shape, (30, 28, 28, 3))
    self.assertEqual(x1.dtype, np.uint8)
    if transform == 'rotation_label':
      self.assertEqual(set(y1), {0, 1, 2, 3})
      return
    # Bright-pixel count of a digit: 4 for a 3, 8 for a 7 (scaled up).
    ink = (x1[..., 0].astype(np.float32) > 127).sum((1, 2))
    if transform == 'invert':
      ink = (x1[..., 0].astype(np.float32) < 127).sum((1, 2))
    want = y1 if transform != 'parity' else (y1 == 1).astype(int)
    # parity: 3 and 7 are both odd.
    if transform == 'parity':
      self.assertTrue(np.all(y1 == 1))
      return
    self.assertGreater(ink[want == 1].min(), ink[want == 0].max())

  @absltest.skipUnless(_installed('sklearn', 'datasets', 'data',
                                  'digits.csv.gz'), 'scikit-learn missing')
  def test_real_file(self):
    images, labels = digits.uci_digits()
    self.assertEqual(images.shape, (1797, 8, 8))
    self.assertEqual(np.bincount(labels).min(), 174)
    x, y = tasks.generate('digits_all', 'test')
    self.assertEqual(x.shape, (360, 28, 28, 3))


class PhotosTest(parameterized.TestCase):

  def _gen(self, label, n=48, split='train', role='target'):
    with mock.patch.object(photos, 'photo', _fake_photo):
      return photos.photo_task(role, label)(np.random.default_rng(1), split,
                                            n)

  def test_which_photo_from_color(self):
    x, y = self._gen('photo')
    mean = x.reshape(len(x), -1, 3).mean(1)
    got = np.argmin(((mean[:, None] - _COLORS[None]) ** 2).sum(-1), 1)
    np.testing.assert_array_equal(got, y)

  def test_channel_order_from_color_ranks(self):
    x, y = self._gen('channels')
    perms = list(itertools.permutations(range(3)))
    mean = x.reshape(len(x), -1, 3).mean(1)
    for m, yi in zip(mean, y):
      for p in range(8):  # The photo whose permuted color this is.
        if np.abs(_COLORS[p][list(perms[yi])] - m).max() < 6:
          break
      else:
        self.fail(f'no photo color permuted by {perms[yi]} gives {m}')

  def test_train_and_test_regions_are_disjoint(self):
    img = np.arange(200 * 300, dtype=np.float32).reshape(200, 300)
    img = np.repeat(img[..., None], 3, -1)
    with mock.patch.object(photos, 'photo', lambda name: img):
      tr = photos._region('astronaut.png', 'target', 'train')
      te = photos._region('astronaut.png', 'target', 'test')
      src = photos._region('camera.png', 'source', 'train')
    self.assertEmpty(set(tr[..., 0].ravel()) & set(te[..., 0].ravel()))
    self.assertEqual(tr.shape[1] + te.shape[1], 300)
    self.assertEqual(src.shape, img.shape)
    self.assertEmpty(set(photos.TARGET_PHOTOS) & set(photos.SOURCE_PHOTOS))

  @parameterized.parameters('scale', 'rotation', 'blur', 'contrast')
  def test_shapes_labels_determinism(self, label):
    x1, y1 = self._gen(label)
    x2, y2 = self._gen(label)
    np.testing.assert_array_equal(x1, x2)
    np.testing.assert_array_equal(y1, y2)
    self.assertEqual(x1.shape, (48, 28, 28, 3))
    counts = np.bincount(y1)
    self.assertLessEqual(counts.max() - counts.min(), 1)

  @absltest.skipUnless(_installed('skimage', 'data', 'astronaut.png'),
                       'scikit-image missing')
  def test_real_files(self):
    for name in photos.TARGET_PHOTOS + photos.SOURCE_PHOTOS:
      img = photos.photo(name)
      self.assertEqual(img.ndim, 3)
      self.assertGreaterEqual(min(img.shape[:2]), 150, name)
    x, _ = tasks.generate('photo_scale', 'test', 30)
    self.assertEqual(x.shape, (30, 28, 28, 3))


if __name__ == '__main__':
  absltest.main()
