"""Tests of the Fennec recommender against independent NumPy references."""

import os
import tempfile
from unittest import mock

from absl.testing import absltest
import chex
import jax
import numpy as np
from scipy import stats

from fennec_jax import checkpoint
from fennec_jax import history as history_lib
from fennec_jax import posterior as posterior_lib
from fennec_jax import recommender
from fennec_jax import space
from fennec_jax import task_maps
from fennec_jax.benchmarks.offline import demo as offline_demo
from fennec_jax.benchmarks.offline import source as offline_source

# Pinned (not the library defaults, which are tuned on real benchmarks): the
# synthetic worlds below are rank 2 with task embeddings linear in the task
# factors, which is what the ridge task map models (the 'neighbors' map has
# its own tests in neighbors_test.py).
_CONFIG = recommender.FennecConfig(
    space=space.SpaceConfig(rank=2, max_steps=300, eval_every=50),
    task_map='ridge', kshot=False)  # K-shot: recommender_kshot_test.py.


def _data(seed=0, num_models=30, num_tasks=12, dim=6):
  """Low-rank scores whose task factors are a linear image of embeddings."""
  rng = np.random.default_rng(seed)
  u = rng.normal(size=(num_models, 2))
  v = rng.normal(size=(num_tasks, 2))
  emb = v @ rng.normal(size=(2, dim)) + 0.05 * rng.normal(size=(num_tasks,
                                                                dim))
  scores = 0.7 + 0.1 * u @ v.T + 0.01 * rng.normal(size=(num_models,
                                                         num_tasks))
  return history_lib.History.from_matrix(scores), emb


class FennecTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.full, cls.emb = _data()
    cls.train = cls.full.subset(tasks=np.arange(10))
    cls.fennec = recommender.Fennec(_CONFIG).fit(
        cls.train, task_embeddings=cls.emb[:10])

  def test_embeddings_give_unseen_tasks_their_ranking(self):
    rec = self.fennec.recommend(task_embeddings=self.emb[10:], top=3)
    prior = self.fennec.recommend(observed=[{}, {}], top=3)
    for b in range(2):
      true = self.full.scores[:, 10 + b]
      r_emb = stats.pearsonr(rec.all_predicted[b], true)[0]
      r_prior = stats.pearsonr(prior.all_predicted[b], true)[0]
      self.assertGreater(r_emb, 0.8)
      # The tasks differ, so a map that ignored the embedding (the prior)
      # would not do as well on both.
      self.assertGreater(r_emb, r_prior - 0.05)
    self.assertGreater(
        stats.pearsonr(rec.all_predicted[0], self.full.scores[:, 10])[0] +
        stats.pearsonr(rec.all_predicted[1], self.full.scores[:, 11])[0],
        stats.pearsonr(prior.all_predicted[0], self.full.scores[:, 10])[0] +
        stats.pearsonr(prior.all_predicted[1], self.full.scores[:, 11])[0])

  def test_ranking_is_sorted_and_consistent(self):
    rec = self.fennec.recommend(task_embeddings=self.emb[10:], top=5)
    lean = self.fennec.recommend(task_embeddings=self.emb[10:], top=5,
                                 full=False)
    np.testing.assert_array_equal(lean.indices, rec.indices)
    self.assertEqual(lean.all_predicted.shape, (2, 0))
    for b in range(2):
      self.assertTrue((np.diff(rec.predicted[b]) <= 0).all())
      np.testing.assert_array_equal(
          rec.indices[b], np.argsort(-rec.all_predicted[b])[:5])
      # The top-k path (no full sort) gives the full path's values.
      np.testing.assert_allclose(
          rec.predicted[b], rec.all_predicted[b][rec.indices[b]], atol=1e-5)
      np.testing.assert_allclose(
          rec.std[b], rec.all_std[b][rec.indices[b]], atol=1e-6)
      self.assertEqual(rec.model_ids[b],
                       [self.full.model_ids[i] for i in rec.indices[b]])
      self.assertTrue((rec.std[b] > 0).all())

  def test_scores_only_matches_space_fold_in(self):
    obs = {'m0': 0.7, 'm3': 0.8, 'm7': 0.65}
    rec = self.fennec.recommend(observed=[obs], top=3)
    dense = np.zeros((1, 30))
    mask = np.zeros((1, 30), bool)
    for k, v in obs.items():
      dense[0, int(k[1:])] = v
      mask[0, int(k[1:])] = True
    ref = self.fennec.space.fold_in(dense, mask)
    np.testing.assert_allclose(rec.all_predicted, ref.predicted, atol=1e-5)
    np.testing.assert_allclose(rec.all_std, ref.std, atol=1e-5)
    # The [B, M] NaN-array form is the same input; a second task with more
    # scores (another padded K) in the same batch does not disturb the first.
    arr = np.where(mask, dense, np.nan)
    more = np.full((1, 30), np.nan)
    more[0, :9] = 0.7
    both = self.fennec.recommend(observed=np.concatenate([arr, more]), top=3)
    np.testing.assert_allclose(both.all_predicted[:1], rec.all_predicted,
                               atol=1e-6)

  def test_embedding_prior_updated_by_scores_matches_numpy(self):
    e = self.emb[10:11]
    obs = {'m1': 0.75, 'm2': 0.6}
    _, _, w = self.fennec.predict(task_embeddings=e, observed=[obs])
    # Independent Bayesian linear regression with prior N(mu, S).
    f = self.fennec
    phi = np.asarray(f.space.model_features(), np.float64)
    mu = task_maps.ridge_predict(f.task_map.params, e)[0]
    cov = f.task_map.covariance
    s = cov + 1e-6 * np.trace(cov) / len(mu) * np.eye(len(mu))
    noise = float(f.space.noise_var)
    x = phi[[1, 2]]
    y = np.array([0.75, 0.6])
    prec = np.linalg.inv(s) + x.T @ x / noise
    w_ref = np.linalg.solve(prec, np.linalg.solve(s, mu) + x.T @ y / noise)
    np.testing.assert_allclose(w[0], w_ref, rtol=2e-3, atol=2e-4)

  def test_batches_of_any_size_compile_once_per_bucket(self):
    # B = 3, 4 share the bucket 4; B = 5..8 the bucket 8: each kernel traces
    # twice (once per bucket) over six batch sizes, and padding rows do not
    # change the real rows.
    kernels = {
        'posterior': jax.jit(chex.assert_max_traces(
            posterior_lib.posterior.__wrapped__, n=2)),
        'predict_all': jax.jit(chex.assert_max_traces(
            posterior_lib.predict_all.__wrapped__, n=2)),
        'top_k': jax.jit(chex.assert_max_traces(
            posterior_lib.top_k.__wrapped__, n=2), static_argnames=('k',)),
    }
    self.addCleanup(chex.clear_trace_counter)
    emb = self.emb[np.arange(8) % 12]
    obs = [{'m0': 0.7}] * 8
    with mock.patch.multiple(posterior_lib, **kernels):
      recs = {b: self.fennec.recommend(task_embeddings=emb[:b],
                                       observed=obs[:b], top=3)
              for b in (3, 4, 5, 6, 7, 8)}
    for b, rec in recs.items():
      self.assertEqual(rec.all_predicted.shape, (b, 30))
      np.testing.assert_allclose(rec.all_predicted, recs[8].all_predicted[:b],
                                 atol=1e-6)
      np.testing.assert_allclose(rec.all_std, recs[8].all_std[:b], atol=1e-6)
      np.testing.assert_array_equal(rec.indices, recs[8].indices[:b])

  def test_save_load_round_trip_and_config_check(self):
    d = self.enterContext(tempfile.TemporaryDirectory())
    path = os.path.join(d, 'ckpt')
    self.fennec.save(path)
    loaded = recommender.Fennec.load(path)
    a = self.fennec.recommend(task_embeddings=self.emb[10:],
                              observed=[{'m0': 0.7}, {}])
    b = loaded.recommend(task_embeddings=self.emb[10:],
                         observed=[{'m0': 0.7}, {}])
    np.testing.assert_allclose(a.all_predicted, b.all_predicted, atol=1e-6)
    self.assertEqual(loaded.model_ids, self.fennec.model_ids)
    self.assertEqual(recommender.Fennec.load(path, _CONFIG).task_ids,
                     self.fennec.task_ids)
    with self.assertRaisesRegex(ValueError, r'space\.max_steps.*2000.*300'):
      recommender.Fennec.load(path, recommender.FennecConfig())
    with self.assertRaisesRegex(ValueError, 'exists'):
      self.fennec.save(path)
    with self.assertRaisesRegex(checkpoint.CheckpointError,
                                'not a fennec_jax checkpoint'):
      recommender.Fennec.load(d)
    with self.assertRaisesRegex(checkpoint.CheckpointError,
                                'no such checkpoint directory'):
      recommender.Fennec.load(os.path.join(d, 'missing'))
    foreign = os.path.join(d, 'foreign')
    checkpoint.save(foreign, 'FennecPaper', {'x': np.ones(2)}, {})
    with self.assertRaisesRegex(checkpoint.CheckpointError,
                                "'FennecPaper' checkpoint; expected 'Fennec'"):
      recommender.Fennec.load(foreign)

  def test_bad_inputs_are_clear_errors(self):
    f = self.fennec
    with self.assertRaisesRegex(ValueError, 'images .*or observed'):
      f.recommend()
    with self.assertRaisesRegex(ValueError, "not in the repository.*'zz'"):
      f.recommend(observed=[{'zz': 0.5}])
    with self.assertRaisesRegex(ValueError, 'width 4.*width 6'):
      f.recommend(task_embeddings=np.ones((2, 4)))
    with self.assertRaisesRegex(ValueError, r'task_embeddings\[1\].*finite'):
      f.recommend(task_embeddings=[np.ones(6), np.full(6, np.nan)])
    with self.assertRaisesRegex(ValueError, 'not finite'):
      f.recommend(observed=[{'m0': float('nan')}])
    with self.assertRaisesRegex(ValueError, 'top=99'):
      f.recommend(observed=[{}], top=99)
    plain = recommender.Fennec(_CONFIG)
    with self.assertRaisesRegex(ValueError, 'not fitted'):
      plain.recommend(observed=[{}])
    plain.fit(self.train)
    with self.assertRaisesRegex(ValueError, 'without task embeddings'):
      plain.recommend(task_embeddings=self.emb[10:])
    with self.assertRaisesRegex(ValueError, 'not in the history'):
      recommender.Fennec(_CONFIG).fit(self.train,
                                      task_embeddings={'nope': np.ones(6)})

  def test_history_task_with_one_observed_model_gives_finite_rankings(self):
    # Task 9 keeps one model's score: the space must still fit (no NaN from
    # per-task normalization of a single value) and rank every model; the
    # other tasks' rankings stay close to the full fit's (property a NaN
    # or a corrupted fit would break).
    mask = np.ones(self.train.scores.shape, bool)
    mask[1:, 9] = False
    sparse = history_lib.History.from_matrix(
        np.where(mask, self.train.scores, np.nan))
    self.assertEqual(int(sparse.mask[:, 9].sum()), 1)
    f = recommender.Fennec(_CONFIG).fit(sparse,
                                        task_embeddings=self.emb[:10])
    rec = f.recommend(task_embeddings=self.emb[10:], top=5)
    self.assertTrue(np.all(np.isfinite(rec.all_predicted)))
    self.assertTrue(np.all(np.isfinite(rec.all_std)))
    ref = self.fennec.recommend(task_embeddings=self.emb[10:], top=5)
    for a, b in zip(rec.all_predicted, ref.all_predicted):
      self.assertGreater(stats.spearmanr(a, b)[0], 0.5)  # Random: ~0.
    prior = f.recommend(observed=[{}], top=3)  # Neither: the prior.
    self.assertTrue(np.all(np.isfinite(prior.all_predicted)))


