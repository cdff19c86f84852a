"""The micro full benchmark through the launchers, against one uninterrupted
single-process run (started once for the module, beside the first test).

Two JAX processes (gloo CPU collectives over localhost, 2 fake devices
each) compute what one process with one device computes, bit for bit.
Every device runs `config.per_device_batch` rows whatever the layout, so
each device's program is the same. On the CPU one more thing moves the last
bits: XLA:CPU splits a convolution or a reduction over its intra-op thread
pool, of max(NPROC or the host's cores, local devices) threads; every run
here gets NPROC=2 so that the pool is 2 threads in each whatever the host.
Then the stored features and proxy embeddings are identical, so are the
estimator scores, and results.csv agrees to 1e-5 in every metric of every
method (the evaluation runs whole in each process, on one device).

Killed mid-way and restarted with the same command, a run skips its
finished units (logged), duplicates nothing, and its results.csv equals the
uninterrupted run's. The single-process runs share a persistent compilation
cache (a temporary directory), so the killed run and its restart load the
programs the reference compiled instead of compiling them again.
"""

import csv
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

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
_MAIN = os.path.join(_ROOT, 'experiments', 'main.py')

_TMP = None
_REF = None  # The uninterrupted single-process run: (workdir, Popen).


def _cached_env():
  """`_ENV` with the module's persistent compilation cache, every program."""
  return dict(_ENV, JAX_COMPILATION_CACHE_DIR=os.path.join(_TMP, 'jax_cache'),
              JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0',
              JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES='-1')


def setUpModule():
  global _TMP, _REF
  _TMP = tempfile.mkdtemp()
  workdir = os.path.join(_TMP, 'reference')
  with open(os.path.join(_TMP, 'reference.log'), 'w') as log:
    _REF = workdir, subprocess.Popen(
        [sys.executable, _MAIN, *MICRO, f'--workdir={workdir}'],
        env=_cached_env(), stdout=subprocess.DEVNULL, stderr=log)


def tearDownModule():
  proc = _REF[1]
  if proc.poll() is None:
    proc.kill()
  proc.wait()
  shutil.rmtree(_TMP, ignore_errors=True)


def _reference(test):
  """The reference's workdir and stderr, once it finished successfully."""
  workdir, proc = _REF
  proc.wait(timeout=600)
  with open(os.path.join(_TMP, 'reference.log')) as f:
    err = f.read()
  test.assertEqual(proc.returncode, 0, err[-3000:])
  return workdir, err


def _rows(workdir):
  with open(os.path.join(workdir, 'results.csv')) as f:
    return {(r['method'], r['target']): r for r in csv.DictReader(f)}


def _metrics(workdir):
  with open(os.path.join(workdir, 'results.csv')) as f:
    return [(r['method'], r['target'], r['pearson'], r['weighted_tau'],
             r['top1_regret']) for r in csv.DictReader(f)]


@pytest.mark.slow
class LaunchLocalTest(absltest.TestCase):

  def test_two_processes_equal_one(self):
    two = self.enterContext(tempfile.TemporaryDirectory())
    multi = subprocess.run(
        [sys.executable, os.path.join(_ROOT, 'experiments', 'launch_local.py'),
         '--num_processes=2', '--devices_per_process=2', '--', *MICRO,
         f'--workdir={two}'],
        env=_ENV, capture_output=True, text=True, timeout=600, check=False)
    self.assertEqual(multi.returncode, 0, multi.stderr[-3000:])
    self.assertIn('2 processes, 4 devices', multi.stderr)
    one, err = _reference(self)
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


@pytest.mark.slow
class ResumeTest(absltest.TestCase):
  """(Was tests/benchmarks/full/resume_test.py, with its own reference run.)"""

  def test_kill_and_restart_gives_the_uninterrupted_results(self):
    reference, _ = _reference(self)  # Its programs are in the cache now.
    killed = self.enterContext(tempfile.TemporaryDirectory())
    command = [sys.executable, _MAIN, *MICRO, f'--workdir={killed}']
    run = subprocess.Popen(command, env=_cached_env(),
                           stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    self.addCleanup(run.wait)
    self.addCleanup(run.kill)
    scores = os.path.join(killed, 'scores', '*', '*.json')
    deadline = time.time() + 240
    while len(glob.glob(scores)) < 3 and run.poll() is None:
      self.assertLess(time.time(), deadline, 'no scores after 240 s')
      time.sleep(0.05)
    run.send_signal(signal.SIGKILL)
    run.wait()
    done_before = len(glob.glob(scores))
    self.assertBetween(done_before, 3, 11)  # Killed mid-way.
    self.assertFalse(os.path.exists(os.path.join(killed, 'results.csv')))

    restart = subprocess.run(command, env=_cached_env(), capture_output=True,
                             text=True, timeout=300, check=False)
    self.assertEqual(restart.returncode, 0, restart.stderr[-3000:])
    skips = [l for l in restart.stderr.splitlines()
             if 'resume:' in l and 'skipped' in l]
    # Every unit stored before the kill is skipped: probes, proxy and the
    # finished (task, model) scores.
    self.assertGreaterEqual(
        len([l for l in skips if 'scores of' in l]), done_before)
    self.assertLen(glob.glob(scores), 12)
    self.assertEmpty(glob.glob(os.path.join(killed, '**', '*.tmp*'),
                               recursive=True, include_hidden=True))
    got, want = _metrics(killed), _metrics(reference)
    self.assertLen(got, len(want))
    self.assertEqual(got, want)


if __name__ == '__main__':
  absltest.main()
