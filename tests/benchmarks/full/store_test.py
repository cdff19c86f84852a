"""The work store: atomic units, skips only what is whole and complete."""

import os
import tempfile

from absl.testing import absltest
import numpy as np

from fennec_jax import files
from fennec_jax.benchmarks.full import store as store_lib


class StoreTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.root = self.enterContext(tempfile.TemporaryDirectory())
    self.store = store_lib.Store(self.root)

  def test_a_failed_write_leaves_no_file(self):
    path = self.store.features_path('task', 'model')

    class Boom(Exception):
      pass

    def write(tmp):
      with open(tmp, 'w') as f:
        f.write('half')
      raise Boom()

    with self.assertRaises(Boom):
      files.write_atomically(path, write)
    self.assertFalse(os.path.exists(path))
    self.assertEqual(os.listdir(os.path.dirname(path)), [])
    self.assertFalse(self.store.done(path, 'unit'))
    self.assertEqual(self.store.skipped, 0)

  def test_round_trip_and_skip_count(self):
    path = self.store.features_path('task', 'model')
    feats = np.arange(6, dtype=np.float32).reshape(2, 3)
    store_lib.write_npz(path, {'features': feats})
    self.assertTrue(self.store.done(path, 'unit'))
    self.assertEqual(self.store.skipped, 1)
    np.testing.assert_array_equal(self.store.read_npz(path)['features'],
                                  feats)

  def test_stale_unit_is_not_done(self):
    path = self.store.scores_path('task', 'model')
    store_lib.write_json(path, {'scores': {'logme': 1.0}, 'left_out': []})
    wants = lambda names: lambda p: set(names) <= set(
        self.store.read_json(p)['scores'])
    self.assertTrue(self.store.done(path, 'unit', wants(['logme'])))
    self.assertFalse(self.store.done(path, 'unit', wants(['logme', 'sfda'])))
    self.assertEqual(self.store.skipped, 1)

  def test_overwrite_is_whole(self):
    path = os.path.join(self.root, 'results.csv')
    store_lib.write_text(path, 'a\n' * 1000)
    store_lib.write_text(path, 'b\n')
    with open(path) as f:
      self.assertEqual(f.read(), 'b\n')
    self.assertEqual(os.listdir(self.root), ['results.csv'])


if __name__ == '__main__':
  absltest.main()