class ColdStartTest(absltest.TestCase):

  def test_unseen_models_get_vectors_from_embeddings(self):
    rng = np.random.default_rng(7)
    m, t = 40, 10
    u, v = rng.normal(size=(m, 2)), rng.normal(size=(t, 2))
    scores = 0.7 + 0.1 * u @ v.T + 0.005 * rng.normal(size=(m, t))
    emb = np.concatenate([u @ rng.normal(size=(2, 5)),
                          rng.normal(size=(m, 1))], 1)
    full = history_lib.History.from_matrix(scores)
    train = full.subset(models=np.arange(36))
    base = recommender.Fennec(_CONFIG).fit(train, model_embeddings=emb[:36])
    grown = base.add_models(['new0', 'new1', 'new2', 'new3'], emb[36:])
    self.assertLen(grown.model_ids, 40)
    self.assertLen(base.model_ids, 36)  # Unchanged.
    pred = np.asarray(grown.space.predict())[36:]  # Fitted tasks.
    true = scores[36:]
    self.assertGreater(stats.pearsonr(pred.ravel(), true.ravel())[0], 0.8)
    # Per task, the new models are ranked, not just given the mean model.
    taus = [stats.weightedtau(pred[:, j], true[:, j])[0] for j in range(t)]
    self.assertGreater(np.mean(taus), 0.4)
    # Cold models carry the map's error in their uncertainty: NumPy
    # reference var = phi' C phi + s2 + w' S w + tr(S C), S the map's LOO
    # error covariance over (u, bias) (zero for the constant column).
    rec = grown.recommend(observed=[{'m0': 0.7}], top=40)
    w, c = map(np.asarray, grown.posterior(observed=[{'m0': 0.7}]))
    phi = np.asarray(grown.space.model_features(), np.float64)
    d = phi.shape[1]
    free = [i for i in range(d) if i != d - 2]  # Not the constant column.
    sig = np.zeros((d, d))
    sig[np.ix_(free, free)] = grown.model_cov
    var = np.einsum('md,de,me->m', phi, c[0], phi) + float(
        grown.space.noise_var)
    var = var + grown.cold * (w[0] @ sig @ w[0] + np.trace(sig @ c[0]))
    np.testing.assert_allclose(rec.all_std[0], np.sqrt(var), rtol=1e-4)
    self.assertTrue((grown.cold[36:]).all() and not grown.cold[:36].any())
    self.assertGreater(np.trace(grown.model_cov), 0.0)
    np.testing.assert_allclose(
        rec.std[0], rec.all_std[0][rec.indices[0]], atol=1e-6)
    # Round trip keeps the cold flags and the map.
    d = self.enterContext(tempfile.TemporaryDirectory())
    grown.save(os.path.join(d, 'c'))
    loaded = recommender.Fennec.load(os.path.join(d, 'c'))
    np.testing.assert_array_equal(loaded.cold, grown.cold)
    np.testing.assert_allclose(
        loaded.recommend(observed=[{'m0': 0.7}], top=3).all_std,
        rec.all_std, atol=1e-6)
    with self.assertRaisesRegex(ValueError, 'not in the repository'):
      grown.add_models(['m0'], emb[:1])
    with self.assertRaisesRegex(ValueError, 'without model_embeddings'):
      recommender.Fennec(_CONFIG).fit(train).add_models(['x'], emb[:1])


