"""Two JAX processes (gloo CPU collectives over localhost, 2 fake devices
each) compute what one process with the same 4 devices computes.

Stored features and proxy embeddings agree to 1e-6 and estimator scores to
1e-5: the processes read their own shards and the passes run on
the 4-device global mesh, so only XLA's per-process compilation can move a
last bit. The methods that learn from the table (popularity, fennec) give
the same metrics to 1e-5. The twin's random-weight candidates have estimator
scores that differ by ~1e-4 between models, so a last-bit change of a score
can move its correlation metrics by more than 1e-5; those rows are compared
through the scores they are computed from.
"""

import csv
import glob
import json
import os
import subprocess
import sys
import tempfile

from absl.testing import absltest
import numpy as np
import pytest

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
_ENV = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=_ROOT)
# The twin shrunk further (the config's `micro` variant).
MICRO = ['--config=' + os.path.join(_ROOT, 'experiments', 'configs',
                                    'full_benchmark.py') + ':micro']


def _rows(workdir):
  with open(os.path.join(workdir, 'results.csv')) as f:
    return {(r['method'], r['target']): r for r in csv.DictReader(f)}


@pytest.mark.slow
class LaunchLocalTest(absltest.TestCase):

  def test_two_processes_equal_one(self):
    one = self.enterContext(tempfile.TemporaryDirectory())
    two = self.enterContext(tempfile.TemporaryDirectory())
    single = subprocess.Popen(
        [sys.executable, os.path.join(_ROOT, 'experiments', 'main.py'),
         *MICRO, f'--workdir={one}'],
        env=dict(_ENV, JAX_NUM_CPU_DEVICES='4'), stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True)
    self.addCleanup(single.wait)
    self.addCleanup(single.kill)
    multi = subprocess.run(
        [sys.executable, os.path.join(_ROOT, 'experiments', 'launch_local.py'),
         '--num_processes=2', '--devices_per_process=2', '--', *MICRO,
         f'--workdir={two}'],
        env=_ENV, capture_output=True, text=True, timeout=600, check=False)
    self.assertEqual(multi.returncode, 0, multi.stderr[-3000:])
    self.assertIn('2 processes, 4 devices', multi.stderr)
    _, err = single.communicate(timeout=600)
    self.assertEqual(single.returncode, 0, err[-3000:])
    self.assertIn('1 processes, 4 devices', err)

    arrays = sorted(glob.glob(os.path.join(one, 'features', '*', '*.npz'))
                    + glob.glob(os.path.join(one, 'proxy', '*.npz')))
    self.assertLen(arrays, 4 * 3 + 4)
    for path in arrays:
      a, b = np.load(path), np.load(path.replace(one, two))
      np.testing.assert_allclose(a['features'], b['features'], atol=1e-6,
                                 err_msg=path)
    for path in glob.glob(os.path.join(one, 'scores', '*', '*.json')):
      with open(path) as f, open(path.replace(one, two)) as g:
        np.testing.assert_allclose(json.load(f)['scores']['logme'],
                                   json.load(g)['scores']['logme'],
                                   atol=1e-5, rtol=1e-5, err_msg=path)
    got, want = _rows(two), _rows(one)
    self.assertEqual(sorted(got), sorted(want))
    for (method, target), row in want.items():
      if method in ('popularity', 'fennec'):
        for metric in ('pearson', 'weighted_tau', 'top1_regret'):
          self.assertAlmostEqual(float(got[(method, target)][metric]),
                                 float(row[metric]), delta=1e-5,
                                 msg=(method, target, metric))
    # Only process 0 wrote the tables; the recommender was saved once.
    self.assertTrue(os.path.isfile(os.path.join(
        two, 'recommender', 'sfda_group1', 'proxy.json')))


if __name__ == '__main__':
  absltest.main()
