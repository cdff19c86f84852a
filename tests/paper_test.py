"""Tests of the paper-faithful Fennec: NMF, features, forest, meta, merge."""

import dataclasses
import os
import tempfile
from unittest import mock

from absl.testing import absltest
from absl.testing import parameterized
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import scipy.stats

from fennec_jax import checkpoint
from fennec_jax import estimators
from fennec_jax import history as history_lib
from fennec_jax import nmf as nmf_lib
from fennec_jax import paper
from fennec_jax import paper_features
from fennec_jax.archi2vec import trace as trace_lib
from fennec_jax.archi2vec import wl


def _nmf_reference(x, mask, w, h, iterations):
  """Masked Lee & Seung updates in float64 NumPy, W then H."""
  eps = np.finfo(np.float32).eps
  mx = mask * x
  for _ in range(iterations):
    w = w * (mx @ h) / ((mask * (w @ h.T)) @ h + eps)
    h = h * (mx.T @ w) / ((mask * (w @ h.T)).T @ w + eps)
  return w, h


def _world(num_models=12, num_tasks=16, dim=10, images=30, seed=0):
  """Tasks from known vectors; images from task-dependent Gaussians."""
  rng = np.random.default_rng(seed)
  u = rng.uniform(0.1, 1.0, size=(num_models, 3))
  # Each task leans on one of 3 factors, so rankings differ across tasks
  # (a world where popularity alone would rank well tests nothing).
  v = 0.05 + np.eye(3)[np.arange(num_tasks) % 3] + 0.1 * rng.uniform(
      size=(num_tasks, 3))
  scores = u @ v.T
  mix = rng.normal(size=(3, dim))
  emb = {f't{j}': v[j] @ mix + 0.3 * rng.normal(size=(images, dim))
         for j in range(num_tasks)}
  model_ids = [f'm{i}' for i in range(num_models)]
  task_ids = [f't{j}' for j in range(num_tasks)]
  model_meta = {m: {'num_params': float(1e6 * (1 + i)),
                    'num_layers': float(5 + i % 3), 'cluster': i % 2}
                for i, m in enumerate(model_ids)}
  task_meta = {t: {'num_train': 100 * (1 + j), 'num_classes': 2 + j % 4}
               for j, t in enumerate(task_ids)}
  return scores, emb, model_ids, task_ids, model_meta, task_meta


def _history(scores, model_ids, task_ids, mask=None):
  mask = np.ones(scores.shape, bool) if mask is None else mask
  return history_lib.History(model_ids=model_ids, task_ids=task_ids,
                             scores=np.where(mask, scores, np.nan),
                             mask=mask)


class _MLP(nn.Module):
  depth: int

  @nn.compact
  def __call__(self, x, train=False):
    del train
    x = x.reshape((x.shape[0], -1))
    for _ in range(self.depth):
      x = nn.relu(nn.Dense(8)(x))
    return nn.Dense(2)(x)


class _CNN(nn.Module):
  depth: int

  @nn.compact
  def __call__(self, x, train=False):
    del train
    for _ in range(self.depth):
      x = nn.relu(nn.Conv(4, (3, 3))(x))
    return nn.Dense(2)(x.mean((1, 2)))


_SMALL = paper.PaperConfig(num_trees=5, nmf_iterations=300,
                           embedding_pca=None)