class _Images(offline_source.ImageSource):
  """Probes tagged by task; proxy features linear in the task's factors."""

  def __init__(self, history, task_vectors):
    self.history = history
    self.task_vectors = task_vectors
    self.proj = np.random.default_rng(5).normal(size=(2, 8))

  def probe(self, task):
    j = self.history.task_index(task)
    images = np.zeros((24, 4, 4, 3), np.uint8)
    images[:, 0, 0, 0] = j
    return images, np.arange(24) % 3

  def proxy_features(self, images):
    j = int(images[0, 0, 0, 0])
    noise = np.random.default_rng(j).normal(size=(len(images), 8))
    return self.task_vectors[j] @ self.proj + 0.01 * noise

  def model_features(self, model_id, images):
    return np.random.default_rng(int(model_id[1:])).normal(
        size=(len(images), 5))


class DemoTest(absltest.TestCase):

  def test_demo_ranks_held_out_task_from_images(self):
    rng = np.random.default_rng(2)
    u, v = rng.normal(size=(20, 2)), rng.normal(size=(8, 2))
    h = history_lib.History.from_matrix(0.7 + 0.1 * u @ v.T)
    out = offline_demo.demo(task='t3', top=4, history=h,
                           source=_Images(h, v), config=_CONFIG)
    self.assertEqual(out.task, 't3')
    self.assertLen(out.rows, 4)
    preds = [r[1] for r in out.rows]
    self.assertEqual(preds, sorted(preds, reverse=True))
    for model, _, _, actual in out.rows:
      self.assertEqual(actual, h.scores[h.model_index(model), 3])
    # Proxy features carry the task's factors; LogME sees noise features.
    self.assertGreater(out.weighted_tau['fennec'], 0.5)
    self.assertGreater(out.weighted_tau['fennec'], out.weighted_tau['logme'])
    text = offline_demo.format_demo(out)
    self.assertIn('Held-out task: t3', text)
    self.assertIn('LogME over the zoo', text)
    with self.assertRaisesRegex(ValueError, "Unknown task id 'nope'"):
      offline_demo.demo(task='nope', history=h, source=_Images(h, v),
                       config=_CONFIG)


  def test_images_of_any_size_reach_the_proxy_at_its_shape(self):
    rng = np.random.default_rng(3)
    u, v = rng.normal(size=(20, 2)), rng.normal(size=(8, 2))
    h = history_lib.History.from_matrix(0.7 + 0.1 * u @ v.T)
    source = _Images(h, v)
    fennec = offline_demo.fit_offline(history=h, source=source,
                                     config=_CONFIG)
    seen = []
    proxy = source.proxy_features
    source.proxy_features = lambda x: (seen.append(x.shape), proxy(x))[1]
    images = np.full((150, 9, 7, 3), 5, np.uint8)  # Task 5's tag, bigger.
    emb = offline_demo.images_to_embedding(images, source, (4, 4, 3))
    self.assertEqual(seen, [(100, 4, 4, 3)])  # The paper's 100-image probe.
    rec = fennec.recommend(task_embeddings=emb[None, :], top=3)
    true = h.scores[:, 5]
    self.assertGreater(stats.weightedtau(rec.all_predicted[0], true)[0], 0.5)
    with self.assertRaisesRegex(ValueError, 'no images'):
      offline_demo.images_to_embedding([], source, (4, 4, 3))


