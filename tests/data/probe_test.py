"""Tests for class-balanced probe sampling (fennec_jax.data.probe)."""

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np

from fennec_jax.data import probe


def _labels(counts):
  """Labels with `counts[c]` samples of class c, in shuffled order."""
  labels = np.repeat(np.arange(len(counts)), counts)
  return np.random.default_rng(123).permutation(labels)


class ClassBalancedIndicesTest(parameterized.TestCase):

  def test_balanced_when_classes_are_large(self):
    labels = _labels([300] * 7)
    idx = probe.class_balanced_indices(labels, 500, seed=1)
    self.assertLen(idx, 500)
    self.assertTrue(np.all(np.diff(idx) > 0))  # sorted and unique
    per_class = np.bincount(labels[idx], minlength=7)
    # 500 = 7 * 71 + 3: every class gets 71 or 72.
    self.assertEqual(per_class.min(), 71)
    self.assertEqual(per_class.max(), 72)
    self.assertEqual(np.sum(per_class == 72), 3)

  def test_small_class_gives_everything_and_rest_is_refilled(self):
    labels = _labels([3, 100, 100, 100])
    idx = probe.class_balanced_indices(labels, 100, seed=0)
    per_class = np.bincount(labels[idx], minlength=4)
    self.assertEqual(per_class[0], 3)
    np.testing.assert_array_equal(sorted(per_class[1:]), [32, 32, 33])
    self.assertEqual(per_class.sum(), 100)

  def test_budget_larger_than_data_returns_all(self):
    labels = _labels([5, 6])
    idx = probe.class_balanced_indices(labels, 500)
    np.testing.assert_array_equal(idx, np.arange(11))

  def test_seeded_and_deterministic(self):
    labels = _labels([50] * 10)
    a = probe.class_balanced_indices(labels, 100, seed=3)
    b = probe.class_balanced_indices(labels, 100, seed=3)
    c = probe.class_balanced_indices(labels, 100, seed=4)
    np.testing.assert_array_equal(a, b)
    self.assertFalse(np.array_equal(a, c))

  def test_arbitrary_label_values(self):
    labels = np.array([7, 7, 7, -2, -2, -2, 100, 100, 100])
    idx = probe.class_balanced_indices(labels, 6)
    self.assertEqual(sorted(np.unique(labels[idx], return_counts=True)[1]),
                     [2, 2, 2])

  @parameterized.named_parameters(
      dict(testcase_name='class_too_small', counts=[1, 10], budget=10,
           message='fewer than min_per_class'),
      dict(testcase_name='budget_too_small', counts=[10] * 6, budget=11,
           message='budget=11 is smaller'),
  )
  def test_errors(self, counts, budget, message):
    with self.assertRaisesRegex(ValueError, message):
      probe.class_balanced_indices(_labels(counts), budget)

  def test_rejects_non_integer_labels(self):
    with self.assertRaisesRegex(ValueError, 'integer class ids'):
      probe.class_balanced_indices(np.array([0.5, 1.0, 1.0]), 2,
                                   min_per_class=1)
    with self.assertRaisesRegex(ValueError, '1-D'):
      probe.class_balanced_indices(np.zeros((2, 2), np.int32), 2)


class BalancedSplitTest(absltest.TestCase):

  def test_every_class_on_both_sides(self):
    labels = _labels([2, 5, 20])
    train = probe.balanced_split(labels, 0.2, seed=0)
    for c, n in enumerate([2, 5, 20]):
      held_out = np.sum(~train & (labels == c))
      # Held out exactly; the rest (at least one) stays in train.
      self.assertEqual(held_out, {2: 1, 5: 1, 20: 4}[n])

  def test_singleton_class_stays_in_train(self):
    labels = np.array([0, 1, 1, 1])
    train = probe.balanced_split(labels, 0.5)
    self.assertTrue(train[0])


if __name__ == '__main__':
  absltest.main()
