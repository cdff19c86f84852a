"""Tests for fennec_jax.space against NumPy references and properties."""

import functools
import os
import tempfile
from unittest import mock

from absl.testing import absltest
from absl.testing import parameterized
import chex
import jax
import numpy as np
import scipy.special
import scipy.stats

from fennec_jax import checkpoint
from fennec_jax import posterior
from fennec_jax import sharding
from fennec_jax import space as space_lib
from fennec_jax.space import factorization
from fennec_jax.space import foldin

# Small, fast fits: the tests check correctness, not tuning.
_FAST = dict(max_steps=600, eval_every=50, learning_rate=0.05)


def _low_rank(num_models=40, num_tasks=15, rank=2, noise=0.02, seed=0):
  """scores = offset + model bias + task bias + U V^T + noise."""
  rng = np.random.default_rng(seed)
  u = rng.normal(size=(num_models, rank))
  v = rng.normal(size=(num_tasks, rank))
  clean = (0.3 + rng.normal(size=(num_models, 1))
           + 0.5 * rng.normal(size=(1, num_tasks)) + u @ v.T)
  return clean, clean + noise * rng.normal(size=clean.shape)


class NormalizeTest(parameterized.TestCase):

  def test_zscore_uses_observed_entries_only(self):
    rng = np.random.default_rng(1)
    scores = rng.normal(size=(30, 4))
    mask = rng.random((30, 4)) < 0.6
    normed, loc, scale = space_lib.normalize(
        np.where(mask, scores, 1e6), mask, 'zscore')
    for t in range(4):
      x = scores[mask[:, t], t]
      np.testing.assert_allclose(loc[t], x.mean(), rtol=1e-10)
      np.testing.assert_allclose(scale[t], x.std(), rtol=1e-10)
      np.testing.assert_allclose(normed[mask[:, t], t],
                                 (x - x.mean()) / x.std(), rtol=1e-8)
    np.testing.assert_array_equal(normed[~mask], 0.0)

  def test_rank_is_normal_scores_with_affine_map_back(self):
    rng = np.random.default_rng(2)
    scores = rng.exponential(size=(25, 3))
    scores[3, 0] = scores[4, 0]  # a tie
    mask = np.ones_like(scores, bool)
    mask[:5, 2] = False
    normed, loc, scale = space_lib.normalize(scores, mask, 'rank')
    for t in range(3):
      x = scores[mask[:, t], t]
      ranks = scipy.stats.rankdata(x)
      expected = scipy.special.ndtri((ranks - 0.5) / len(x))
      np.testing.assert_allclose(normed[mask[:, t], t], expected, rtol=1e-10)
      # loc + scale * normed is the least-squares line through (normed, x).
      slope, intercept = np.polyfit(expected, x, 1)
      np.testing.assert_allclose([loc[t], scale[t]], [intercept, slope],
                                 rtol=1e-8)

  def test_robust_is_soft_winsorized_median_mad_zscore(self):
    rng = np.random.default_rng(3)
    scores = rng.normal(size=(30, 4))
    scores[:4, 0] = [-4.0, -5.0, -6.0, -7.0]  # failed fine-tunes
    scores[:, 3] = np.round(scores[:, 3])  # ties
    scores[:20, 2] = 0.5  # MAD 0: falls back to the standard deviation
    mask = rng.random((30, 4)) < 0.8
    mask[:4, 0] = True
    mask[:20, 2] = True
    normed, loc, scale = space_lib.normalize(
        np.where(mask, scores, 1e6), mask, 'robust')
    for t in range(4):
      x = scores[mask[:, t], t]
      med = np.median(x)
      mad = 1.482602218505602 * np.median(np.abs(x - med))
      spread = mad if mad > 0 else x.std()
      expected = 2.0 * np.tanh((x - med) / spread / 2.0)
      np.testing.assert_allclose(normed[mask[:, t], t], expected, rtol=1e-10,
                                 atol=1e-12)
      slope, intercept = np.polyfit(expected, x, 1)
      np.testing.assert_allclose([loc[t], scale[t]], [intercept, slope],
                                 rtol=1e-8, atol=1e-12)
    # The tail is bounded by 2 but keeps its order.
    tail = normed[:4, 0]
    self.assertTrue((np.diff(tail) < 0).all())
    self.assertTrue(((tail > -2.0) & (tail < -1.8)).all())
    np.testing.assert_array_equal(normed[~mask], 0.0)

  def test_unknown_method(self):
    with self.assertRaisesRegex(ValueError, "'minmax'.*zscore"):
      space_lib.normalize(np.zeros((2, 2)), np.ones((2, 2), bool), 'minmax')


