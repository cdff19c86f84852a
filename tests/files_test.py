"""`files.write_atomically`: the whole file or directory, or the old one."""

import os
import tempfile

from absl.testing import absltest
import numpy as np

from fennec_jax import files


class WriteAtomicallyTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.root = self.enterContext(tempfile.TemporaryDirectory())

  def test_a_directory_arrives_whole_or_not_at_all(self):
    path = os.path.join(self.root, 'sub', 'ckpt')

    def write(tmp):
      os.makedirs(tmp)
      for name in ('a.txt', 'b.txt'):
        with open(os.path.join(tmp, name), 'w') as f:
          f.write(name)

    files.write_atomically(path, write)
    self.assertEqual(sorted(os.listdir(path)), ['a.txt', 'b.txt'])

    def fail(tmp):
      os.makedirs(tmp)
      with open(os.path.join(tmp, 'half.txt'), 'w') as f:
        f.write('half')
      raise OSError('disk full')

    other = os.path.join(self.root, 'sub', 'other')
    with self.assertRaisesRegex(OSError, 'disk full'):
      files.write_atomically(other, fail)
    self.assertEqual(os.listdir(os.path.join(self.root, 'sub')), ['ckpt'])

  def test_suffix_kept_for_writers_that_add_one(self):
    path = os.path.join(self.root, 'f.npz')
    files.write_atomically(path, lambda tmp: np.savez(tmp, a=np.arange(3)))
    self.assertEqual(os.listdir(self.root), ['f.npz'])
    with np.load(path) as z:
      np.testing.assert_array_equal(z['a'], np.arange(3))

  def test_text_replaces_the_old_file(self):
    path = os.path.join(self.root, 'x.json')
    files.write_text(path, 'old')
    files.write_text(path, 'new')
    with open(path) as f:
      self.assertEqual(f.read(), 'new')
    self.assertEqual(os.listdir(self.root), ['x.json'])


if __name__ == '__main__':
  absltest.main()
