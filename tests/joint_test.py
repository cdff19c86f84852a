"""Tests of the transfer space learned jointly with side information."""

import functools

from absl.testing import absltest
import chex
import jax
import jax.numpy as jnp
import networkx as nx
import numpy as np

from fennec_jax import joint
from fennec_jax.archi2vec import graphs as graphs_lib

_OPS = ['input', 'conv', 'pool', 'add', 'relu']
_VOCAB = graphs_lib.OpVocab(_OPS)


def _chain(ops, name='c'):
  g = nx.DiGraph(name=name)
  for i, op in enumerate(ops):
    g.add_node(f'{name}{i}', op=op)
  g.add_edges_from((f'{name}{i}', f'{name}{i + 1}')
                   for i in range(len(ops) - 1))
  return g


def _family_graph(family, rs):
  """Family 0: conv/relu chains; family 1: pool/add chains (random length)."""
  ops = ['conv', 'relu'] if family == 0 else ['pool', 'add']
  n = int(rs.integers(3, 7))
  return _chain(['input'] + [ops[i % 2] for i in range(n)])


def _padded(gs, n_graph):
  batch = graphs_lib.to_graphs_tuple(gs, _VOCAB)
  return graphs_lib.pad_graphs(batch, 128, 128, n_graph)


def _shrunk_svd(y, lam, k):
  """Global MAP of 0.5|Y - U V^T|^2 + 0.5 lam (|U|^2 + |V|^2), rank <= k:
  the top-k singular values soft-thresholded at lam."""
  a, s, bt = np.linalg.svd(y, full_matrices=False)
  s = np.maximum(s[:k] - lam, 0.0)
  return (a[:, :k] * s) @ bt[:k]


def _corr(a, b):
  return float(np.corrcoef(a, b)[0, 1])