class FitTest(parameterized.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.clean, cls.scores = _low_rank()
    rng = np.random.default_rng(3)
    cls.mask = rng.random(cls.scores.shape) < 0.8
    cls.config = space_lib.SpaceConfig(
        rank=2, prior_precision=0.01, bias_prior_precision=0.01,
        normalization='none', **_FAST)
    cls.space, cls.info = space_lib.fit(
        np.where(cls.mask, cls.scores, np.nan), cls.mask, cls.config,
        return_info=True)

  def test_recovers_low_rank_matrix(self):
    pred = np.asarray(self.space.predict())
    signal_std = self.clean.std()
    # Unobserved entries (never seen by the fit) are predicted to within a
    # small fraction of the signal's spread.
    rmse = np.sqrt(np.mean((pred - self.clean)[~self.mask] ** 2))
    self.assertLess(rmse, 0.1 * signal_std)
    # The held-out RMSE approaches the noise level (0.02).
    self.assertLess(self.info.eval_rmse.min(), 0.06)

  def test_early_stopping_restores_best_evaluation(self):
    info = self.info
    self.assertEqual(info.best_step,
                     info.eval_steps[np.argmin(info.eval_rmse)])
    held = np.zeros(self.mask.shape, bool)
    held[info.heldout_rows, info.heldout_cols] = True
    self.assertEqual(held.sum(), info.num_heldout)
    self.assertFalse((held & ~self.mask).any())
    # Without the refit, the returned parameters are the best evaluated ones.
    config = space_lib.SpaceConfig(**{**self.config.__dict__,
                                      'refit_on_all': False})
    pred = np.asarray(space_lib.fit(self.scores, self.mask, config).predict())
    rmse = np.sqrt(np.mean((pred - self.scores)[held] ** 2))
    np.testing.assert_allclose(rmse, info.eval_rmse.min(), rtol=1e-4)

  def test_early_stopping_stops_after_patience_on_overfitting(self):
    # Rank 8 and no prior on 60% of a 20 x 12 matrix overfits: the held-out
    # RMSE rises after its minimum and the best parameters are kept.
    _, scores = _low_rank(20, 12, rank=1, noise=0.3, seed=4)
    config = space_lib.SpaceConfig(
        rank=8, prior_precision=0.0, bias_prior_precision=0.0,
        normalization='none', holdout_fraction=0.3, patience=3,
        max_steps=3000, eval_every=25, learning_rate=0.05,
        refit_on_all=False)
    space, info = space_lib.fit(scores, None, config, return_info=True)
    best = int(np.argmin(info.eval_rmse))
    self.assertLess(info.steps, config.max_steps)
    self.assertLen(info.eval_rmse, best + 1 + config.patience)
    self.assertGreater(info.eval_rmse[-1], info.eval_rmse[best])
    pred = np.asarray(space.predict())
    held = (info.heldout_rows, info.heldout_cols)
    rmse = np.sqrt(np.mean((pred - scores)[held] ** 2))
    np.testing.assert_allclose(rmse, info.eval_rmse[best], rtol=1e-4)

  @parameterized.parameters('dense', 'sparse')
  def test_refit_equals_a_fit_on_all_entries_for_the_best_steps(self,
                                                                 layout):
    # The refit reruns the same initialization on every observed entry for
    # the number of steps early stopping chose: the same as a fit with no
    # holdout and max_steps = best_step.
    config = space_lib.SpaceConfig(**{**self.config.__dict__,
                                      'layout': layout})
    refit = space_lib.fit(self.scores, self.mask, config)
    _, info = space_lib.fit(self.scores, self.mask, config, return_info=True)
    direct = space_lib.fit(self.scores, self.mask, space_lib.SpaceConfig(
        **{**config.__dict__, 'holdout_fraction': 0.0,
           'max_steps': int(info.best_step)}))
    np.testing.assert_allclose(refit.predict_normalized(),
                               direct.predict_normalized(), rtol=1e-4,
                               atol=1e-4)
    # ... and it differs from the early-stopped fit on the training part.
    kept = space_lib.fit(self.scores, self.mask, space_lib.SpaceConfig(
        **{**config.__dict__, 'refit_on_all': False}))
    self.assertGreater(np.abs(np.asarray(kept.predict_normalized())
                              - np.asarray(refit.predict_normalized())).max(),
                       1e-3)

  @parameterized.parameters('dense', 'sparse')
  def test_unobserved_values_do_not_influence_the_fit(self, layout):
    config = space_lib.SpaceConfig(**{**self.config.__dict__,
                                      'layout': layout})
    fitted = space_lib.fit(self.scores, self.mask, config)
    garbage = np.where(self.mask, self.scores, -1e6)
    other = space_lib.fit(garbage, self.mask, config)
    chex.assert_trees_all_equal(fitted, other)

  def test_dense_and_sparse_layouts_agree(self):
    # 'auto' picks dense here (80% observed); the sparse COO loss is the
    # same objective, so both fits end at the same predictions.
    sparse = space_lib.fit(
        self.scores, self.mask,
        space_lib.SpaceConfig(**{**self.config.__dict__, 'layout': 'sparse'}))
    np.testing.assert_allclose(sparse.predict(), self.space.predict(),
                               atol=2e-3)

  def test_entries_equal_dense(self):
    rows, cols = np.nonzero(self.mask)
    other = space_lib.fit_entries(rows, cols, self.scores[rows, cols],
                                  self.mask.shape, self.config)
    chex.assert_trees_all_equal(self.space, other)

  @parameterized.parameters('dense', 'sparse')
  def test_entries_split_over_every_device_state_replicated(self, layout):
    seen = []
    run = factorization._run_steps

    def spy(state, data, rng, **kwargs):
      seen.append((data.values.sharding,
                   state.params['model_factors'].sharding))
      return run(state, data, rng, **kwargs)

    config = space_lib.SpaceConfig(**{**self.config.__dict__,
                                      'layout': layout, 'max_steps': 50})
    with mock.patch.object(factorization, '_run_steps', spy):
      space_lib.fit(self.scores, self.mask, config)
    self.assertLen(seen, 2)  # the fit and the refit
    for data_sharding, state_sharding in seen:
      # 40 models divide over the 8 devices, so the dense matrix is split
      # by model rows as the COO entries are.
      self.assertEqual(data_sharding.spec[0], sharding.DATA_AXIS)
      self.assertLen(data_sharding.device_set, jax.device_count())
      self.assertTrue(state_sharding.is_fully_replicated)
      self.assertLen(state_sharding.device_set, jax.device_count())

  def test_deterministic_by_seed(self):
    again = space_lib.fit(np.where(self.mask, self.scores, np.nan), self.mask,
                          self.config)
    chex.assert_trees_all_equal(self.space, again)
    reseeded = space_lib.fit(
        np.where(self.mask, self.scores, np.nan), self.mask,
        space_lib.SpaceConfig(**{**self.config.__dict__, 'seed': 1}))
    self.assertFalse(np.allclose(self.space.model_factors,
                                 reseeded.model_factors))

  def test_save_load_round_trip(self):
    with tempfile.TemporaryDirectory() as tmp:
      path = os.path.join(tmp, 'space')
      self.space.save(path)
      self.assertEqual(checkpoint.read_manifest(path)['kind'],
                       'TransferSpace')
      loaded = space_lib.TransferSpace.load(path)
      with self.assertRaisesRegex(ValueError, 'exists'):
        self.space.save(path)
      other = os.path.join(tmp, 'other')
      checkpoint.save(other, 'Fennec', {'x': np.zeros(2)}, {})
      with self.assertRaisesRegex(checkpoint.CheckpointError,
                                  "'Fennec' checkpoint; expected "
                                  "'TransferSpace'"):
        space_lib.TransferSpace.load(other)
    chex.assert_trees_all_equal(self.space, loaded)
    self.assertEqual(loaded.config, self.config)
    with self.assertRaisesRegex(ValueError, 'noise_var'):
      d = self.space.to_dict()
      del d['noise_var']
      space_lib.TransferSpace.from_dict(d)

  @parameterized.parameters(True, False)
  def test_nonnegativity(self, nonneg):
    config = space_lib.SpaceConfig(rank=3, nonneg=nonneg, use_bias=False,
                                   prior_precision=0.0, normalization='none',
                                   **_FAST)
    # Scores with a negative low-rank part: an unconstrained fit needs
    # negative factors, a non-negative one must not use them.
    space = space_lib.fit(self.scores - self.scores.mean(), None, config)
    u = np.asarray(space.model_factors)
    v = np.asarray(space.task_factors)
    if nonneg:
      self.assertGreaterEqual(u.min(), 0.0)
      self.assertGreaterEqual(v.min(), 0.0)
    else:
      self.assertLess(min(u.min(), v.min()), 0.0)
    np.testing.assert_array_equal(space.model_bias, 0.0)
    np.testing.assert_array_equal(space.task_bias, 0.0)

  def test_minibatch_step_is_pure_and_reduces_loss(self):
    config = space_lib.SpaceConfig(rank=2, batch_size=64,
                                   normalization='none')
    rows, cols = np.nonzero(self.mask)
    data = space_lib.Data(rows=rows.astype(np.int32),
                          cols=cols.astype(np.int32),
                          values=self.scores[rows, cols].astype(np.float32),
                          weights=np.ones(rows.size, np.float32))
    state = space_lib.init_state(*self.mask.shape, config, jax.random.key(0))
    step = jax.jit(space_lib.step, static_argnames='config')
    n = np.float32(rows.size)
    a, _ = step(state, data, jax.random.key(1), num_train=n, config=config)
    b, _ = step(state, data, jax.random.key(1), num_train=n, config=config)
    chex.assert_trees_all_equal(a, b)
    loss0 = space_lib.objective(state.params, data, n, config)
    for i in range(100):
      state, _ = step(state, data, jax.random.key(i), num_train=n,
                      config=config)
    self.assertLess(space_lib.objective(state.params, data, n, config),
                    0.5 * loss0)


class FoldInTest(parameterized.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    _, scores = _low_rank(30, 12, rank=2, noise=0.1, seed=5)
    # Tasks of different scales so the raw-domain prior is full rank.
    scores *= np.linspace(0.5, 2.0, 12)
    config = space_lib.SpaceConfig(rank=2, normalization='zscore', **_FAST)
    cls.space = space_lib.fit(scores, None, config)
    rng = np.random.default_rng(6)
    cls.new = rng.normal(size=(4, 30))
    cls.obs = np.zeros((4, 30), bool)
    for b, k in enumerate((0, 1, 3, 10)):
      cls.obs[b, rng.choice(30, k, replace=False)] = True

  def _numpy_posterior(self, y, observed):
    """Textbook Bayesian linear regression in float64."""
    sp = self.space
    phi = np.concatenate([np.asarray(sp.model_factors, np.float64),
                          np.ones((sp.num_models, 1)),
                          np.asarray(sp.model_bias, np.float64)[:, None]], 1)
    m0 = np.asarray(sp.prior_mean, np.float64)
    s0 = np.asarray(sp.prior_cov, np.float64)
    s0 = s0 + 1e-6 * np.trace(s0) / len(s0) * np.eye(len(s0))  # documented
    s2 = float(sp.noise_var)
    x = phi[observed]
    cov = np.linalg.inv(np.linalg.inv(s0) + x.T @ x / s2)
    mean = cov @ (np.linalg.solve(s0, m0) + x.T @ y[observed] / s2)
    pred = phi @ mean
    std = np.sqrt(np.einsum('mi,ij,mj->m', phi, cov, phi) + s2)
    return mean, cov, pred, std

  def test_matches_numpy_bayesian_linear_regression(self):
    fold = self.space.fold_in(np.where(self.obs, self.new, np.nan), self.obs)
    chex.assert_shape(fold.vectors, (4, self.space.dim))
    for b in range(4):
      mean, cov, pred, std = self._numpy_posterior(self.new[b], self.obs[b])
      np.testing.assert_allclose(fold.vectors[b], mean, rtol=2e-3,
                                 atol=2e-4)
      np.testing.assert_allclose(fold.cov[b], cov, rtol=5e-3, atol=1e-5)
      np.testing.assert_allclose(fold.predicted[b], pred, rtol=2e-3,
                                 atol=2e-3)
      np.testing.assert_allclose(fold.std[b], std, rtol=2e-3)

  def test_k0_is_the_prior(self):
    none = np.zeros((2, 30), bool)
    fold = self.space.fold_in(np.full((2, 30), np.nan), none)
    phi = np.asarray(self.space.model_features())
    for b in range(2):
      np.testing.assert_allclose(fold.vectors[b], self.space.prior_mean,
                                 rtol=1e-5, atol=1e-6)
      np.testing.assert_allclose(fold.predicted[b],
                                 phi @ np.asarray(self.space.prior_mean),
                                 rtol=1e-4, atol=1e-5)
    # The prior mean is the mean normalized task at the mean raw location
    # and scale: [mean(s) mean(V), mean(loc) + mean(s) (offset + mean(tb)),
    # mean(s)].
    sp = self.space
    s = float(np.mean(sp.task_scale))
    expected = np.concatenate([
        s * np.asarray(sp.task_factors).mean(0),
        [float(np.mean(sp.task_loc)) + s * (float(sp.offset)
                                            + float(np.mean(sp.task_bias))),
         s]])
    np.testing.assert_allclose(sp.prior_mean, expected, rtol=1e-4, atol=1e-6)
    # Its covariance is the spread of the fitted w_t around that mean.
    dev = np.asarray(sp.task_vectors(), np.float64) - expected
    cov = dev.T @ dev / (sp.num_tasks - 1)
    a = sp.config.prior_shrinkage
    np.testing.assert_allclose(
        sp.prior_cov, (1 - a) * cov + a * np.diag(np.diag(cov)), rtol=1e-3,
        atol=1e-6)

  @parameterized.parameters('robust', 'zscore', 'rank')
  def test_k0_ranks_by_mean_normalized_score_not_raw_scale(self,
                                                          normalization):
    # Five unit-scale tasks rank the models by a; a sixth task, 100 times
    # wider, ranks them in reverse. Popularity (the mean normalized score)
    # follows the five; a prior that averaged raw-domain task vectors would
    # follow the wide task.
    rng = np.random.default_rng(11)
    a = np.linspace(-1.0, 1.0, 20)
    scores = a[:, None] + 0.05 * rng.normal(size=(20, 6))
    scores[:, 0] = -100.0 * a + 0.05 * rng.normal(size=20)
    config = space_lib.SpaceConfig(rank=1, normalization=normalization,
                                   holdout_fraction=0.0, **_FAST)
    fitted = space_lib.fit(scores, None, config)
    pred = np.asarray(fitted.fold_in(np.zeros((1, 20)),
                                     np.zeros((1, 20), bool)).predicted[0])
    normed, _, _ = space_lib.normalize(scores, np.ones((20, 6), bool),
                                       normalization)
    rho = scipy.stats.spearmanr(pred, normed.mean(1))[0]
    self.assertGreater(rho, 0.9)

  def test_posterior_shrinks_with_more_observations(self):
    fold = self.space.fold_in(np.where(self.obs, self.new, 0.0), self.obs)
    mean_std = np.asarray(fold.std).mean(1)
    self.assertTrue(np.all(np.diff(mean_std) < 0), mean_std)

  def test_gathered_equals_dense(self):
    k = 3
    idx = np.argsort(~self.obs[2])[:k][None]  # the 3 observed of row 2
    dense = self.space.fold_in(np.where(self.obs, self.new, 0.0), self.obs)
    gathered = self.space.fold_in_indices(idx, self.new[2][idx],
                                          return_std=True)
    np.testing.assert_allclose(gathered.vectors[0], dense.vectors[2],
                               rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(gathered.std[0], dense.std[2], rtol=1e-4)
    # Padding entries (valid=False) change nothing.
    padded = self.space.fold_in_indices(
        np.concatenate([idx, [[5, 6]]], 1),
        np.concatenate([self.new[2][idx], [[99.0, np.nan]]], 1),
        valid=np.array([[True] * k + [False, False]]))
    np.testing.assert_allclose(padded.vectors, gathered.vectors, rtol=1e-5,
                               atol=1e-6)

  def test_no_recompile_across_calls(self):
    traces = []

    def count(impl):
      @functools.wraps(impl)
      def traced(*args, **kwargs):
        traces.append(impl.__name__)
        return impl(*args, **kwargs)
      return traced

    counted = jax.jit(chex.assert_max_traces(
        count(foldin.fold_in_dense_impl), n=1))
    topk = jax.jit(chex.assert_max_traces(count(foldin.top_k_impl), n=1),
                   static_argnames=('k', 'chunk_size'))
    with mock.patch.object(foldin, 'fold_in_dense', counted), \
        mock.patch.object(foldin, 'top_k_chunked', topk):
      for seed in range(3):
        rng = np.random.default_rng(seed)
        obs = rng.random((4, 30)) < 0.2 * seed
        fold = self.space.fold_in(rng.normal(size=(4, 30)), obs)
        self.space.top_k(fold.vectors, 5, chunk_size=8)
    # The space called the patched entry points, each traced once.
    self.assertEqual(traces, ['fold_in_dense_impl', 'top_k_impl'])

  def test_link_keeps_ranking_mean_and_spread(self):
    rng = np.random.default_rng(7)
    linear = rng.normal(size=(3, 50))
    link = np.sort(rng.standard_t(2, size=64))
    out = np.asarray(posterior.apply_link(linear, link))
    np.testing.assert_array_equal(np.argsort(out, 1), np.argsort(linear, 1))
    np.testing.assert_allclose(out.mean(1), linear.mean(1), atol=1e-5)
    np.testing.assert_allclose(out.std(1), linear.std(1), rtol=1e-4)
    np.testing.assert_array_equal(
        posterior.apply_link(linear, np.zeros((0,))), linear)


class TopKTest(parameterized.TestCase):

  @parameterized.parameters((1000, 10, 128), (1000, 10, 1000), (37, 5, 4))
  def test_chunked_equals_full_argsort(self, num_models, k, chunk):
    rng = np.random.default_rng(num_models + chunk)
    d = 4
    space = space_lib.TransferSpace(
        model_factors=rng.normal(size=(num_models, d - 2)).astype(np.float32),
        task_factors=np.zeros((2, d - 2), np.float32),
        model_bias=rng.normal(size=num_models).astype(np.float32),
        task_bias=np.zeros(2, np.float32), offset=np.float32(0),
        task_loc=np.zeros(2, np.float32), task_scale=np.ones(2, np.float32),
        prior_mean=np.zeros(d, np.float32),
        prior_cov=np.eye(d, dtype=np.float32),
        noise_var=np.float32(1), link=np.zeros((0,), np.float32))
    w = rng.normal(size=(6, d)).astype(np.float32)
    vals, idx = space.top_k(w, k, chunk_size=chunk)
    full = w.astype(np.float64) @ np.asarray(space.model_features(),
                                             np.float64).T
    expected = np.argsort(-full, axis=1)[:, :k]
    np.testing.assert_array_equal(idx, expected)
    np.testing.assert_allclose(vals, np.take_along_axis(full, expected, 1),
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(space.score(w), full, rtol=1e-5, atol=1e-5)


class BadInputTest(parameterized.TestCase):

  def test_shape_mismatch(self):
    with self.assertRaisesRegex(ValueError, r'mask shape \(3, 2\)'):
      space_lib.fit(np.zeros((3, 3)), np.ones((3, 2), bool))

  def test_all_nan_task(self):
    scores = np.ones((4, 3))
    scores[:, 1] = np.nan
    with self.assertRaisesRegex(ValueError, r'task column\(s\) \[1\]'):
      space_lib.fit(scores, None, space_lib.SpaceConfig(rank=1))

  def test_non_finite_observed(self):
    scores = np.ones((4, 3))
    scores[2, 0] = np.inf
    with self.assertRaisesRegex(ValueError, r'scores\[2, 0\] = inf'):
      space_lib.fit(scores, np.ones((4, 3), bool))

  @parameterized.named_parameters(
      ('rank0', dict(rank=0), 'rank must be an integer >= 1'),
      ('normalization', dict(normalization='l2'), "'l2'"),
      ('holdout', dict(holdout_fraction=1.0), 'holdout_fraction'),
      ('negative_prior', dict(prior_precision=-1.0), 'prior_precision'),
      ('layout', dict(layout='csr'), "'csr'"),
      ('dense_minibatch', dict(layout='dense', batch_size=8), 'full batch'))
  def test_bad_config(self, overrides, message):
    with self.assertRaisesRegex(ValueError, message):
      space_lib.fit(np.ones((4, 3)), None, space_lib.SpaceConfig(**overrides))

  def test_entries_errors(self):
    config = space_lib.SpaceConfig(rank=1)
    with self.assertRaisesRegex(ValueError, r'entry \(row 1, col 0\) is '
                                'given more than once'):
      space_lib.fit_entries([0, 1, 1], [0, 0, 0], [1.0, 2.0, 3.0], (2, 1),
                            config)
    with self.assertRaisesRegex(ValueError, r'cols\[1\] = 5 is outside'):
      space_lib.fit_entries([0, 1], [0, 5], [1.0, 2.0], (2, 2), config)
    with self.assertRaisesRegex(ValueError, r'values\[0\] \(row 0, col 0\)'):
      space_lib.fit_entries([0], [0], [np.nan], (1, 1), config)

  def test_fold_in_errors(self):
    scores = _low_rank(8, 4, rank=1, seed=8)[1]
    space = space_lib.fit(scores, None, space_lib.SpaceConfig(
        rank=1, max_steps=50, eval_every=50, normalization='zscore'))
    with self.assertRaisesRegex(ValueError, r'K=9 .* only 8 models'):
      space.fold_in_indices(np.zeros((1, 9), int), np.zeros((1, 9)))
    with self.assertRaisesRegex(ValueError, r'model_indices\[0, 1\] = 8'):
      space.fold_in_indices(np.array([[0, 8]]), np.zeros((1, 2)))
    with self.assertRaisesRegex(ValueError, r'\[B, 8\]'):
      space.fold_in(np.zeros((1, 7)), np.zeros((1, 7), bool))
    with self.assertRaisesRegex(ValueError, r'observed_scores\[0, 3\] = nan'):
      obs = np.zeros((1, 8), bool)
      obs[0, 3] = True
      space.fold_in(np.full((1, 8), np.nan), obs)
    with self.assertRaisesRegex(ValueError, r'k=9 must be in \[1, 8\]'):
      space.top_k(np.zeros((1, space.dim)), 9)


if __name__ == '__main__':
  absltest.main()
