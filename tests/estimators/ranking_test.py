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

  def test_one_sample_per_class_warns_naming_classes_and_models(self):
    # n = C: hscore = tr(cov^+ cov_between) and the class means are the
    # samples, so every model's exact score is rank(cov) = min(d, n - 1) = 4;
    # the float32 round-off must not order them.
    rng = np.random.default_rng(0)
    y = np.arange(8)
    inputs = {'features': {m: rng.normal(size=(8, 4)) for m in 'abc'}}
    with self.assertLogs('absl', 'WARNING') as logs:
      rows = ranking.rank(inputs, y, ['hscore', 'logme'])
    text = '\n'.join(logs.output)
    self.assertIn('8 of 8 classes have fewer than 2 samples', text)
    self.assertIn('class ids [0, 1, 2, 3, 4, 5, 6, 7]', text)
    hscore = [r for r in rows if r['estimator'] == 'hscore']
    for r in hscore:
      self.assertAlmostEqual(r['score'], 4.0, places=4)
    self.assertEqual([r['rank'] for r in hscore], [1, 1, 1])
    self.assertRegex(text, r"hscore: models \['[abc]', '[abc]', '[abc]'\] "
                     'score within')
    # LogME's scores differ: distinct ranks, no tie warning for it.
    self.assertEqual(sorted(r['rank'] for r in rows
                            if r['estimator'] == 'logme'), [1, 2, 3])
    self.assertNotIn('logme: models', text)

  def test_near_equal_groups_and_healthy_input_is_quiet(self):
    groups = ranking.near_equal_groups(
        [5.0, 4.9999, 4.9, 1.0, 0.99995, 0.99985, -3.0, -3.0002])
    self.assertEqual(groups, [[0, 1], [2], [3, 4], [5], [6, 7]])
    self.assertEqual(ranking.warn_small_classes(np.array([0, 0, 1, 1, 2])),
                     [2])
    self.assertEqual(ranking.warn_small_classes(np.array([0.5, 1.5])), [])
    _, _, y, good, noise = _write_files(self._tempdir())
    with self.assertNoLogs('absl', 'WARNING'):
      rows = ranking.rank({'features': {'good': good, 'noise': noise}}, y,
                          ['hscore', 'logme'])
    self.assertEqual([r['rank'] for r in rows], [1, 2, 1, 2])

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
