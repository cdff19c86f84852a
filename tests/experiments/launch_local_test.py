"""Two JAX processes (gloo CPU collectives over localhost, 2 fake devices
each) compute what one process with one device computes, bit for bit.

Every device runs `config.per_device_batch` rows whatever the layout, so
each device's program is the same. On the CPU one more thing moves the last
bits: XLA:CPU splits a convolution or a reduction over its intra-op thread
pool, of max(NPROC or the host's cores, local devices) threads; both runs
get NPROC=2 so that the pool is 2 threads in each whatever the host. Then
the stored features and proxy embeddings are identical, so are the
estimator scores, and results.csv agrees to 1e-5 in every metric of every
method (the evaluation runs whole in each process, on one device).
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
_ENV = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=_ROOT, NPROC='2')
_ENV.pop('JAX_NUM_CPU_DEVICES', None)
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
        env=_ENV, stdout=subprocess.DEVNULL,
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
    self.assertIn('1 processes, 1 devices', err)

    arrays = sorted(glob.glob(os.path.join(one, 'features', '*', '*.npz'))
                    + glob.glob(os.path.join(one, 'proxy', '*.npz')))
    self.assertLen(arrays, 4 * 3 + 4)
    for path in arrays:
      a, b = np.load(path), np.load(path.replace(one, two))
      np.testing.assert_array_equal(a['features'], b['features'],
                                    err_msg=path)
    scores = glob.glob(os.path.join(one, 'scores', '*', '*.json'))
    self.assertLen(scores, 4 * 3)
    for path in scores:
      with open(path) as f, open(path.replace(one, two)) as g:
        self.assertEqual(json.load(f)['scores'], json.load(g)['scores'],
                         path)
    got, want = _rows(two), _rows(one)
    self.assertEqual(sorted(got), sorted(want))
    for key, row in want.items():
      for metric in ('pearson', 'weighted_tau', 'top1_regret'):
        self.assertAlmostEqual(float(got[key][metric]), float(row[metric]),
                               delta=1e-5, msg=(key, metric))
    # Only process 0 wrote the tables; the recommender was saved once.
    self.assertTrue(os.path.isfile(os.path.join(
        two, 'recommender', 'sfda_group1', 'proxy.json')))


if __name__ == '__main__':
  absltest.main()
