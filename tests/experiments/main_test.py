"""The experiments launcher runs the tiny evaluate config end to end."""

import csv
import json
import math
import os
import subprocess
import sys
import tempfile

from absl.testing import absltest

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
# The script's own directory comes first on its sys.path; the repository root
# makes it import this checkout's fennec_jax.
_ENV = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=_ROOT)


class MainTest(absltest.TestCase):

  def test_tiny_evaluate_config_writes_results(self):
    workdir = self.enterContext(tempfile.TemporaryDirectory())
    cmd = [
        sys.executable, os.path.join(_ROOT, 'experiments', 'main.py'),
        '--config=' + os.path.join(_ROOT, 'experiments', 'configs',
                                   'evaluate.py') + ':tiny',
        "--config.methods=('popularity', 'fennec_space')",
        # K = 0 alone: K = 1 (the K-shot fold-in's calibration, 3/4 of the
        # run) goes through the same runner in tests/commands/cli_test.py
        # EvaluateTest.test_tiny_history_protocol (same methods, K, seeds).
        '--config.k_shots=(0,)',
        f'--workdir={workdir}',
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_ENV,
                          timeout=300, check=False)
    self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
    for name in ('results.csv', 'results.md', 'results.png', 'config.json'):
      self.assertTrue(os.path.exists(os.path.join(workdir, name)), name)
    with open(os.path.join(workdir, 'results.csv')) as f:
      rows = list(csv.DictReader(f))
    # 2 methods x K = 0 x (2 targets + MEAN).
    self.assertLen(rows, 2 * 1 * 3)
    self.assertEqual({r['k_shot'] for r in rows}, {'0'})
    self.assertEqual({r['target'] for r in rows}, {'pets', 'dtd', 'MEAN'})
    self.assertEqual({r['method'] for r in rows},
                     {'popularity', 'fennec_space'})
    # Every (method, K, target) has a defined weighted tau: the tiny run is
    # a real evaluation, not rows of NaN.
    self.assertFalse(any(math.isnan(float(r['weighted_tau'])) for r in rows))
    with open(os.path.join(workdir, 'config.json')) as f:
      saved = json.load(f)
    self.assertEqual(saved['k_shots'], [0])  # The override, saved.
    self.assertEqual(saved['num_seeds'], 2)
    self.assertEqual(saved['space']['max_steps'], 50)

  def test_locked_config_rejects_unknown_keys(self):
    workdir = self.enterContext(tempfile.TemporaryDirectory())
    cmd = [
        sys.executable, os.path.join(_ROOT, 'experiments', 'main.py'),
        '--config=' + os.path.join(_ROOT, 'experiments', 'configs',
                                   'evaluate.py') + ':tiny',
        '--config.no_such_key=1', f'--workdir={workdir}',
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_ENV,
                          timeout=300, check=False)
    self.assertNotEqual(proc.returncode, 0)
    self.assertIn('no_such_key', proc.stderr)


if __name__ == '__main__':
  absltest.main()
