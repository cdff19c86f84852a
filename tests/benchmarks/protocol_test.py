"""Tests of the leave-one-task-out protocol and its reports."""

import csv
import os
import tempfile

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np
from scipy import stats

from fennec_jax import history as history_lib
from fennec_jax.benchmarks import baselines
from fennec_jax.benchmarks import protocol
from fennec_jax.benchmarks import report


def _history(num_models=14, num_tasks=5, seed=0, missing=0.0):
  rng = np.random.default_rng(seed)
  quality = rng.normal(size=(num_models, 1))
  scores = 0.6 + 0.1 * quality + 0.05 * rng.normal(size=(num_models,
                                                         num_tasks))
  scores[rng.uniform(size=scores.shape) < missing] = np.nan
  return history_lib.History.from_matrix(scores, name='toy')


class _Recorder:
  """A method that records what it sees and predicts with a fixed rule."""

  def __init__(self, rule):
    self.rule = rule
    self.calls = []

  def __call__(self, train, target, observed):
    self.calls.append((train, target, observed.copy()))
    return self.rule(train, target, observed)


class DrawTest(parameterized.TestCase):

  def test_draws_are_k_available_models_and_deterministic(self):
    mask = np.ones(20, bool)
    mask[[3, 4, 11]] = False
    a = protocol.draw_observed(mask, 5, 12, 'cars', seed=3)
    b = protocol.draw_observed(mask, 5, 12, 'cars', seed=3)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a.sum(1), 5)
    self.assertFalse(a[:, ~mask].any())
    # Draws differ across seeds, targets and K (independent streams).
    self.assertGreater(len({r.tobytes() for r in a}), 1)
    c = protocol.draw_observed(mask, 5, 12, 'pets', seed=3)
    self.assertFalse(np.array_equal(a, c))

  @parameterized.parameters(19, 20, 30)
  def test_k_larger_than_available_is_clear_error(self, k):
    mask = np.ones(20, bool)
    with self.assertRaisesRegex(ValueError, r"K=\d+ .*'cars'.*20 models"):
      protocol.draw_observed(mask, k, 2, 'cars')

  def test_evaluate_rejects_too_large_k(self):
    with self.assertRaisesRegex(ValueError, 'larger than the models'):
      protocol.evaluate(_history(num_models=6), {'p': baselines.popularity},
                        k_shots=(5,), num_seeds=1)


