"""Tests of the models' metadata features (`model_metadata`)."""

from absl.testing import absltest
import numpy as np

from fennec_jax import model_metadata


class ModelFeaturesTest(absltest.TestCase):

  def test_numeric_log_missing_and_one_hot_columns(self):
    emb, names = model_metadata.model_features({
        'num_params': np.array([10.0, 1000.0, np.nan, 100.0]),
        'family': np.array(['a', 'b', 'a', 'a'], object),
        'name': np.array(['w', 'x', 'y', 'z'], object),
        'flat': np.ones(4)})
    self.assertEqual(names, ['family=a', 'family=b', 'num_params',
                             'num_params:missing'])
    np.testing.assert_allclose(emb[:, 2], [1.0, 3.0, 2.0, 2.0])
    np.testing.assert_allclose(emb[:, 3], [0, 0, 1, 0])
    np.testing.assert_allclose(emb[:, 0], [1, 0, 1, 1])

  def test_no_usable_column_names_the_history_and_its_columns(self):
    with self.assertRaisesRegex(ValueError, r"'zoo'.*\['flat', 'name'\]"):
      model_metadata.model_features(
          {'name': np.array(['w', 'x'], object), 'flat': np.ones(2)}, 'zoo')


if __name__ == '__main__':
  absltest.main()