class NMFTest(absltest.TestCase):

  def test_matches_numpy_update_rule(self):
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(7, 5))
    mask = rng.uniform(size=x.shape) < 0.7
    w0, h0 = nmf_lib.nmf_init(x, mask, 3, seed=1)
    res = nmf_lib.nmf(np.where(mask, x, np.nan), mask, rank=3,
                    num_iterations=40, init=(w0, h0))
    w, h = _nmf_reference(x, mask.astype(float), w0, h0, 40)
    np.testing.assert_allclose(res.model_factors, w, rtol=2e-3, atol=1e-5)
    np.testing.assert_allclose(res.task_factors, h, rtol=2e-3, atol=1e-5)
    want = np.sum((mask * (x - w @ h.T)) ** 2)
    np.testing.assert_allclose(res.loss, want, rtol=1e-3)

  def test_default_init_is_seeded_and_nonnegative(self):
    x = np.random.default_rng(1).uniform(size=(6, 4))
    a = nmf_lib.nmf(x, rank=2, num_iterations=20, seed=3)
    b = nmf_lib.nmf(x, rank=2, num_iterations=20, seed=3)
    np.testing.assert_array_equal(a.model_factors, b.model_factors)
    self.assertTrue((a.model_factors >= 0).all())
    self.assertTrue((a.task_factors >= 0).all())

  def test_recovers_an_exact_nonnegative_matrix(self):
    rng = np.random.default_rng(2)
    x = rng.uniform(size=(10, 2)) @ rng.uniform(size=(2, 8))
    res = nmf_lib.nmf(x, rank=2, num_iterations=3000)
    rel = np.linalg.norm(res.model_factors @ res.task_factors.T - x)
    self.assertLess(rel / np.linalg.norm(x), 1e-2)

  def test_one_trace_per_matrix_shape(self):
    traces = []
    fori_loop = jax.lax.fori_loop

    def counting_fori_loop(*args, **kwargs):
      traces.append(1)  # Runs only while `nmf` traces its loop.
      return fori_loop(*args, **kwargs)

    rng = np.random.default_rng(7)
    with mock.patch.object(jax.lax, 'fori_loop', counting_fori_loop):
      for seed in range(3):  # New values, masks and seeds; shape (9, 11).
        x = rng.uniform(size=(9, 11))
        nmf_lib.nmf(np.where(rng.uniform(size=x.shape) < 0.8, x, np.nan),
                    rank=2, num_iterations=17, seed=seed)
    self.assertLen(traces, 1)

  def test_paper_reexports_the_recipe_steps(self):
    self.assertIs(paper.nmf, nmf_lib.nmf)
    self.assertIs(paper.fda_matrix, paper_features.fda_matrix)

  def test_bad_input(self):
    with self.assertRaisesRegex(ValueError, r'>= 0.*\(0, 1\)'):
      nmf_lib.nmf(np.array([[1.0, -1.0]]))
    with self.assertRaisesRegex(ValueError, 'no observed'):
      nmf_lib.nmf(np.full((2, 2), np.nan))


class ArchitectureTest(absltest.TestCase):

  def test_count_layers_and_params_of_a_traced_model(self):

    class Net(nn.Module):

      @nn.compact
      def __call__(self, x, train=False):
        del train
        x = nn.Conv(4, (3, 3))(x)
        x = nn.relu(nn.Conv(4, (3, 3), dtype=jnp.bfloat16)(x))
        x = x.reshape((x.shape[0], -1))
        a = x @ x.T   # Reads no parameter: not a layer.
        x = nn.Dense(3)(a @ x)
        return x

    g = trace_lib.trace(Net(), (2, 6, 6, 1))
    self.assertEqual(paper_features.count_layers(g), 3)
    want = (9 * 4 + 4) + (9 * 4 * 4 + 4) + (6 * 6 * 4 * 3 + 3)
    self.assertEqual(paper_features.count_params(g), want)


class FDAMatrixTest(absltest.TestCase):

  def test_equals_per_model_fda_and_marks_missing(self):
    rng = np.random.default_rng(0)
    labels = {'a': np.repeat(np.arange(3), 12), 'b': np.repeat([0, 1], 18)}
    feats = {'m0': {'a': rng.normal(size=(36, 8)),
                    'b': rng.normal(size=(36, 8))},
             'm1': {'a': rng.normal(size=(36, 5))}}
    feats['m0']['a'][:, 0] += 3 * labels['a']
    p = paper_features.fda_matrix(feats, labels, dim=4)
    fda = estimators.get_estimator('fda')
    self.assertAlmostEqual(p[0, 0], fda(feats['m0']['a'], labels['a'],
                                        dim=4), places=6)
    self.assertAlmostEqual(p[1, 0], fda(feats['m1']['a'], labels['a'],
                                        dim=4), places=6)
    self.assertAlmostEqual(p[0, 1], fda(feats['m0']['b'], labels['b'],
                                        dim=4), places=6)
    self.assertTrue(np.isnan(p[1, 1]))
    self.assertGreater(p[0, 0], p[1, 0])  # Informative vs noise features.
    with self.assertRaisesRegex(ValueError, "task 'c' has no labels"):
      paper_features.fda_matrix(feats, labels, task_ids=['c'])