class ProtocolTest(absltest.TestCase):

  def test_same_draws_for_every_method(self):
    h = _history(missing=0.1)
    a = _Recorder(baselines.popularity)
    b = _Recorder(lambda tr, t, obs: np.nan_to_num(obs))
    protocol.evaluate(h, {'a': a, 'b': b}, k_shots=(0, 2, 4), num_seeds=10)
    self.assertLen(a.calls, h.num_tasks)
    for (_, ta, oa), (_, tb, ob) in zip(a.calls, b.calls):
      self.assertEqual(ta, tb)
      np.testing.assert_array_equal(oa, ob)
      # Observed entries are the target's true scores, K per draw.
      j = h.task_index(ta)
      seen = ~np.isnan(oa)
      np.testing.assert_array_equal(seen.sum(1), [0] * 10 + [2] * 10 +
                                    [4] * 10)
      np.testing.assert_array_equal(oa[seen],
                                    np.broadcast_to(h.scores[:, j],
                                                    oa.shape)[seen])
      self.assertFalse(seen[:, ~h.mask[:, j]].any())

  def test_target_column_is_hidden(self):
    h = _history()
    truth = {t: h.scores[:, j] for j, t in enumerate(h.task_ids)}

    def cheat(train, target, observed):
      # Uses the target's column if the harness leaks it; else a constant-ish
      # uninformative ranking.
      if target in train.task_ids:
        return np.broadcast_to(train.scores[:, train.task_index(target)],
                               observed.shape)
      return np.broadcast_to(np.arange(observed.shape[1], dtype=float),
                             observed.shape)

    rec = _Recorder(cheat)
    oracle = lambda tr, t, obs: np.broadcast_to(truth[t], obs.shape)
    res = protocol.evaluate(h, {'cheat': rec, 'oracle': oracle},
                            k_shots=(0,), num_seeds=1)
    for train, target, _ in rec.calls:
      self.assertNotIn(target, train.task_ids)
      self.assertEqual(train.scores.shape, (h.num_models, h.num_tasks - 1))
      others = [t for t in h.task_ids if t != target]
      np.testing.assert_array_equal(
          train.scores, h.scores[:, [h.task_index(t) for t in others]])
    # The harness scores a real oracle as perfect, the cheater as not.
    self.assertAlmostEqual(res.mean('oracle', 0, 'pearson'), 1.0, places=5)
    self.assertAlmostEqual(res.mean('oracle', 0, 'top1_regret'), 0.0)
    self.assertLess(res.mean('cheat', 0, 'pearson'), 0.9)

  def test_observed_models_are_excluded_from_metrics(self):
    h = _history(num_models=12, num_tasks=3)

    def split(train, target, observed):
      # Right on the observed models (hugely so), reversed on the rest:
      # including the observed models would give a positive correlation.
      true = h.scores[:, h.task_index(target)]
      seen = ~np.isnan(observed)
      return np.where(seen, 1000.0 * true, -true)

    res = protocol.evaluate(h, {'split': split}, k_shots=(3,), num_seeds=4)
    for t in h.task_ids:
      for m in ('pearson', 'weighted_tau'):
        np.testing.assert_allclose(res.per_seed[('split', 3, t)][m], -1.0,
                                   atol=1e-5)
      # The best unobserved model is predicted last: regret > 0 although the
      # best model overall may be an observed one.
      self.assertTrue((res.per_seed[('split', 3, t)]['top1_regret'] > 0).all())

  def test_metrics_match_scipy_on_unobserved_models(self):
    h = _history(num_models=16, num_tasks=4, missing=0.15, seed=4)
    pop = _Recorder(baselines.popularity)
    res = protocol.evaluate(h, {'popularity': pop}, k_shots=(0, 3),
                            num_seeds=3, seed=7)
    for train, target, observed in pop.calls:
      j = h.task_index(target)
      # Independent popularity: z-score each other task with scipy.
      z = []
      for c in range(train.num_tasks):
        col = train.scores[:, c]
        seen = ~np.isnan(col)
        zc = np.full(len(col), np.nan)
        zc[seen] = stats.zscore(col[seen])
        z.append(zc)
      z = np.stack(z, 1)
      pred = np.array([np.mean(r[~np.isnan(r)]) for r in z])
      for b, (k, s) in enumerate([(k, s) for k in (0, 3) for s in range(3)]):
        keep = h.mask[:, j] & np.isnan(observed[b])
        x, y = pred[keep], h.scores[keep, j]
        got = res.per_seed[('popularity', k, target)]
        self.assertAlmostEqual(got['pearson'][s], stats.pearsonr(x, y)[0],
                               places=5)
        self.assertAlmostEqual(got['weighted_tau'][s],
                               stats.weightedtau(x, y)[0], places=5)
        self.assertAlmostEqual(got['top1_regret'][s],
                               y.max() - y[np.argmax(x)], places=6)

  def test_mean_row_and_targets(self):
    h = _history(num_tasks=4)
    res = protocol.evaluate(h, {'popularity': baselines.popularity},
                            k_shots=(0, 1), num_seeds=2,
                            targets=['t1', 't3'])
    self.assertEqual(res.targets, ['t1', 't3'])
    for k in (0, 1):
      vals = res.per_target('popularity', k, 'weighted_tau')
      self.assertLen(vals, 2)
      self.assertAlmostEqual(res.mean('popularity', k, 'weighted_tau'),
                             vals.mean())
    with self.assertRaisesRegex(ValueError, 'unknown targets'):
      protocol.evaluate(h, {'p': baselines.popularity}, targets=['nope'])

  def test_reported_targets_of_transfergraph(self):
    tasks = list(protocol.REPORTED_TARGETS['transfergraph_image']) + [
        'kitti', 'eurosat']
    h = history_lib.History.from_matrix(np.ones((3, len(tasks))),
                                        task_ids=tasks,
                                        name='transfergraph_image')
    self.assertEqual(protocol.default_targets(h), tasks[:8])
    self.assertEqual(protocol.default_targets(h, all_targets=True), tasks)

  def test_estimator_without_target_is_skipped(self):
    h = _history(num_tasks=3)
    est = history_lib.History.from_matrix(
        h.scores[:, :1], model_ids=h.model_ids, task_ids=['t0'])
    methods = baselines.baseline_methods(h, {'logme': est})
    res = protocol.evaluate(h, methods, k_shots=(0,), num_seeds=1)
    self.assertEqual(res.per_target('logme', 0, 'pearson').shape, (1,))
    self.assertAlmostEqual(res.mean('logme', 0, 'pearson'), 1.0, places=5)
    self.assertLen(res.per_target('popularity', 0, 'pearson'), 3)

  def test_partial_method_is_scored_on_the_models_it_covers(self):
    h = _history(num_models=12, num_tasks=3, seed=5)
    meta = np.linspace(0.0, 1.0, 12)
    meta[[0, 4, 9]] = np.nan
    method = baselines.imagenet_acc_method({'imagenet_acc': meta})
    res = protocol.evaluate(h, {'acc': method}, k_shots=(0, 2), num_seeds=3)
    for t in h.task_ids:
      y = h.scores[:, h.task_index(t)]
      keep = ~np.isnan(meta)
      self.assertAlmostEqual(res.per_seed[('acc', 0, t)]['weighted_tau'][0],
                             stats.weightedtau(meta[keep], y[keep])[0],
                             places=5)
    # Covering fewer than 2 models of a target: skipped there, not a crash.
    sparse = np.full(12, np.nan)
    sparse[3] = 1.0
    res = protocol.evaluate(
        h, {'p': baselines.popularity,
            'acc': baselines.imagenet_acc_method({'imagenet_acc': sparse})},
        k_shots=(0,), num_seeds=1)
    self.assertEqual(res.methods, ['p'])
    # The same NaN from a method that does not declare `partial` is an error.
    with self.assertRaisesRegex(ValueError, "'strict' returned non-finite"):
      protocol.evaluate(
          h, {'strict': lambda tr, t, o: np.broadcast_to(meta, o.shape)},
          k_shots=(0,), num_seeds=1)

  def test_undefined_metric_is_left_out_of_the_mean(self):
    scores = np.array(_history(num_models=10, num_tasks=3).scores)
    scores[:, 2] = 0.01  # All runs at chance: correlations are undefined.
    h = history_lib.History.from_matrix(scores, name='toy')
    res = protocol.evaluate(h, {'popularity': baselines.popularity},
                            k_shots=(0,), num_seeds=1)
    vals = res.per_target('popularity', 0, 'pearson')
    self.assertTrue(np.isnan(vals[2]))
    self.assertAlmostEqual(res.mean('popularity', 0, 'pearson'),
                           vals[:2].mean())
    self.assertIn('| 2/3 |', report.markdown_table(res))

  def test_timings_and_first_predictions_are_kept(self):
    h = _history(num_tasks=3)

    def timed(train, target, observed):
      return baselines.Timed(baselines.popularity(train, target, observed),
                             0.25 + h.task_index(target))

    def draw_aware(train, target, observed):
      # Raw (unstandardized) values that differ across draws.
      draws = 10.0 * np.arange(len(observed))[:, None]
      return (1000.0 * baselines.popularity(train, target, observed)
              + np.nan_to_num(observed) + draws)

    res = protocol.evaluate(h, {'timed': timed, 'draws': draw_aware},
                            k_shots=(2, 0), num_seeds=2, seed=1)
    for r in res.rows:
      if r.method == 'draws':
        self.assertTrue(np.isnan(r.seconds_per_target), r)
      elif r.target == report.MEAN:
        self.assertAlmostEqual(r.seconds_per_target, 1.25)
      else:
        self.assertEqual(r.seconds_per_target, 0.25 + h.task_index(r.target))
    # The kept prediction is the method's raw output on the first draw of
    # the first K (here K=2).
    for j, t in enumerate(h.task_ids):
      train = protocol.without_task(h, j)
      first = protocol.draw_observed(h.mask[:, j], 2, 2, t, seed=1)[0]
      want = (1000.0 * baselines.popularity_scores(train.scores, train.mask)
              + np.where(first, h.scores[:, j], 0.0))
      np.testing.assert_allclose(res.predictions['draws'][t], want)

  def test_bad_method_output_is_clear_error(self):
    h = _history(num_tasks=2)
    with self.assertRaisesRegex(ValueError, "'bad' returned shape"):
      protocol.evaluate(h, {'bad': lambda tr, t, o: np.zeros(3)},
                        k_shots=(0,), num_seeds=1)
    with self.assertRaisesRegex(ValueError, "'nan' returned non-finite"):
      protocol.evaluate(h, {'nan': lambda tr, t, o: np.full(o.shape, np.nan)},
                        k_shots=(0,), num_seeds=1)


