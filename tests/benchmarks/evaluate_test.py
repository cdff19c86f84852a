"""Tests of `fennec evaluate`'s history run: CSV history in, report out."""

import csv
import os
import tempfile

from absl.testing import absltest
import numpy as np

from fennec_jax import history as history_lib
from fennec_jax.benchmarks import baselines
from fennec_jax.benchmarks import evaluate
from fennec_jax.benchmarks import protocol
from fennec_jax.benchmarks import report


class RunTest(absltest.TestCase):

  def test_csv_history_to_report(self):
    rng = np.random.default_rng(3)
    scores = 0.6 + 0.1 * rng.normal(size=(10, 1)) + 0.02 * rng.normal(
        size=(10, 4))
    h = history_lib.History.from_matrix(scores)
    out = self.enterContext(tempfile.TemporaryDirectory())
    path = os.path.join(out, 'history.csv')
    with open(path, 'w', newline='') as f:
      w = csv.writer(f)
      w.writerow(['model', 'task', 'score'])
      for i, m in enumerate(h.model_ids):
        for j, t in enumerate(h.task_ids):
          w.writerow([m, t, repr(float(scores[i, j]))])
    results, paths = evaluate.run(
        out, history_path=path, k_shots=(0, 2), num_seeds=2,
        methods=['popularity', 'fennec_space'],
        space_config={'rank': 1, 'max_steps': 100})
    self.assertEqual(results.methods, ['popularity', 'fennec_space'])
    self.assertEqual(results.targets, list(h.task_ids))
    with open(paths['csv']) as f:
      rows = list(csv.DictReader(f))
    self.assertEqual(tuple(rows[0]), report.CSV_COLUMNS)
    self.assertLen(rows, 2 * 2 * (4 + 1))
    # The written numbers are the protocol's on the same history.
    direct = protocol.evaluate(h, {'popularity': baselines.popularity},
                               k_shots=(0, 2), num_seeds=2)
    for r in rows:
      if r['method'] != 'popularity':
        continue
      k = int(r['k_shot'])
      if r['target'] == report.MEAN:
        want = direct.mean('popularity', k, 'weighted_tau')
      else:
        want = direct.per_target('popularity', k, 'weighted_tau')[
            direct.targets.index(r['target'])]
      self.assertAlmostEqual(float(r['weighted_tau']), want, places=6)

  def test_duplicates_policy_reaches_the_csv_reader(self):
    out = self.enterContext(tempfile.TemporaryDirectory())
    path = os.path.join(out, 'history.csv')
    rows = [('a', 't1', 0.5), ('a', 't1', 0.7)] + [
        (m, t, 0.1 * (i + 2 * j)) for i, m in enumerate('abc')
        for j, t in enumerate(('t1', 't2', 't3', 't4'))
        if (m, t) != ('a', 't1')]
    with open(path, 'w', newline='') as f:
      w = csv.writer(f)
      w.writerow(['model', 'task', 'score'])
      w.writerows(rows)
    with self.assertRaisesRegex(ValueError, "conflicting scores for model "
                                "'a' on task 't1'"):
      evaluate.run(os.path.join(out, 'err'), history_path=path,
                   k_shots=(0,), num_seeds=1, methods=['popularity'])
    history, _ = protocol.load_history(history_path=path, duplicates='mean')
    self.assertAlmostEqual(
        history.scores[history.model_index('a'), history.task_index('t1')],
        0.6)
    results, _ = evaluate.run(os.path.join(out, 'mean'), history_path=path,
                              k_shots=(0,), num_seeds=1,
                              methods=['popularity'], duplicates='mean')
    self.assertEqual(results.targets, ['t1', 't2', 't3', 't4'])

  def test_needs_exactly_one_history(self):
    with self.assertRaisesRegex(ValueError, 'exactly one of --benchmark'):
      evaluate.run(self.enterContext(tempfile.TemporaryDirectory()))


if __name__ == '__main__':
  absltest.main()