class FennecPaperTest(parameterized.TestCase):

  def test_ranks_new_tasks_better_than_chance(self):
    scores, emb, model_ids, task_ids, model_meta, task_meta = _world()
    train, test = task_ids[:12], task_ids[12:]
    hist = _history(scores[:, :12], model_ids, train)
    fit = paper.FennecPaper(_SMALL).fit(
        hist, {t: emb[t] for t in train}, model_meta=model_meta,
        task_meta={t: task_meta[t] for t in train})
    out = fit.score_components([emb[t] for t in test],
                               [task_meta[t] for t in test])
    self.assertEqual(out.merged.shape, (4, 12))
    taus = [scipy.stats.kendalltau(out.transfer[b], scores[:, 12 + b])[0]
            for b in range(4)]
    self.assertGreater(np.mean(taus), 0.8)
    merged = [scipy.stats.kendalltau(out.merged[b], scores[:, 12 + b])[0]
              for b in range(4)]
    self.assertGreater(np.mean(merged), 0.5)
    # A shuffled image -> task assignment must do worse (the forest matters).
    shuffled = fit.score_components([emb[t] for t in train[1:5]],
                           [task_meta[t] for t in test])
    bad = [scipy.stats.kendalltau(shuffled.transfer[b], scores[:, 12 + b])[0]
           for b in range(4)]
    self.assertLess(np.mean(bad), np.mean(taus) - 0.4)
    np.testing.assert_allclose(out.merged, 0.5 * out.transfer
                               + 0.5 * out.meta)

  def test_fit_from_traced_graphs(self):
    scores, emb, model_ids, task_ids, _, task_meta = _world(
        num_models=4, num_tasks=6)
    nets = [_MLP(1), _MLP(2), _CNN(1), _CNN(2)]
    graphs = {m: trace_lib.trace(net, (1, 4, 4, 1))
              for m, net in zip(model_ids, nets)}
    config = paper.PaperConfig(num_trees=2, nmf_iterations=100,
                               embedding_pca=None, num_clusters=2,
                               graph2vec_dim=16)
    hist = _history(scores, model_ids, task_ids)
    fit = paper.FennecPaper(config).fit(hist, emb, graphs=graphs,
                                        task_meta=task_meta)
    dense = lambda i, o: i * o + o
    conv = lambda i, o: 9 * i * o + o
    params = [dense(16, 8) + dense(8, 2),
              dense(16, 8) + dense(8, 8) + dense(8, 2),
              conv(1, 4) + dense(4, 2),
              conv(1, 4) + conv(4, 4) + dense(4, 2)]
    np.testing.assert_array_equal(fit.model_features,
                                  [[params[0], 2], [params[1], 3],
                                   [params[2], 2], [params[3], 3]])
    want = wl.archi2vec_clusters([graphs[m] for m in model_ids], 2, seed=0,
                                 dim=16, iterations=2)[1]
    np.testing.assert_array_equal(fit.clusters, want)
    out = fit.predict([emb['t0']], [task_meta['t0']])
    self.assertTrue(np.isfinite(out).all())
    del graphs['m2']
    with self.assertRaisesRegex(ValueError, r"graphs lack 1 .*\['m2'\]"):
      paper.FennecPaper(config).fit(hist, emb, graphs=graphs)

  def test_meta_regression_is_least_squares(self):
    scores, emb, model_ids, task_ids, model_meta, task_meta = _world(seed=1)
    hist = _history(scores, model_ids, task_ids)
    fit = paper.FennecPaper(_SMALL).fit(hist, emb, model_meta=model_meta,
                                        task_meta=task_meta)
    # Reference: numpy lstsq on the raw design with an intercept.
    rows = []
    for i, m in enumerate(model_ids):
      for t in task_ids:
        rows.append([1.0, model_meta[m]['num_params'],
                     model_meta[m]['num_layers'],
                     float(model_meta[m]['cluster'] == 0),
                     float(model_meta[m]['cluster'] == 1),
                     task_meta[t]['num_train'], task_meta[t]['num_classes']])
    x = np.asarray(rows)
    coef = np.linalg.lstsq(x, scores.reshape(-1), rcond=None)[0]
    new_meta = {'num_train': 250, 'num_classes': 3}
    out = fit.score_components([emb['t0']], [new_meta])
    want = [coef @ [1.0, model_meta[m]['num_params'],
                    model_meta[m]['num_layers'],
                    float(model_meta[m]['cluster'] == 0),
                    float(model_meta[m]['cluster'] == 1), 250, 3]
            for m in model_ids]
    np.testing.assert_allclose(out.meta[0], want, rtol=1e-6, atol=1e-9)

  def test_save_load_round_trip_and_config_check(self):
    scores, emb, model_ids, task_ids, model_meta, task_meta = _world(seed=2)
    hist = _history(scores, model_ids, task_ids)
    config = paper.PaperConfig(num_trees=3, nmf_iterations=100,
                               embedding_pca=4)
    fit = paper.FennecPaper(config).fit(hist, emb, model_meta=model_meta,
                                        task_meta=task_meta)
    new = [emb['t1'][:7], emb['t2']]
    meta = [task_meta['t1'], task_meta['t2']]
    with tempfile.TemporaryDirectory() as tmp:
      path = os.path.join(tmp, 'ckpt')
      fit.save(path)
      manifest = checkpoint.read_manifest(path)
      self.assertEqual(manifest['kind'], 'FennecPaper')
      self.assertEqual(manifest['meta']['config'], config.to_json())
      for k, v in fit.forest.to_arrays().items():
        self.assertEqual(manifest['arrays'][f'forest/{k}'],
                         [list(v.shape), str(v.dtype)])
      loaded = paper.FennecPaper.load(path, config)
      for a, b in zip(fit.score_components(new, meta),
                      loaded.score_components(new, meta)):
        np.testing.assert_array_equal(a, b)
      # A task scored alone equals its row of the batch (ragged batch).
      np.testing.assert_allclose(loaded.predict(new[1:], meta[1:])[0],
                                 loaded.predict(new, meta)[1], rtol=1e-12)
      rec = loaded.recommend(new, meta, top=3)
      self.assertEqual(rec.model_ids[0][0],
                       model_ids[int(np.argmax(rec.all_scores.merged[0]))])
      with self.assertRaisesRegex(
          ValueError, r"another PaperConfig.*'num_trees': \(4, 3\)"):
        paper.FennecPaper.load(path, dataclasses.replace(config,
                                                         num_trees=4))
      with self.assertRaisesRegex(ValueError, 'exists'):
        fit.save(path)
      with self.assertRaisesRegex(checkpoint.CheckpointError,
                                  'not a fennec_jax checkpoint'):
        paper.FennecPaper.load(tmp)
      other = os.path.join(tmp, 'other')
      checkpoint.save(other, 'Fennec', {'x': np.zeros(2)}, {})
      with self.assertRaisesRegex(checkpoint.CheckpointError,
                                  "'Fennec' checkpoint; expected "
                                  "'FennecPaper'"):
        paper.FennecPaper.load(other)

  def test_sparse_history_and_fallbacks_give_finite_scores(self):
    scores, emb, model_ids, task_ids, model_meta, _ = _world(seed=3)
    mask = np.random.default_rng(0).uniform(size=scores.shape) < 0.6
    mask[:, 0] = False
    mask[3, 0] = True  # A task observed on one model only.
    mask[:, 2] = False  # A task with images but no observation.
    hist = _history(scores, model_ids, task_ids, mask)
    del emb['t5']      # A history task without images.
    fit = paper.FennecPaper(_SMALL).fit(hist, emb, model_meta=model_meta)
    self.assertFalse(fit.use_task_features)  # No task metadata given.
    rows = fit._num_forest_rows  # pylint: disable=protected-access
    self.assertEqual(rows, 30 * (len(task_ids) - 2))  # Not t2, not t5.
    out = fit.score_components({'new': emb['t1']})
    self.assertTrue(np.isfinite(out.merged).all())

  def test_bad_input(self):
    scores, emb, model_ids, task_ids, model_meta, task_meta = _world(seed=4)
    hist = _history(scores, model_ids, task_ids)
    partial = dict(model_meta)
    del partial['m3']
    with self.assertRaisesRegex(ValueError, r"num_params .*\['m3'\]"):
      paper.FennecPaper(_SMALL).fit(hist, emb, model_meta=partial)
    with self.assertRaisesRegex(ValueError, 'not in the history'):
      paper.FennecPaper(_SMALL).fit(hist, {'zz': emb['t0']},
                                    model_meta=model_meta)
    fit = paper.FennecPaper(_SMALL).fit(hist, emb, model_meta=model_meta,
                                        task_meta=task_meta)
    with self.assertRaisesRegex(ValueError, 'needs images'):
      fit.score_components([np.zeros((0, 10))], [task_meta['t0']])
    with self.assertRaisesRegex(ValueError, r'\[n, 10\]'):
      fit.score_components([np.zeros((3, 9))], [task_meta['t0']])
    with self.assertRaisesRegex(ValueError, 'task_meta'):
      fit.score_components([emb['t0']])
    with self.assertRaisesRegex(ValueError, 'shift'):
      paper.FennecPaper(_SMALL).fit(
          _history(scores - 1.0, model_ids, task_ids), emb,
          model_meta=model_meta)
    with self.assertRaisesRegex(ValueError, 'transfer_weight'):
      paper.PaperConfig(transfer_weight=2.0).validate()

  def test_images_per_task_cap_and_method_adapter(self):
    scores, emb, model_ids, task_ids, model_meta, task_meta = _world(seed=6)
    config = paper.PaperConfig(num_trees=2, nmf_iterations=100,
                               embedding_pca=None, images_per_task=7)
    train = _history(scores[:, 1:], model_ids, task_ids[1:])
    fit = paper.FennecPaper(config).fit(
        train, {t: emb[t] for t in task_ids[1:]}, model_meta=model_meta,
        task_meta={t: task_meta[t] for t in task_ids[1:]})
    rows = fit._num_forest_rows  # pylint: disable=protected-access
    self.assertEqual(rows, 7 * (len(task_ids) - 1))
    method = paper.paper_method(emb, model_meta=model_meta,
                                task_meta=task_meta, config=config)
    observed = np.full((3, len(model_ids)), np.nan)
    got = method(train, 't0', observed)
    want = fit.predict([emb['t0']], [task_meta['t0']])
    np.testing.assert_array_equal(got, np.repeat(want, 3, 0))
    # Fit on another performance matrix (e.g. FDA) than the protocol's.
    perf = _history(2.0 * scores[::-1], model_ids[::-1], task_ids)
    method = paper.paper_method(emb, model_meta=model_meta,
                                task_meta=task_meta, config=config,
                                performance=perf)
    got = method(train, 't0', observed)
    fit2 = paper.FennecPaper(config).fit(
        _history(2.0 * scores[:, 1:], model_ids, task_ids[1:]),
        {t: emb[t] for t in task_ids[1:]}, model_meta=model_meta,
        task_meta={t: task_meta[t] for t in task_ids[1:]})
    np.testing.assert_allclose(
        got[0], fit2.predict([emb['t0']], [task_meta['t0']])[0], rtol=1e-6)
    # The optional standardized merge.
    fit.config = dataclasses.replace(config, standardize_merge=True)
    out = fit.score_components([emb['t0']], [task_meta['t0']])
    z = lambda a: (a - a.mean()) / a.std()
    np.testing.assert_allclose(
        out.merged[0], 0.5 * z(out.transfer[0]) + 0.5 * z(out.meta[0]))

  def test_shift_min_keeps_raw_units(self):
    scores, emb, model_ids, task_ids, model_meta, _ = _world(seed=5)
    config = paper.PaperConfig(num_trees=3, nmf_iterations=300,
                               embedding_pca=None, shift='min')
    a = paper.FennecPaper(config).fit(
        _history(scores, model_ids, task_ids), emb, model_meta=model_meta)
    b = paper.FennecPaper(config).fit(
        _history(scores - 5.0, model_ids, task_ids), emb,
        model_meta=model_meta)
    pa, pb = a.predict([emb['t0']]), b.predict([emb['t0']])
    np.testing.assert_allclose(pb, pa - 5.0, atol=1e-3)


if __name__ == '__main__':
  absltest.main()