class PairedGainsTest(absltest.TestCase):

  def _results(self):
    h = _history(num_tasks=4)

    def flips(tr, t, o):
      # K = 0: popularity; K > 0: its reverse (a worse ranking).
      pop = np.broadcast_to(baselines.popularity(tr, t, o), o.shape).copy()
      k = (~np.isnan(o)).sum(1)
      return np.where(k[:, None] > 0, -pop, pop)

    return protocol.evaluate(h, {'popularity': baselines.popularity,
                                 'flips': flips}, k_shots=(0, 3),
                             num_seeds=3)

  def test_k0_on_the_same_models_is_paired(self):
    res = self._results()
    # Popularity ignores the K scores: K minus K = 0 on the same models is 0.
    pop = res.paired_k0('popularity', 3, 'weighted_tau')
    self.assertLen(pop, 4)
    np.testing.assert_allclose(list(pop.values()), 0.0, atol=1e-6)
    # The flipped method's K = 0 prediction is popularity's, so on the same
    # unobserved models it scores popularity's value at K: the paired
    # difference is flips at K minus popularity at K, draw by draw.
    flips = res.paired_k0('flips', 3, 'weighted_tau')
    want = (res.per_target('flips', 3, 'weighted_tau')
            - res.per_target('popularity', 3, 'weighted_tau'))
    np.testing.assert_allclose([flips[t] for t in res.targets], want,
                               atol=1e-6)
    self.assertTrue((want < 0).all())

  def test_gains_rows_and_markdown(self):
    res = self._results()
    rows = {r['method']: r for r in report.k_shot_gains(res)}
    d = (res.per_target('flips', 3, 'weighted_tau')
         - res.per_target('popularity', 3, 'weighted_tau'))
    self.assertAlmostEqual(rows['flips']['vs_reference'], d.mean(), places=6)
    self.assertLessEqual(rows['flips']['vs_reference_low'], d.mean())
    self.assertGreaterEqual(rows['flips']['vs_reference_high'], d.mean())
    self.assertTrue(np.isnan(rows['popularity']['vs_reference']))
    self.assertAlmostEqual(rows['popularity']['vs_k0'], 0.0, places=6)
    md = report.gains_table(res)
    self.assertIn('| weighted_tau | flips | 3 |', md)
    self.assertIn('vs K=0', md)