class ScoresCsvTest(absltest.TestCase):

  def _write(self, text):
    d = self.enterContext(tempfile.TemporaryDirectory())
    path = os.path.join(d, 'new_task.csv')
    with open(path, 'w') as f:
      f.write(text)
    return path

  def test_one_and_many_tasks(self):
    self.assertEqual(
        recommender.read_scores_csv(self._write('model,score\na,0.5\nb,1\n')),
        {'new_task': {'a': 0.5, 'b': 1.0}})
    self.assertEqual(
        recommender.read_scores_csv(
            self._write('model,task,score\na,x,0.5\nb,y,1\na,y,2\n')),
        {'x': {'a': 0.5}, 'y': {'b': 1.0, 'a': 2.0}})

  def test_bad_rows_name_line_and_column(self):
    with self.assertRaisesRegex(ValueError, r"line 3, column 'score': 'x'"):
      recommender.read_scores_csv(self._write('model,score\na,1\nb,x\n'))
    with self.assertRaisesRegex(ValueError, "lacks column.*'score'"):
      recommender.read_scores_csv(self._write('model,acc\na,1\n'))
    with self.assertRaisesRegex(ValueError, "line 3: model 'a' is repeated"):
      recommender.read_scores_csv(self._write('model,score\na,1\na,2\n'))
    with self.assertRaisesRegex(ValueError, 'not finite'):
      recommender.read_scores_csv(self._write('model,score\na,inf\n'))


if __name__ == '__main__':
  absltest.main()
