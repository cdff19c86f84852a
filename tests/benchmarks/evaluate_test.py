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
from fennec_jax.benchmarks import evaluate
from fennec_jax.benchmarks import report
from fennec_jax.benchmarks.offline import source as offline_source


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
    a = evaluate.draw_observed(mask, 5, 12, 'cars', seed=3)
    b = evaluate.draw_observed(mask, 5, 12, 'cars', seed=3)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a.sum(1), 5)
    self.assertFalse(a[:, ~mask].any())
    # Draws differ across seeds, targets and K (independent streams).
    self.assertGreater(len({r.tobytes() for r in a}), 1)
    c = evaluate.draw_observed(mask, 5, 12, 'pets', seed=3)
    self.assertFalse(np.array_equal(a, c))

  @parameterized.parameters(19, 20, 30)
  def test_k_larger_than_available_is_clear_error(self, k):
    mask = np.ones(20, bool)
    with self.assertRaisesRegex(ValueError, r"K=\d+ .*'cars'.*20 models"):
      evaluate.draw_observed(mask, k, 2, 'cars')

  def test_evaluate_rejects_too_large_k(self):
    with self.assertRaisesRegex(ValueError, 'larger than the models'):
      evaluate.evaluate(_history(num_models=6), {'p': baselines.popularity},
                        k_shots=(5,), num_seeds=1)