class ReportTest(absltest.TestCase):

  def test_bootstrap_ci_contains_mean(self):
    rng = np.random.default_rng(0)
    for n in (1, 2, 8, 30):
      v = rng.normal(size=n)
      lo, hi = report.bootstrap_ci(v)
      self.assertLessEqual(lo, v.mean() + 1e-12)
      self.assertGreaterEqual(hi, v.mean() - 1e-12)
      self.assertGreaterEqual(lo, v.min())
      self.assertLessEqual(hi, v.max())
    # Wider for noisier data, and deterministic.
    base = rng.normal(size=20)
    self.assertLess(np.diff(report.bootstrap_ci(base)),
                    np.diff(report.bootstrap_ci(10 * base)))
    self.assertEqual(report.bootstrap_ci(base), report.bootstrap_ci(base))
    with self.assertRaisesRegex(ValueError, 'non-empty'):
      report.bootstrap_ci([])

  def test_writes_csv_markdown_and_png(self):
    h = _history(num_tasks=3)
    methods = {'popularity': baselines.popularity,
               'oracle_ish': lambda tr, t, o: np.broadcast_to(
                   h.scores[:, h.task_index(t)], o.shape)}
    res = protocol.evaluate(h, methods, k_shots=(0, 2), num_seeds=2)
    out = self.enterContext(tempfile.TemporaryDirectory())
    paths = report.write_all(res, out)
    with open(paths['csv']) as f:
      rows = list(csv.reader(f))
    self.assertEqual(rows[0], ['method', 'k_shot', 'target', 'pearson',
                               'weighted_tau', 'top1_regret'])
    body = rows[1:]
    self.assertLen(body, 2 * 2 * (3 + 1))
    keys = {(r[0], r[1], r[2]) for r in body}
    self.assertIn(('popularity', '2', 'MEAN'), keys)
    for r in body:
      if r[2] == 'MEAN':
        parts = [float(x[3]) for x in body
                 if x[0] == r[0] and x[1] == r[1] and x[2] != 'MEAN']
        self.assertAlmostEqual(float(r[3]), np.mean(parts), places=5)
    with open(paths['md']) as f:
      md = f.read()
    self.assertIn('| popularity | 0 |', md)
    self.assertIn('95%', md)
    self.assertGreater(os.path.getsize(paths['png']), 1000)
    with open(paths['png'], 'rb') as f:
      self.assertEqual(f.read(8), b'\x89PNG\r\n\x1a\n')


if __name__ == '__main__':
  absltest.main()
