"""Kill the tiny run mid-way, restart the same command: finished units are
skipped (logged), nothing is duplicated, and results.csv equals an
uninterrupted run's."""

import csv
import glob
import os
import signal
import subprocess
import sys
import tempfile
import time

from absl.testing import absltest
import pytest

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))
_ENV = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=_ROOT)
# The twin shrunk further (the config's `micro` variant).
MICRO = ['--config=' + os.path.join(_ROOT, 'experiments', 'configs',
                                    'full_benchmark.py') + ':micro']


def _command(workdir):
  return [sys.executable, os.path.join(_ROOT, 'experiments', 'main.py'),
          *MICRO, f'--workdir={workdir}']


def _metrics(workdir):
  with open(os.path.join(workdir, 'results.csv')) as f:
    return [(r['method'], r['target'], r['pearson'], r['weighted_tau'],
             r['top1_regret']) for r in csv.DictReader(f)]


@pytest.mark.slow
class ResumeTest(absltest.TestCase):

  def test_kill_and_restart_gives_the_uninterrupted_results(self):
    killed = self.enterContext(tempfile.TemporaryDirectory())
    reference = self.enterContext(tempfile.TemporaryDirectory())
    ref = subprocess.Popen(_command(reference), env=_ENV,
                           stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, text=True)
    self.addCleanup(ref.wait)
    self.addCleanup(ref.kill)
    run = subprocess.Popen(_command(killed), env=_ENV,
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

    restart = subprocess.run(_command(killed), env=_ENV, capture_output=True,
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

    _, err = ref.communicate(timeout=300)
    self.assertEqual(ref.returncode, 0, err[-3000:])
    got, want = _metrics(killed), _metrics(reference)
    self.assertLen(got, len(want))
    self.assertEqual(got, want)


if __name__ == '__main__':
  absltest.main()
