"""Tests of experiments/benchmarks/paired.py against a hand computation."""

import csv
import importlib.util
import os
import tempfile

from absl.testing import absltest
import numpy as np

_PATH = os.path.join(os.path.dirname(__file__), '..', '..', 'experiments',
                     'benchmarks', 'paired.py')


def _load():
  spec = importlib.util.spec_from_file_location('paired_script', _PATH)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


class PairedTest(absltest.TestCase):

  def test_differences_interval_and_wins(self):
    paired = _load()
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
    values = paired.read_metric(path, 'weighted_tau', 0)
    self.assertEqual(values['a'], a)
    self.assertEqual(values['b'], b)
    (row,) = paired.paired(values, 'a', resamples=2000)
    diff = np.array([a[t] - b[t] for t in sorted(a)])
    self.assertAlmostEqual(row['mean_diff'], diff.mean())
    self.assertEqual((row['won'], row['targets']), (3, 4))
    # A bootstrap mean lies between the smallest and largest difference.
    self.assertTrue(diff.min() <= row['low'] <= diff.mean() <= row['high']
                    <= diff.max())
    with self.assertRaisesRegex(ValueError, "'c' not in the results"):
      paired.paired(values, 'c', resamples=10)
    with self.assertRaisesRegex(ValueError, r"no column\(s\) \['pearson'\]"):
      paired.read_metric(path, 'pearson', 0)


if __name__ == '__main__':
  absltest.main()
