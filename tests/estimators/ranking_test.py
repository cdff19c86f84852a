"""`fennec score` end to end: .npz files in, ranking CSV out."""

import csv
import os
import shutil
import subprocess
import sys
import tempfile

from absl.testing import absltest
import numpy as np

from fennec_jax import estimators
from fennec_jax.estimators import ranking


def _write_files(tmp):
  rng = np.random.default_rng(0)
  y = np.arange(30) % 3
  good = rng.normal(size=(3, 4))[y] * 3 + rng.normal(size=(30, 4))
  noise = rng.normal(size=(30, 6))
  probs = np.full((30, 5), 0.2)
  path = os.path.join(tmp, 'zoo.npz')
  np.savez(path, **{'features/good': good, 'features/noise': noise,
                    'source_probs/good': probs, 'labels': y})
  single = os.path.join(tmp, 'extra.npz')
  np.savez(single, features=0.5 * good[:, :3], labels=y)
  return path, single, y, good, noise


class RankingTest(absltest.TestCase):

  def _tempdir(self):
    # tempfile, not create_tempdir: the latter needs absl flags parsed.
    tmp = tempfile.mkdtemp()
    self.addCleanup(shutil.rmtree, tmp)
    return tmp

  def test_rank_matches_score_models(self):
    tmp = self._tempdir()
    path, single, y, good, noise = _write_files(tmp)
    inputs, labels = ranking.load_feature_files([path, single])
    np.testing.assert_array_equal(labels, y)
    self.assertEqual(sorted(inputs['features']), ['extra', 'good', 'noise'])
    rows = ranking.rank(inputs, labels, ['hscore'])
    self.assertEqual([r['model'] for r in rows][-1], 'noise')
    want = estimators.get_estimator('hscore')(noise, y)
    self.assertAlmostEqual(rows[-1]['score'], want, places=5)
    del good
    with self.assertRaisesRegex(ValueError, "needs 'source_labels/<model>'"):
      ranking.rank(inputs, labels, ['nce'])

  def test_tied_scores_share_a_rank(self):
    rng = np.random.default_rng(0)
    y = np.arange(30) % 3
    good = rng.normal(size=(3, 4))[y] * 3 + rng.normal(size=(30, 4))
    noise = rng.normal(size=(30, 4))
    inputs = {'features': {'a': good, 'b': good.copy(), 'c': noise,
                           'd': good + 0.3 * rng.normal(size=(30, 4)),
                           'e': good * 2.0}}
    rows = ranking.rank(inputs, y, ['hscore', 'fda'])
    for name in ('hscore', 'fda'):
      ranks = {r['model']: r['rank'] for r in rows if r['estimator'] == name}
      # a, b and e = 2a are the same features up to scale, to which both
      # estimators are invariant: one score, one rank (the best of the
      # group); the others keep distinct ranks.
      self.assertEqual(ranks['a'], ranks['b'], name)
      self.assertEqual(ranks['a'], ranks['e'], name)
      self.assertEqual(ranks['c'], 5, name)
      self.assertIn(sorted(ranks.values()), ([1, 1, 1, 4, 5], [1, 2, 2, 2, 5]),
                    name)
    # In the CSV, equal scores always carry equal ranks.
    out = os.path.join(self._tempdir(), 'rank.csv')
    ranking.write_csv(rows, out)
    with open(out) as f:
      written = list(csv.DictReader(f))
    rank_of = {}
    for row in written:
      key = (row['estimator'], row['score'])
      self.assertEqual(rank_of.setdefault(key, row['rank']), row['rank'])
    self.assertLess(len(rank_of), len(written))

  def test_missing_labels(self):
    tmp = self._tempdir()
    path, _, _, _, _ = _write_files(tmp)
    with self.assertRaisesRegex(ValueError, "under key 'targets'"):
      ranking.load_feature_files([path], 'targets')

  def test_command_writes_csv(self):
    tmp = self._tempdir()
    path, _, _, _, _ = _write_files(tmp)
    out = os.path.join(tmp, 'rank.csv')
    proc = subprocess.run(
        [sys.executable, '-m', 'fennec_jax.cli', 'score', f'--features={path}',
         '--estimators=fda,leep', f'--out={out}'],
        capture_output=True, text=True, check=False, timeout=300)
    self.assertEqual(proc.returncode, 0, proc.stderr[-2000:])
    self.assertIn('== fda', proc.stdout)
    with open(out) as f:
      rows = list(csv.DictReader(f))
    self.assertEqual([(r['estimator'], r['rank'], r['model']) for r in rows],
                     [('fda', '1', 'good'), ('fda', '2', 'noise'),
                      ('leep', '1', 'good')])
    self.assertAlmostEqual(float(rows[2]['score']), np.log(1 / 3), places=5)


if __name__ == '__main__':
  absltest.main()
