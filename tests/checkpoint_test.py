"""Tests of the checkpoint format: round trips, refusals and damage reports."""

import json
import os
import tempfile
from unittest import mock

from absl.testing import absltest
import ml_dtypes
import numpy as np

from fennec_jax import checkpoint


def _arrays():
  """A nested dict of several dtypes, scalars and zero-size arrays."""
  rng = np.random.default_rng(0)
  return {
      'weights': rng.normal(size=(3, 4)),                    # float64
      'half': rng.normal(size=5).astype(np.float16),
      'brain': rng.normal(size=(2, 2)).astype(ml_dtypes.bfloat16),
      'ids': np.arange(6, dtype=np.int64) * 10**12,         # Beyond int32.
      'scalar': np.float32(2.5),
      'empty': np.zeros((0, 3), np.float32),
      'forest': {
          'mask': np.array([True, False, True]),
          'small': np.array([1, 255], np.uint8),
          'nested': {'phase': np.array([1 + 2j, -3j], np.complex64),
                     'nothing': np.zeros((4, 0), np.int32)},
      },
  }


def _assert_same_tree(test, got, want):
  test.assertEqual(sorted(got), sorted(want))
  for key, value in want.items():
    if isinstance(value, dict):
      _assert_same_tree(test, got[key], value)
    else:
      value = np.asarray(value)
      test.assertIsInstance(got[key], np.ndarray)
      test.assertEqual(got[key].dtype, value.dtype, key)
      test.assertEqual(got[key].shape, value.shape, key)
      np.testing.assert_array_equal(got[key], value, err_msg=key)


class CheckpointTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.root = self.enter_context(tempfile.TemporaryDirectory())
    self.path = os.path.join(self.root, 'ckpt')

  def _manifest_path(self):
    return os.path.join(self.path, checkpoint.MANIFEST)

  def _edit_manifest(self, edit):
    with open(self._manifest_path()) as f:
      manifest = json.load(f)
    edit(manifest)
    with open(self._manifest_path(), 'w') as f:
      json.dump(manifest, f)

  def test_round_trip_of_nested_dtypes_and_zero_size_arrays(self):
    meta = {'config': {'rank': 5, 'name': 'x', 'pca': None, 'w': 0.1},
            'ids': ('a', 'b'), 'counts': {3: 1, 10: 2}}
    checkpoint.save(self.path, 'Thing', _arrays(), meta)
    arrays, got_meta = checkpoint.load(self.path, 'Thing')
    _assert_same_tree(self, arrays, _arrays())
    # Meta comes back as JSON reads it: tuples as lists, keys as strings.
    self.assertEqual(got_meta, {'config': meta['config'], 'ids': ['a', 'b'],
                                'counts': {'3': 1, '10': 2}})
    # Only the finished directory is left (no temporary siblings).
    self.assertEqual(os.listdir(self.root), ['ckpt'])
    self.assertEqual(checkpoint.read_manifest(self.path)['kind'], 'Thing')

  def test_only_zero_size_arrays_need_no_orbax_state(self):
    checkpoint.save(self.path, 'Thing', {'e': np.zeros((0,), np.int8)}, {})
    self.assertEqual(os.listdir(self.path), [checkpoint.MANIFEST])
    arrays, meta = checkpoint.load(self.path, 'Thing')
    _assert_same_tree(self, arrays, {'e': np.zeros((0,), np.int8)})
    self.assertEqual(meta, {})

  def test_kind_mismatch(self):
    checkpoint.save(self.path, 'Fennec', {'a': np.ones(2)}, {})
    with self.assertRaisesRegex(
        checkpoint.CheckpointError,
        f"{self._manifest_path()}: a 'Fennec' checkpoint; expected "
        "'FennecPaper'"):
      checkpoint.load(self.path, 'FennecPaper')

  def test_format_version_mismatch(self):
    checkpoint.save(self.path, 'Thing', {'a': np.ones(2)}, {})
    self._edit_manifest(lambda m: m.update(format_version=1))
    with self.assertRaisesRegex(
        checkpoint.CheckpointError,
        f'{self._manifest_path()}: format_version 1; this code reads '
        f'{checkpoint.FORMAT_VERSION}'):
      checkpoint.load(self.path, 'Thing')

  def test_missing_directory(self):
    with self.assertRaisesRegex(checkpoint.CheckpointError,
                                f'{self.path}: no such checkpoint'):
      checkpoint.load(self.path, 'Thing')

  def test_missing_manifest(self):
    os.makedirs(self.path)
    with self.assertRaisesRegex(
        checkpoint.CheckpointError,
        f'{self.path} is not a fennec_jax checkpoint \\(no fennec.json\\)'):
      checkpoint.load(self.path, 'Thing')

  def test_manifest_that_is_not_json(self):
    checkpoint.save(self.path, 'Thing', {'a': np.ones(2)}, {})
    with open(self._manifest_path(), 'w') as f:
      f.write('{"kind": "Thing", ')
    with self.assertRaisesRegex(checkpoint.CheckpointError,
                                f'{self._manifest_path()}: not valid JSON'):
      checkpoint.load(self.path, 'Thing')
    with open(self._manifest_path(), 'w') as f:
      f.write('[1, 2]')
    with self.assertRaisesRegex(checkpoint.CheckpointError,
                                'expected a JSON object'):
      checkpoint.load(self.path, 'Thing')

  def test_edited_meta_is_a_hash_mismatch(self):
    checkpoint.save(self.path, 'Thing', {'a': np.ones(2)}, {'rank': 5})
    self._edit_manifest(lambda m: m['meta'].update(rank=6))
    with self.assertRaisesRegex(
        checkpoint.CheckpointError,
        f'{self._manifest_path()}: the content does not match its sha256'):
      checkpoint.load(self.path, 'Thing')

  def test_changed_array_is_a_hash_mismatch(self):
    arrays = {'a': np.arange(4.0), 'g': {'b': np.arange(3)}}
    checkpoint.save(self.path, 'Thing', arrays, {})
    other = os.path.join(self.root, 'other')
    checkpoint.save(other, 'Thing', {'a': np.arange(4.0) + 1,
                                     'g': {'b': np.arange(3)}}, {})
    # Same shapes and dtypes, other values: swap the orbax state in.
    state = os.path.join(self.path, checkpoint.STATE_DIR)
    os.rename(state, state + '.old')
    os.rename(os.path.join(other, checkpoint.STATE_DIR), state)
    with self.assertRaisesRegex(
        checkpoint.CheckpointError,
        f'{self._manifest_path()}: the content does not match its sha256'):
      checkpoint.load(self.path, 'Thing')

  def test_edited_shape_is_reported_naming_the_file(self):
    checkpoint.save(self.path, 'Thing', {'a': np.arange(4.0)}, {})
    self._edit_manifest(lambda m: m['arrays'].update(a=[[5], 'float64']))
    with self.assertRaisesRegex(checkpoint.CheckpointError, self.path):
      checkpoint.load(self.path, 'Thing')
    self._edit_manifest(lambda m: m['arrays'].update(a=[[4], 'no_dtype']))
    with self.assertRaisesRegex(
        checkpoint.CheckpointError,
        f'{self._manifest_path()}: unreadable array shapes'):
      checkpoint.load(self.path, 'Thing')

  def test_save_onto_an_existing_path_refuses(self):
    os.makedirs(self.path)
    with self.assertRaisesRegex(ValueError, f'{self.path} exists'):
      checkpoint.save(self.path, 'Thing', {'a': np.ones(2)}, {})
    self.assertEqual(os.listdir(self.path), [])

  def test_bad_input_writes_nothing(self):
    cases = [
        ({'s': np.array(['ab', 'c'])}, {}, "'s' has dtype <U2"),
        ({'g': {'o': np.array([object()])}}, {}, "'g/o' has dtype object"),
        ({'g': {}}, {}, "group 'g' is empty"),
        ({'a/b': np.ones(1)}, {}, 'without "/"'),
        ({'a': np.ones(1)}, {'x': object()}, 'not JSON-serializable'),
    ]
    for arrays, meta, message in cases:
      with self.assertRaisesRegex(ValueError, message):
        checkpoint.save(os.path.join(self.root, 'sub', 'ckpt'), 'Thing',
                        arrays, meta)
      self.assertEqual(os.listdir(self.root), [])

  def test_a_failing_save_leaves_no_directory(self):

    class FailingCheckpointer:
      """Writes a partial file into the state directory, then fails."""

      def __enter__(self):
        return self

      def __exit__(self, *exc):
        return False

      def save(self, directory, tree):
        del tree
        os.makedirs(directory)
        with open(os.path.join(directory, 'partial'), 'w') as f:
          f.write('x')
        raise OSError('disk full')

    with mock.patch('orbax.checkpoint.StandardCheckpointer',
                    FailingCheckpointer):
      with self.assertRaisesRegex(OSError, 'disk full'):
        checkpoint.save(self.path, 'Thing', {'a': np.ones(2)}, {})
    self.assertEqual(os.listdir(self.root), [])
    # The path is free: a later save succeeds.
    checkpoint.save(self.path, 'Thing', {'a': np.ones(2)}, {})
    _assert_same_tree(self, checkpoint.load(self.path, 'Thing')[0],
                      {'a': np.ones(2)})

  def test_checkpoint_directory_follows_the_umask(self):
    old = os.umask(0o022)
    try:
      checkpoint.save(self.path, 'Thing', {'a': np.ones(2)}, {})
    finally:
      os.umask(old)
    self.assertEqual(os.stat(self.path).st_mode & 0o777, 0o755)


if __name__ == '__main__':
  absltest.main()
