"""Tests of the paired comparison in `fennec_jax.benchmarks.report`."""

import csv
import os
import tempfile

from absl.testing import absltest
import numpy as np

from fennec_jax.benchmarks import report


class PairedDifferencesTest(absltest.TestCase):

  def test_differences_interval_and_wins(self):
    d = self.enterContext(tempfile.TemporaryDirectory())
    path = os.path.join(d, 'results.csv')
    a = {'t0': 0.5, 't1': 0.7, 't2': 0.2, 't3': 0.9}
    b = {'t0': 0.4, 't1': 0.8, 't2': 0.1, 't3': 0.6}
    with open(path, 'w', newline='') as f:
      w = csv.writer(f)
      w.writerow(['method', 'k_shot', 'target', 'weighted_tau'])
      for t in a:
        w.writerow(['a', 0, t, a[t]])
        w.writerow(['b', 0, t, b[t]])
        w.writerow(['b', 5, t, 0.0])  # Another K: ignored.
      w.writerow(['a', 0, 'MEAN', 0.575])
      w.writerow(['b', 0, 'MEAN', 0.475])
      w.writerow(['b', 0, 't4', ''])  # Undefined: left out.
    values = report.read_metric_csv(path, 'weighted_tau', 0)
    self.assertEqual(values, {'a': a, 'b': b})
    (row,) = report.paired_differences(values, 'a', num_resamples=2000)
    diff = np.array([a[t] - b[t] for t in sorted(a)])
    self.assertEqual(row['other'], 'b')
    self.assertAlmostEqual(row['mean_diff'], diff.mean())
    self.assertEqual((row['won'], row['targets']), (3, 4))
    # The paired interval is the bootstrap of the differences' mean, and a
    # bootstrap mean lies between the smallest and largest difference.
    self.assertEqual((row['low'], row['high']),
                     report.bootstrap_ci(diff, 2000))
    self.assertTrue(diff.min() <= row['low'] <= diff.mean() <= row['high']
                    <= diff.max())
    with self.assertRaisesRegex(ValueError, "'c' not in the results"):
      report.paired_differences(values, 'c')
    with self.assertRaisesRegex(ValueError, r"no column\(s\) \['pearson'\]"):
      report.read_metric_csv(path, 'pearson', 0)


if __name__ == '__main__':
  absltest.main()