class JointTest(chex.TestCase):

  def test_no_side_info_is_plain_masked_factorization(self):
    # A fully observed matrix: the joint loss without heads is the PMF
    # objective, whose optimum is the soft-thresholded SVD.
    rs = np.random.default_rng(0)
    y = rs.normal(size=(12, 2)) @ rs.normal(size=(2, 10)) * 1.5
    y += 0.1 * rs.normal(size=y.shape)
    lam = 0.5
    config = joint.JointConfig(
        rank=2, prior_precision=lam, use_bias=False, normalization='none',
        holdout_fraction=0.0, max_steps=1500, eval_every=1500,
        learning_rate=0.03)
    js = joint.fit_joint(y, config=config)
    self.assertNotIn('model_head', js.params)
    np.testing.assert_allclose(np.asarray(js.predict()).T,
                               _shrunk_svd(y, lam, 2), atol=2e-3)

  def test_new_tasks_from_side_info(self):
    # Task vectors are a linear function of task side information.
    rs = np.random.default_rng(1)
    m, t, q = 25, 36, 4
    side = rs.normal(size=(t, q))
    # Held-out tasks come in mirrored pairs (v and -v): whatever a method
    # that ignores side information predicts, it is right on one and wrong
    # on the other.
    side[32:] = -side[28:32]
    v = side @ rs.normal(size=(q, 2))
    u = rs.normal(size=(m, 2))
    y = u @ v.T + 0.05 * rs.normal(size=(m, t))
    train = np.arange(t) < 28
    config = joint.JointConfig(rank=2, normalization='zscore',
                               max_steps=600)
    js = joint.fit_joint(y[:, train], task_side=side[train], config=config)
    pred = np.asarray(js.predict(task_side=side[~train]))
    self.assertEqual(pred.shape, (8, m))
    corr = [_corr(p, y[:, j]) for p, j in zip(pred, np.flatnonzero(~train))]
    self.assertGreater(min(corr), 0.85)
    # Ignoring the side information (the mean fitted task) fails here.
    mean_task = np.asarray(js.predict()).mean(0)
    base = [_corr(mean_task, y[:, j]) for j in np.flatnonzero(~train)]
    self.assertLess(abs(np.mean(base)), 0.1)

  def test_cold_start_model_from_graph(self):
    # A model's vector is fixed by its architecture family.
    rs = np.random.default_rng(2)
    fam_vec = np.array([[2.0, 0.0], [0.0, 2.0]])
    families = np.array([0, 1] * 8)
    gs = [_family_graph(f, rs) for f in families]
    v = rs.normal(size=(12, 2))
    y = (fam_vec[families] + 0.05 * rs.normal(size=(16, 2))) @ v.T
    train = np.arange(16) < 14    # models 14 (family 0), 15 (family 1) cold
    config = joint.JointConfig(rank=2, normalization='none', max_steps=400,
                               eval_every=100, gnn_hidden=16, gnn_layers=1,
                               gnn_embed_dim=8, learning_rate=0.02,
                               prior_precision=10.0)
    js = joint.fit_joint(y[train], model_graphs=_padded(
        [g for g, k in zip(gs, train) if k], 16), vocab_size=len(_VOCAB),
                         config=config)
    cold = np.asarray(js.predict(model_graphs=_padded(gs[14:], 16),
                                 num_models=2))     # [T, 2]
    for j, fam in ((0, 0), (1, 1)):
      own = _corr(cold[:, j], y[14 + j])
      other = _corr(cold[:, j], y[14 + 1 - j])
      self.assertGreater(own, 0.9, f'model {14 + j}')
      self.assertGreater(own, other + 0.5, f'model {14 + j} family {fam}')

  def test_cold_start_model_from_metadata(self):
    rs = np.random.default_rng(3)
    meta = rs.normal(size=(20, 3))
    u = meta @ rs.normal(size=(3, 2))
    y = u @ rs.normal(size=(2, 15)) + 0.05 * rs.normal(size=(20, 15))
    config = joint.JointConfig(rank=2, normalization='none', max_steps=600)
    js = joint.fit_joint(y[:17], model_side=meta[:17], config=config)
    cold = np.asarray(js.predict(model_side=meta[17:]))
    for j in range(3):
      self.assertGreater(_corr(cold[:, j], y[17 + j]), 0.9)

  def test_step_compiles_once_for_fixed_shapes(self):
    spec = joint._Spec(joint.JointConfig(rank=2, gnn_hidden=8, gnn_layers=1,
                                         gnn_embed_dim=4), len(_VOCAB))

    @jax.jit
    @chex.assert_max_traces(n=1)
    def run(state, batch, rng):
      return joint.step(state, batch, rng, num_train=jnp.float32(20),
                        spec=spec)

    def batch(seed):
      r = np.random.default_rng(seed)
      gs = [_family_graph(f, r) for f in (0, 1, 0, 1)]
      return joint.Batch(
          rows=r.integers(0, 4, 20).astype(np.int32),
          cols=r.integers(0, 5, 20).astype(np.int32),
          values=r.normal(size=20).astype(np.float32),
          weights=np.ones(20, np.float32),
          model_side=r.normal(size=(4, 3)).astype(np.float32),
          task_side=r.normal(size=(5, 2)).astype(np.float32),
          graphs=_padded(gs, 8))

    b0 = batch(0)
    params = joint.init_params(4, 5, b0, spec, jax.random.key(0))
    state = joint.State(params, joint._optimizer(spec.config).init(params),
                        jnp.zeros((), jnp.int32))
    losses = []
    for i in range(3):
      state, metrics = run(state, batch(i), jax.random.key(i))
      losses.append(float(metrics['loss']))
    self.assertTrue(np.all(np.isfinite(losses)))

  def test_early_stopping_keeps_the_best_evaluation(self):
    # Rank 6 and no prior on 70% of a 16 x 12 matrix overfit: the held-out
    # RMSE rises after its minimum, the loop stops `patience` evaluations
    # later and the returned fit is the best evaluated one (no refit).
    rs = np.random.default_rng(7)
    y = (rs.normal(size=(16, 1)) @ rs.normal(size=(1, 12))
         + 0.3 * rs.normal(size=(16, 12)))
    config = joint.JointConfig(
        rank=6, prior_precision=0.0, bias_prior_precision=0.0,
        normalization='none', holdout_fraction=0.3, patience=3,
        max_steps=3000, eval_every=25, learning_rate=0.05)
    js, info = joint.fit_joint(y, config=config, return_info=True)
    best = int(np.argmin(info.eval_rmse))
    self.assertEqual(info.best_step, info.eval_steps[best])
    self.assertLess(info.steps, config.max_steps)
    self.assertLen(info.eval_rmse, best + 1 + config.patience)
    self.assertGreater(info.eval_rmse[-1], info.eval_rmse[best])
    pred = np.asarray(js.predict()).T
    held = (info.heldout_rows, info.heldout_cols)
    rmse = np.sqrt(np.mean((pred - y)[held] ** 2))
    np.testing.assert_allclose(rmse, info.eval_rmse[best], rtol=1e-4)

  def test_deterministic_by_seed(self):
    rs = np.random.default_rng(5)
    y = rs.normal(size=(10, 8))
    mask = rs.random(y.shape) < 0.8
    side = rs.normal(size=(8, 2))
    fit = functools.partial(joint.fit_joint, y, mask, task_side=side)
    a = fit(config=joint.JointConfig(max_steps=60, eval_every=30, seed=1))
    b = fit(config=joint.JointConfig(max_steps=60, eval_every=30, seed=1))
    c = fit(config=joint.JointConfig(max_steps=60, eval_every=30, seed=2))
    np.testing.assert_array_equal(np.asarray(a.predict()),
                                  np.asarray(b.predict()))
    self.assertGreater(np.abs(np.asarray(a.predict())
                              - np.asarray(c.predict())).max(), 1e-4)

  def test_fold_in_uses_joint_factors(self):
    # The exported TransferSpace reproduces the joint fit and folds in.
    rs = np.random.default_rng(6)
    y = rs.normal(size=(15, 2)) @ rs.normal(size=(2, 12))
    side = rs.normal(size=(12, 2))
    js = joint.fit_joint(y[:, :11], task_side=side[:11],
                         config=joint.JointConfig(normalization='zscore',
                                                  max_steps=300))
    sp = js.to_transfer_space()
    np.testing.assert_allclose(np.asarray(sp.predict()),
                               np.asarray(js.predict()).T, atol=1e-4)
    fold = sp.fold_in(y[None, :, 11], np.ones((1, 15), bool))
    self.assertGreater(_corr(np.asarray(fold.predicted)[0], y[:, 11]), 0.9)

  def test_bad_input(self):
    y = np.ones((4, 3))
    with self.assertRaisesRegex(ValueError, 'task_side has 2 rows'):
      joint.fit_joint(y, task_side=np.ones((2, 2)))
    with self.assertRaisesRegex(ValueError, r'model_side\[0, 1\]'):
      joint.fit_joint(y, model_side=np.array([[1, np.nan]] * 4))
    js = joint.fit_joint(y + np.arange(4)[:, None], task_side=np.eye(3),
                         config=joint.JointConfig(rank=1, max_steps=50))
    with self.assertRaisesRegex(ValueError, 'the fit used model_side=False'):
      js.predict(model_side=np.ones((1, 2)))
    with self.assertRaisesRegex(ValueError, 'has 2 features; the fit used 3'):
      js.predict(task_side=np.ones((1, 2)))


if __name__ == '__main__':
  absltest.main()
