"""Task embeddings against NumPy definitions; the probe sampler's properties."""

from absl.testing import absltest
import numpy as np

from fennec_jax.proxy import embed


class TaskEmbeddingTest(absltest.TestCase):

  def test_matches_numpy_definitions(self):
    rng = np.random.default_rng(0)
    f = rng.normal(size=(30, 6)) + 3.0
    labels = np.repeat([4, 7, 9], 10)
    te = embed.task_embedding(f, labels, spectrum_size=8)
    unit = f / np.linalg.norm(f, axis=1, keepdims=True)
    np.testing.assert_allclose(te.mean, unit.mean(0), rtol=1e-6)
    cov = np.cov(unit, rowvar=False, bias=True)
    np.testing.assert_allclose(te.cov_diag, np.diag(cov), rtol=1e-5)
    eig = np.sort(np.linalg.eigvalsh(cov))[::-1]
    want = np.zeros(8)
    want[:6] = eig / eig.sum()
    np.testing.assert_allclose(te.cov_spectrum, want, atol=1e-6)
    np.testing.assert_array_equal(te.classes, [4, 7, 9])
    np.testing.assert_allclose(te.prototypes[1], unit[10:20].mean(0),
                               rtol=1e-6)
    self.assertEqual(te.count, 30)

  def test_spectrum_when_fewer_images_than_dims(self):
    f = np.random.default_rng(1).normal(size=(4, 10))
    te = embed.task_embedding(f, normalize=False)
    eig = np.sort(np.linalg.eigvalsh(np.cov(f, rowvar=False, bias=True)))[::-1]
    np.testing.assert_allclose(te.cov_spectrum[:10], eig / eig.sum(),
                               atol=1e-6)
    self.assertIsNone(te.prototypes)

  def test_bad_input(self):
    with self.assertRaisesRegex(ValueError, 'non-empty'):
      embed.task_embedding(np.zeros((0, 3)))
    with self.assertRaisesRegex(ValueError, 'non-finite values in rows'):
      embed.task_embedding(np.array([[1.0, np.nan], [1.0, 2.0]]))
    with self.assertRaisesRegex(ValueError, 'labels has shape'):
      embed.task_embedding(np.ones((3, 2)), np.zeros(2))


class ProbeTest(absltest.TestCase):

  def test_class_balanced_and_deterministic(self):
    labels = np.repeat(np.arange(4), [500, 100, 30, 10])
    idx = embed.probe_indices(labels.size, labels, budget=100, seed=3)
    self.assertLen(idx, 100)
    self.assertLen(np.unique(idx), 100)
    counts = np.bincount(labels[idx], minlength=4)
    # Water-filling: the class with 10 images gives all, the rest share 90.
    np.testing.assert_array_equal(counts, [30, 30, 30, 10])
    np.testing.assert_array_equal(
        idx, embed.probe_indices(labels.size, labels, budget=100, seed=3))
    self.assertFalse(np.array_equal(
        idx, embed.probe_indices(labels.size, labels, budget=100, seed=4)))

  def test_more_classes_than_budget_and_unlabelled(self):
    labels = np.repeat(np.arange(300), 3)
    idx = embed.probe_indices(labels.size, labels, budget=100, seed=0)
    self.assertLen(np.unique(labels[idx]), 100)  # One image per class.
    idx = embed.probe_indices(1000, None, budget=100, seed=0)
    self.assertLen(np.unique(idx), 100)
    np.testing.assert_array_equal(embed.probe_indices(50, None, budget=100),
                                  np.arange(50))


if __name__ == '__main__':
  absltest.main()