class ProtocolTest(absltest.TestCase):

  def test_same_draws_for_every_method(self):
    h = _history(missing=0.1)
    a = _Recorder(baselines.popularity)
    b = _Recorder(lambda tr, t, obs: np.nan_to_num(obs))
    evaluate.evaluate(h, {'a': a, 'b': b}, k_shots=(0, 2, 4), num_seeds=10)
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
    res = evaluate.evaluate(h, {'cheat': rec, 'oracle': oracle},
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

    res = evaluate.evaluate(h, {'split': split}, k_shots=(3,), num_seeds=4)
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
    res = evaluate.evaluate(h, {'popularity': pop}, k_shots=(0, 3),
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
    res = evaluate.evaluate(h, {'popularity': baselines.popularity},
                            k_shots=(0, 1), num_seeds=2,
                            targets=['t1', 't3'])
    self.assertEqual(res.targets, ['t1', 't3'])
    for k in (0, 1):
      vals = res.per_target('popularity', k, 'weighted_tau')
      self.assertLen(vals, 2)
      self.assertAlmostEqual(res.mean('popularity', k, 'weighted_tau'),
                             vals.mean())
    with self.assertRaisesRegex(ValueError, 'unknown targets'):
      evaluate.evaluate(h, {'p': baselines.popularity}, targets=['nope'])

  def test_reported_targets_of_transfergraph(self):
    tasks = list(evaluate.REPORTED_TARGETS['transfergraph_image']) + [
        'kitti', 'eurosat']
    h = history_lib.History.from_matrix(np.ones((3, len(tasks))),
                                        task_ids=tasks,
                                        name='transfergraph_image')
    self.assertEqual(evaluate.default_targets(h), tasks[:8])
    self.assertEqual(evaluate.default_targets(h, all_targets=True), tasks)

  def test_estimator_without_target_is_skipped(self):
    h = _history(num_tasks=3)
    est = history_lib.History.from_matrix(
        h.scores[:, :1], model_ids=h.model_ids, task_ids=['t0'])
    methods = baselines.baseline_methods(h, {'logme': est})
    res = evaluate.evaluate(h, methods, k_shots=(0,), num_seeds=1)
    self.assertEqual(res.per_target('logme', 0, 'pearson').shape, (1,))
    self.assertAlmostEqual(res.mean('logme', 0, 'pearson'), 1.0, places=5)
    self.assertLen(res.per_target('popularity', 0, 'pearson'), 3)

  def test_partial_method_is_scored_on_the_models_it_covers(self):
    h = _history(num_models=12, num_tasks=3, seed=5)
    meta = np.linspace(0.0, 1.0, 12)
    meta[[0, 4, 9]] = np.nan
    method = baselines.imagenet_acc_method({'imagenet_acc': meta})
    res = evaluate.evaluate(h, {'acc': method}, k_shots=(0, 2), num_seeds=3)
    for t in h.task_ids:
      y = h.scores[:, h.task_index(t)]
      keep = ~np.isnan(meta)
      self.assertAlmostEqual(res.per_seed[('acc', 0, t)]['weighted_tau'][0],
                             stats.weightedtau(meta[keep], y[keep])[0],
                             places=5)
    # Covering fewer than 2 models of a target: skipped there, not a crash.
    sparse = np.full(12, np.nan)
    sparse[3] = 1.0
    res = evaluate.evaluate(
        h, {'p': baselines.popularity,
            'acc': baselines.imagenet_acc_method({'imagenet_acc': sparse})},
        k_shots=(0,), num_seeds=1)
    self.assertEqual(res.methods, ['p'])
    # The same NaN from a method that does not declare `partial` is an error.
    with self.assertRaisesRegex(ValueError, "'strict' returned non-finite"):
      evaluate.evaluate(
          h, {'strict': lambda tr, t, o: np.broadcast_to(meta, o.shape)},
          k_shots=(0,), num_seeds=1)

  def test_undefined_metric_is_left_out_of_the_mean(self):
    scores = np.array(_history(num_models=10, num_tasks=3).scores)
    scores[:, 2] = 0.01  # All runs at chance: correlations are undefined.
    h = history_lib.History.from_matrix(scores, name='toy')
    res = evaluate.evaluate(h, {'popularity': baselines.popularity},
                            k_shots=(0,), num_seeds=1)
    vals = res.per_target('popularity', 0, 'pearson')
    self.assertTrue(np.isnan(vals[2]))
    self.assertAlmostEqual(res.mean('popularity', 0, 'pearson'),
                           vals[:2].mean())
    self.assertIn('| 2/3 |', report.markdown_table(res))

  def test_bad_method_output_is_clear_error(self):
    h = _history(num_tasks=2)
    with self.assertRaisesRegex(ValueError, "'bad' returned shape"):
      evaluate.evaluate(h, {'bad': lambda tr, t, o: np.zeros(3)},
                        k_shots=(0,), num_seeds=1)
    with self.assertRaisesRegex(ValueError, "'nan' returned non-finite"):
      evaluate.evaluate(h, {'nan': lambda tr, t, o: np.full(o.shape, np.nan)},
                        k_shots=(0,), num_seeds=1)


class _FakeImages(offline_source.ImageSource):
  """Probes tagged by task; proxy features are a linear image of the task's
  latent vector (so a working embedding path can recover the ranking)."""

  def __init__(self, history, task_vectors, seed=0):
    self.history = history
    self.task_vectors = task_vectors
    self.proj = np.random.default_rng(seed).normal(size=(2, 8))
    self.proxy_batches = []
    self.forwards = []

  def probe(self, task):
    j = self.history.task_index(task)
    images = np.random.default_rng(j).integers(0, 255, (40, 4, 4, 3),
                                               dtype=np.uint8)
    images[:, 0, 0, 0] = j
    return images, np.arange(40) % 4

  def proxy_features(self, images):
    self.proxy_batches.append(len(images))
    j = int(images[0, 0, 0, 0])
    noise = np.random.default_rng(j + 100).normal(size=(len(images), 8))
    return self.task_vectors[j] @ self.proj + 0.01 * noise

  def model_features(self, model_id, images):
    self.forwards.append(model_id)
    j = int(images[0, 0, 0, 0])
    return np.random.default_rng([int(model_id[1:]), j]).normal(
        size=(len(images), 5))


class ImagesProtocolTest(absltest.TestCase):

  def test_methods_see_images_and_are_timed(self):
    rng = np.random.default_rng(0)
    m, t = 12, 6
    u, v = rng.normal(size=(m, 2)), rng.normal(size=(t, 2))
    h = history_lib.History.from_matrix(
        0.7 + 0.1 * u @ v.T,
        model_metadata={'num_params': rng.uniform(1e5, 1e6, m),
                        'num_layers': rng.integers(2, 9, m).astype(float),
                        'cluster': (np.arange(m) % 2).astype(float)},
        task_metadata={'num_classes': np.full(t, 4.0),
                       'train_size': np.full(t, 100.0)}, name='fake')
    source = _FakeImages(h, v)
    out = self.enterContext(tempfile.TemporaryDirectory())
    targets = ['t0', 't2', 't3', 't5']
    res, paths = evaluate.run_images(
        out, source=source, history=h, k_shots=(0,), num_seeds=1,
        targets=targets, estimators=('logme',),
        space_config={'rank': 2, 'max_steps': 300})  # The world is rank 2.
    self.assertEqual(res.methods,
                     ['popularity', 'fennec', 'fennec_ridge', 'fennec_paper',
                      'logme'])
    # The proxy saw a class-balanced budget (all 40 here, < 100) per task;
    # the zoo ran forward on the evaluated targets only.
    self.assertEqual(source.proxy_batches, [40] * t)
    self.assertLen(source.forwards, m * len(targets))
    with open(paths['csv']) as f:
      rows = list(csv.DictReader(f))
    self.assertIn('seconds_per_target', rows[0])
    for r in rows:
      self.assertGreater(float(r['seconds_per_target']), 0.0, r)
    # Embeddings carry the task factors: both task maps beat the (here
    # misleading) popularity prior, which a broken embedding path would not.
    for method in ('fennec', 'fennec_ridge'):
      self.assertGreater(res.mean(method, 0, 'weighted_tau'),
                         res.mean('popularity', 0, 'weighted_tau') + 0.2,
                         method)
    self.assertTrue(os.path.exists(paths['time_png']))


class ModelsOutTest(absltest.TestCase):

  def test_percentile_matches_scipy(self):
    others = np.array([0.1, 0.5, 0.5, 0.9, 0.3])
    for v in (0.0, 0.5, 0.3, 1.0, 0.7):
      self.assertAlmostEqual(
          evaluate._percentile(v, others),
          stats.percentileofscore(others, v, kind='mean') / 100)

  def test_metadata_embeddings(self):
    h = history_lib.History.from_matrix(
        np.ones((4, 2)), model_metadata={
            'num_params': np.array([10.0, 1000.0, np.nan, 100.0]),
            'family': np.array(['a', 'b', 'a', 'a'], object),
            'name': np.array(['w', 'x', 'y', 'z'], object),
            'flat': np.ones(4)})
    emb, names = evaluate.metadata_embeddings(h)
    self.assertEqual(names, ['family=a', 'family=b', 'num_params',
                             'num_params:missing'])
    np.testing.assert_allclose(emb[:, 2], [1.0, 3.0, 2.0, 2.0])
    np.testing.assert_allclose(emb[:, 3], [0, 0, 1, 0])
    np.testing.assert_allclose(emb[:, 0], [1, 0, 1, 1])

  def test_cold_model_placed_better_than_the_mean_model(self):
    rng = np.random.default_rng(11)
    m, t = 24, 8
    u, v = rng.normal(size=(m, 2)), rng.normal(size=(t, 2))
    h = history_lib.History.from_matrix(
        0.7 + 0.1 * u @ v.T + 0.003 * rng.normal(size=(m, t)))
    emb = u @ rng.normal(size=(2, 4))
    rows = evaluate.evaluate_models_out(h, emb, models=['m0', 'm5', 'm9'],
                                        space_config={'rank': 2,
                                                      'max_steps': 300})
    mean = {r['method']: r for r in rows if r['model'] == 'MEAN'}
    self.assertLen(rows, 3 * 3 + 3)
    self.assertLess(mean['fennec_cold']['rank_error'],
                    mean['mean_model']['rank_error'] - 0.1)
    with self.assertRaisesRegex(ValueError, 'model_embeddings must be'):
      evaluate.evaluate_models_out(h, emb[:3])


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
    res = evaluate.evaluate(h, methods, k_shots=(0, 2), num_seeds=2)
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
