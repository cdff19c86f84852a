"""A transfer space learned jointly with side information (cold start).

`space.fit` factorizes the history alone; mapping proxy task embeddings or
model metadata onto its vectors afterwards (the post-hoc task and model maps in
`recommender.Fennec`) cannot change the factors to suit the side
information. Here the side information is part of the factorization:

  u_m = a_m + f(model_side_m, GNN(graph_m))     model vector   [k]
  v_t = b_t + g(task_side_t)                    task vector    [k]
  norm(scores)[m, t] ~ offset + c_m + d_t + u_m . v_t

where f and g are small linen heads (linear, or an MLP when
`JointConfig.hidden > 0`) that also output a bias contribution
(c_m = c_free_m + f_bias(...), d_t likewise), GNN is the archi2vec jraph
encoder (`archi2vec.gnn.GraphEncoder`) trained end to end in the same loss,
and a, b, c_free, d_free are free per-row parts with Gaussian priors (L2):
the side information explains what it can and the free parts only the
rest, so a model or task without history (a = 0) still gets a vector from
its side information alone. The loss is the masked MAP objective of
`space.objective` (mean squared error over the observed training entries,
visited as COO gathers, plus priors / num_train), minimized with optax Adam
by a pure jitted `step(state, batch, rng) -> (state, metrics)` with static
padded shapes (one compile). Per-task normalization, the held-out split and
the training loop (`space.training`: early stopping, the state donated to
each compiled run of steps) are the transfer space's; unlike
`space.fit_entries`, the joint fit keeps the early-stopped parameters
(no refit on all entries).

`JointSpace.predict` scores new tasks (from task side info, e.g. a proxy
embedding) and cold-start models (from metadata and/or graphs);
`JointSpace.to_transfer_space()` exposes the combined factors as a
`space.TransferSpace`, so its K-shot Bayesian fold-in works unchanged.
"""

import dataclasses
import functools
from typing import Any, NamedTuple, Optional

from absl import logging
import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import jraph
import numpy as np
import optax

from fennec_jax import posterior as posterior_lib
from fennec_jax import sharding
from fennec_jax import space as space_lib
from fennec_jax.archi2vec import gnn as gnn_lib
from fennec_jax.space import factorization
from fennec_jax.space import foldin
from fennec_jax.space import normalization as normalization_lib
from fennec_jax.space import training


@dataclasses.dataclass(frozen=True)
class JointConfig:
  """How to fit a joint transfer space.

  Attributes:
    rank: k, latent dimensions.
    prior_precision: prior precision of the free parts a, b (noise units,
      as `SpaceConfig.prior_precision`).
    bias_prior_precision: the same for the free biases.
    head_precision: L2 precision of the side heads' and GNN's weights.
    hidden: 0 = linear side heads; > 0 = one GELU hidden layer this wide.
    use_bias: learn the offset and model/task biases.
    normalization: per-task normalization ('none', 'zscore', 'rank'), as in
      `space.normalize_entries`.
    learning_rate: Adam learning rate.
    max_steps: the most optimizer steps.
    eval_every: steps between held-out evaluations.
    patience: evaluations without improvement before stopping.
    holdout_fraction: observed entries held out for early stopping.
    init_scale: standard deviation of the initial free factors.
    gnn_hidden: GNN node state width.
    gnn_layers: GNN message-passing steps.
    gnn_embed_dim: GNN embedding width fed to the model head.
    seed: root of every random choice.
  """
  rank: int = 2
  prior_precision: float = 3.0
  bias_prior_precision: float = 0.1
  head_precision: float = 0.1
  hidden: int = 0
  use_bias: bool = True
  normalization: str = 'rank'
  learning_rate: float = 0.05
  max_steps: int = 2000
  eval_every: int = 50
  patience: int = 5
  holdout_fraction: float = 0.05
  init_scale: float = 0.1
  gnn_hidden: int = 32
  gnn_layers: int = 2
  gnn_embed_dim: int = 16
  seed: int = 0

  def space_config(self) -> space_lib.SpaceConfig:
    """The equivalent `SpaceConfig` (validation, split, fold-in prior)."""
    return space_lib.SpaceConfig(
        rank=self.rank, prior_precision=self.prior_precision,
        bias_prior_precision=self.bias_prior_precision,
        use_bias=self.use_bias, normalization=self.normalization,
        learning_rate=self.learning_rate, max_steps=self.max_steps,
        eval_every=self.eval_every, patience=self.patience,
        holdout_fraction=self.holdout_fraction, init_scale=self.init_scale,
        seed=self.seed)

  def validate(self) -> None:
    """Raises ValueError naming the bad field."""
    self.space_config().validate()
    if self.head_precision < 0 or not np.isfinite(self.head_precision):
      raise ValueError('JointConfig.head_precision must be finite and >= 0, '
                       f'got {self.head_precision!r}.')
    for name in ('hidden',):
      if getattr(self, name) < 0:
        raise ValueError(f'JointConfig.{name} must be >= 0, got '
                         f'{getattr(self, name)!r}.')
    for name in ('gnn_hidden', 'gnn_layers', 'gnn_embed_dim'):
      if getattr(self, name) < 1:
        raise ValueError(f'JointConfig.{name} must be >= 1, got '
                         f'{getattr(self, name)!r}.')


class SideHead(nn.Module):
  """Side features -> (factor contribution [n, k], bias contribution [n]).

  The last layer starts at zero, so training starts from the plain
  factorization and the side information enters only as far as it helps.
  """
  rank: int
  hidden: int = 0

  @nn.compact
  def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    if self.hidden:
      x = nn.gelu(nn.Dense(self.hidden, name='hidden')(x))
    out = nn.Dense(self.rank + 1, kernel_init=nn.initializers.zeros,
                   name='out')(x)
    return out[:, :self.rank], out[:, self.rank]


class Batch(NamedTuple):
  """Everything a step sees (arrays only; static shapes).

  Attributes:
    rows, cols, values, weights: training entries as padded COO (weight 0
      on padding).
    model_side: [M, p] standardized model side features, or None.
    task_side: [T, q] standardized task side features, or None.
    graphs: padded GraphsTuple whose first M graphs are the models, or None.
  """
  rows: jax.Array
  cols: jax.Array
  values: jax.Array
  weights: jax.Array
  model_side: Optional[jax.Array]
  task_side: Optional[jax.Array]
  graphs: Optional[jraph.GraphsTuple]


class State(NamedTuple):
  """Optimizer state of a fit."""
  params: dict[str, Any]
  opt_state: Any
  step: jax.Array


@dataclasses.dataclass(frozen=True)
class _Spec:
  """Static structure of a fit (hashable; a jit static argument)."""
  config: JointConfig
  vocab_size: int = 0


def _encoder(spec: _Spec) -> gnn_lib.GraphEncoder:
  c = spec.config
  return gnn_lib.GraphEncoder(spec.vocab_size, hidden=c.gnn_hidden,
                              num_layers=c.gnn_layers,
                              embed_dim=c.gnn_embed_dim)


def _model_input(params, spec, side, graphs, n):
  """Concatenated model head input [n, p + e], or None without side info."""
  parts = []
  if side is not None:
    parts.append(side)
  if graphs is not None:
    parts.append(_encoder(spec).apply({'params': params['gnn']}, graphs)[:n])
  return jnp.concatenate(parts, axis=-1) if parts else None


def _head(params, name, spec, x, n):
  if x is None:
    return jnp.zeros((n, spec.config.rank)), jnp.zeros((n,))
  return SideHead(spec.config.rank, spec.config.hidden).apply(
      {'params': params[name]}, x)


def factors(params: dict[str, Any], batch: Batch, spec: _Spec
            ) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
  """(U [M, k], model_bias [M], V [T, k], task_bias [T]) of the fitted rows."""
  m, t = params['model_free'].shape[0], params['task_free'].shape[0]
  du, dc = _head(params, 'model_head', spec,
                 _model_input(params, spec, batch.model_side, batch.graphs,
                              m), m)
  dv, dd = _head(params, 'task_head', spec, batch.task_side, t)
  return (params['model_free'] + du, params['model_bias'] + dc,
          params['task_free'] + dv, params['task_bias'] + dd)


def _predict_entries(params, batch, spec):
  u, c, v, d = factors(params, batch, spec)
  pred = jnp.sum(u[batch.rows] * v[batch.cols], axis=-1)
  if spec.config.use_bias:
    pred = pred + params['offset'] + c[batch.rows] + d[batch.cols]
  return pred


def objective(params: dict[str, Any], batch: Batch, num_train: jax.Array,
              spec: _Spec) -> jax.Array:
  """`space.objective` with side heads: MSE/2 + priors / (2 num_train)."""
  c = spec.config
  err = batch.values - _predict_entries(params, batch, spec)
  data_term = 0.5 * jnp.sum(batch.weights * err ** 2) / jnp.maximum(
      jnp.sum(batch.weights), 1.0)
  reg = c.prior_precision * (jnp.sum(params['model_free'] ** 2)
                             + jnp.sum(params['task_free'] ** 2))
  if c.use_bias:
    reg += c.bias_prior_precision * (jnp.sum(params['model_bias'] ** 2)
                                     + jnp.sum(params['task_bias'] ** 2))
  heads = [params[k] for k in ('model_head', 'task_head', 'gnn')
           if k in params]
  if heads:
    reg += c.head_precision * sum(jnp.sum(x ** 2)
                                  for x in jax.tree.leaves(heads))
  return data_term + 0.5 * reg / num_train


def _optimizer(config: JointConfig) -> optax.GradientTransformation:
  return optax.adam(config.learning_rate)


def step(state: State, batch: Batch, rng: jax.Array, *, num_train: jax.Array,
         spec: _Spec) -> tuple[State, dict[str, jax.Array]]:
  """One full-batch Adam step (pure; jit it with `spec` static).

  Args:
    state: current State.
    batch: training entries and side information.
    rng: per-step key (unused by the full-batch step; kept so minibatch or
      dropout variants keep the signature).
    num_train: number of real training entries.
    spec: static structure.

  Returns:
    (new state, metrics: loss, grad_norm).
  """
  del rng
  loss, grads = jax.value_and_grad(objective)(state.params, batch,
                                              num_train, spec)
  updates, opt_state = _optimizer(spec.config).update(
      grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  return (State(params, opt_state, state.step + 1),
          {'loss': loss, 'grad_norm': training.tree_norm(grads)})


_run_steps = training.multi_step(step, static_argnames=('spec',))


@functools.partial(jax.jit, static_argnames=('spec',))
def _rmse(params, batch, *, spec):
  err = batch.values - _predict_entries(params, batch, spec)
  return jnp.sqrt(jnp.sum(batch.weights * err ** 2)
                  / jnp.maximum(jnp.sum(batch.weights), 1.0))


@functools.partial(jax.jit, static_argnames=('spec',))
def _factors_jit(params, batch, *, spec):
  return factors(params, batch, spec)


@functools.partial(jax.jit, static_argnames=('spec', 'n'))
def _cold_models(params, side, graphs, *, spec, n):
  x = _model_input(params, spec, side, graphs, n)
  return _head(params, 'model_head', spec, x, n)


@flax.struct.dataclass
class JointSpace:
  """A fitted joint space: parameters, side standardization, task maps.

  Attributes:
    params: free parts, biases, offset and head / GNN parameters.
    model_factors: [M, k] combined U of the fitted models.
    model_bias: [M] combined model biases.
    task_factors: [T, k] combined V of the fitted tasks.
    task_bias: [T] combined task biases.
    task_loc, task_scale: [T] map back to raw scores (raw = loc + scale *
      normalized); new tasks use their means.
    model_side_mean, model_side_std: [p] standardization of model side
      features ([0] without).
    task_side_mean, task_side_std: [q] the same for tasks.
    space: the `space.TransferSpace` of the combined factors (fold-in).
    spec: static structure (config, GNN vocabulary size).
  """
  params: dict[str, Any]
  model_factors: jax.Array
  model_bias: jax.Array
  task_factors: jax.Array
  task_bias: jax.Array
  task_loc: jax.Array
  task_scale: jax.Array
  model_side_mean: jax.Array
  model_side_std: jax.Array
  task_side_mean: jax.Array
  task_side_std: jax.Array
  space: space_lib.TransferSpace
  spec: _Spec = flax.struct.field(pytree_node=False, default=_Spec(
      JointConfig()))

  @property
  def config(self) -> JointConfig:
    return self.spec.config

  def to_transfer_space(self) -> space_lib.TransferSpace:
    """The combined factors as a TransferSpace (K-shot `fold_in` etc.)."""
    return self.space

  def new_task_factors(self, task_side: Any) -> tuple[jax.Array, jax.Array]:
    """(V [B, k], task_bias [B]) of unseen tasks from their side info."""
    if 'task_head' not in self.params:
      raise ValueError('this JointSpace was fitted without task_side; new '
                       'tasks cannot be placed from side information.')
    x = _check_side(task_side, self.task_side_mean.shape[0], 'task_side')
    x = (x - self.task_side_mean) / self.task_side_std
    return _head(self.params, 'task_head', self.spec, x, x.shape[0])

  def new_model_factors(self, model_side: Any = None,
                        model_graphs: Optional[jraph.GraphsTuple] = None,
                        num_models: Optional[int] = None
                        ) -> tuple[jax.Array, jax.Array]:
    """(U [N, k], model_bias [N]) of cold-start models (a = 0).

    Args:
      model_side: [N, p] side features, required iff the fit had them.
      model_graphs: padded GraphsTuple whose first N graphs are the models,
        required iff the fit had graphs.
      num_models: N when only graphs are given (default: the number of real
        graphs in the padded batch).

    Returns:
      (U, bias) of the new models.

    Raises:
      ValueError: if the side information does not match the fit.
    """
    has_side = self.model_side_mean.shape[0] > 0
    has_graphs = 'gnn' in self.params
    if (model_side is not None) != has_side or (
        model_graphs is not None) != has_graphs:
      raise ValueError(
          f'the fit used model_side={has_side}, model_graphs={has_graphs}; '
          f'got model_side={model_side is not None}, '
          f'model_graphs={model_graphs is not None}. Pass the same kinds.')
    if not has_side and not has_graphs:
      raise ValueError('this JointSpace was fitted without model side '
                       'information; cold-start models cannot be placed.')
    side = None
    if has_side:
      side = _check_side(model_side, self.model_side_mean.shape[0],
                         'model_side')
      side = (side - self.model_side_mean) / self.model_side_std
      n = side.shape[0]
    else:
      n = (num_models if num_models is not None
           else int(np.asarray(gnn_lib.graph_mask(model_graphs)).sum()))
    return _cold_models(self.params, side, model_graphs, spec=self.spec,
                        n=n)

  def predict(self, task_side: Any = None, model_side: Any = None,
              model_graphs: Optional[jraph.GraphsTuple] = None,
              num_models: Optional[int] = None) -> jax.Array:
    """Raw-score predictions [B, N] for tasks x models.

    Tasks: the new tasks of `task_side` [B, q] (raw scale from the fitted
    tasks' mean loc/scale; the ranking does not depend on it), or all fitted
    tasks (B = T) when None. Models: cold-start models from
    `model_side`/`model_graphs` (N of them), or all fitted models (N = M).
    New tasks scored over the fitted repository go through the space's
    population link (`posterior.apply_link`, same ranking) when
    normalization='rank'.
    """
    if task_side is None:
      v, d = self.task_factors, self.task_bias
      loc, scale = self.task_loc, self.task_scale
    else:
      v, d = self.new_task_factors(task_side)
      loc, scale = jnp.mean(self.task_loc), jnp.mean(self.task_scale)
    if model_side is None and model_graphs is None:
      u, c = self.model_factors, self.model_bias
    else:
      u, c = self.new_model_factors(model_side, model_graphs, num_models)
    norm = v @ u.T
    if self.config.use_bias:
      norm = norm + self.params['offset'] + d[:, None] + c[None, :]
    loc = jnp.reshape(loc, (-1, 1))
    scale = jnp.reshape(scale, (-1, 1))
    pred = loc + scale * norm
    if task_side is not None and model_side is None and model_graphs is None:
      # New tasks over the whole repository: restore a typical task's score
      # shape (normalization='rank'), as space's fold-in does.
      pred = posterior_lib.apply_link(pred, self.space.link)
    return pred


def _check_side(x: Any, width: Optional[int], name: str) -> np.ndarray:
  x = np.asarray(x, np.float32)
  if x.ndim != 2:
    raise ValueError(f'{name} must be 2-D [rows, features], got shape '
                     f'{x.shape}.')
  if width is not None and x.shape[1] != width:
    raise ValueError(f'{name} has {x.shape[1]} features; the fit used '
                     f'{width}.')
  bad = ~np.isfinite(x)
  if bad.any():
    r, c = np.argwhere(bad)[0]
    raise ValueError(f'{name}[{r}, {c}] = {x[r, c]} is not finite; '
                     f'{bad.sum()} such values.')
  return x


def _standardize(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  mean = x.mean(0)
  std = x.std(0)
  return mean, np.where(std > 0, std, 1.0).astype(np.float32)


def _standardized_side(side: Any, num_rows: int, kind: str
                       ) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
  """(standardized side, its column means, stds); (None, [0], [0]) if None."""
  if side is None:
    empty = np.zeros((0,), np.float32)
    return None, empty, empty
  x = _check_side(side, None, f'{kind}_side')
  if x.shape[0] != num_rows:
    raise ValueError(f'{kind}_side has {x.shape[0]} rows; scores has '
                     f'{num_rows} {kind}s.')
  mean, std = _standardize(x)
  return (x - mean) / std, mean, std


def _coo(rows, cols, values):
  """Padded COO arrays (`space`'s buckets, so similar fits share a compile)."""
  n = rows.size
  pad = factorization.padded_size(n, 1) - n
  return (np.pad(rows, (0, pad)).astype(np.int32),
          np.pad(cols, (0, pad)).astype(np.int32),
          np.pad(values, (0, pad)).astype(np.float32),
          np.pad(np.ones(n, np.float32), (0, pad)))


def init_params(num_models: int, num_tasks: int, batch: Batch, spec: _Spec,
                rng: jax.Array, offset: float = 0.0) -> dict[str, Any]:
  """Initial parameters: small Gaussian free factors, zero biases, heads with
  a zero last layer and a freshly initialized GNN."""
  c = spec.config
  ka, kb, kg, km, kt = jax.random.split(rng, 5)
  params = {
      'model_free': c.init_scale * jax.random.normal(ka, (num_models,
                                                          c.rank)),
      'task_free': c.init_scale * jax.random.normal(kb, (num_tasks, c.rank)),
      'model_bias': jnp.zeros((num_models,)),
      'task_bias': jnp.zeros((num_tasks,)),
      'offset': jnp.asarray(offset if c.use_bias else 0.0, jnp.float32),
  }
  head = SideHead(c.rank, c.hidden)
  if batch.graphs is not None:
    params['gnn'] = _encoder(spec).init(kg, batch.graphs)['params']
  x = _model_input(params, spec, batch.model_side, batch.graphs, num_models)
  if x is not None:
    params['model_head'] = head.init(km, x)['params']
  if batch.task_side is not None:
    params['task_head'] = head.init(kt, batch.task_side)['params']
  return params


def fit_joint(scores: Any, mask: Any = None, *,
              model_side: Any = None, task_side: Any = None,
              model_graphs: Optional[jraph.GraphsTuple] = None,
              vocab_size: Optional[int] = None,
              config: JointConfig = JointConfig(),
              return_info: bool = False):
  """Fits model and task factors jointly with their side information.

  Args:
    scores: [M, T] raw scores (anything where not observed).
    mask: [M, T] bool observed entries (default: finite scores).
    model_side: [M, p] model features (metadata, embeddings) or None.
    task_side: [T, q] task features (e.g. proxy embeddings) or None.
    model_graphs: padded GraphsTuple (`archi2vec.graphs.pad_graphs`) whose
      first M graphs are the models' architectures, or None.
    vocab_size: op vocabulary size of the graphs (`len(OpVocab)`); default
      the largest op id + 1.
    config: JointConfig.
    return_info: also return a `space.FitInfo`.

  Returns:
    JointSpace (and FitInfo when return_info).

  Raises:
    ValueError: bad shapes, non-finite values, a task with no observed
      score, graphs that do not cover the M models, or a bad config.
  """
  config.validate()
  scfg = config.space_config()
  scores, mask = factorization.check_dense(scores, mask)
  num_models, num_tasks = scores.shape
  rows, cols = np.nonzero(mask)
  rows, cols, raw = factorization.check_entries(
      rows, cols, scores[rows, cols], scores.shape, scfg)
  values, loc, scale = normalization_lib.normalize_entries(
      cols, raw, num_tasks, config.normalization)
  root = jax.random.key(config.seed)
  held = factorization.holdout_split(rows, cols, scores.shape, scfg,
                                     jax.random.fold_in(root, 0))

  ms, ms_mean, ms_std = _standardized_side(model_side, num_models, 'model')
  ts, ts_mean, ts_std = _standardized_side(task_side, num_tasks, 'task')
  graphs = None
  vs = 0
  if model_graphs is not None:
    real = int(np.asarray(gnn_lib.graph_mask(model_graphs)).sum())
    if real != num_models:
      raise ValueError(f'model_graphs has {real} real graphs; scores has '
                       f'{num_models} models (pad with graphs.pad_graphs, '
                       'one graph per model, in row order).')
    graphs = jax.tree.map(jnp.asarray, model_graphs)
    vs = int(vocab_size if vocab_size is not None
             else np.asarray(model_graphs.nodes['op']).max() + 1)
  spec = _Spec(config, vs)

  # A one-device mesh: every array is whole on it.
  mesh = sharding.make_mesh(1)

  def make_batch(sel):
    coo = _coo(rows[sel], cols[sel], values[sel])
    return sharding.put_replicated(Batch(*coo, ms, ts, graphs), mesh)

  train = make_batch(~held)
  num_train, num_held = int((~held).sum()), int(held.sum())
  heldout = make_batch(held) if num_held else train
  logging.info('joint space: %d models x %d tasks, %d observed (%d train, %d '
               'held out), rank %d, model side %s, task side %s, graphs %s.',
               num_models, num_tasks, rows.size, num_train, num_held,
               config.rank, None if ms is None else ms.shape[1],
               None if ts is None else ts.shape[1], graphs is not None)

  offset = float(values[~held].mean()) if config.use_bias else 0.0
  params = init_params(num_models, num_tasks, train, spec,
                       jax.random.fold_in(root, 1), offset)
  state = sharding.put_replicated(
      State(params, _optimizer(config).init(params),
            jnp.zeros((), jnp.int32)), mesh)
  step_rng = jax.random.fold_in(root, 2)
  n_train = jnp.asarray(num_train, jnp.float32)
  result = training.train(
      state,
      lambda st, n: _run_steps(st, train, step_rng, num_train=n_train,
                               spec=spec, num_steps=n),
      lambda p: _rmse(p, heldout, spec=spec),
      training.LoopConfig(config.max_steps, config.eval_every,
                          config.patience, early_stopping=bool(num_held)),
      name='joint space', hint=f'lower learning_rate={config.learning_rate}')
  params = result.params

  u, c, v, d = (np.asarray(a) for a in _factors_jit(params, train,
                                                    spec=spec))
  space = _transfer_space(u, c, v, d, float(params['offset']), loc, scale,
                          cols, raw, heldout if num_held else train,
                          scfg)
  joint = JointSpace(
      params=params, model_factors=jnp.asarray(u), model_bias=jnp.asarray(c),
      task_factors=jnp.asarray(v), task_bias=jnp.asarray(d),
      task_loc=jnp.asarray(loc, jnp.float32),
      task_scale=jnp.asarray(scale, jnp.float32),
      model_side_mean=jnp.asarray(ms_mean), model_side_std=jnp.asarray(
          ms_std), task_side_mean=jnp.asarray(ts_mean),
      task_side_std=jnp.asarray(ts_std), space=space, spec=spec)
  if not return_info:
    return joint
  info = space_lib.FitInfo(
      best_step=result.best_step, steps=result.steps,
      eval_steps=result.eval_steps, eval_rmse=result.eval_losses,
      train_loss=result.train_losses, num_train=num_train,
      num_heldout=num_held, heldout_rows=rows[held], heldout_cols=cols[held])
  return joint, info


def _transfer_space(u, c, v, d, offset, loc, scale, cols, raw, resid, scfg):
  """A `space.TransferSpace` of combined factors, with `space.fit`'s fold-in
  prior (fitted task weight vectors), noise variance and link."""
  n = np.asarray(resid.weights)
  r, t = np.asarray(resid.rows), np.asarray(resid.cols)
  pred = np.sum(u[r] * v[t], -1)
  if scfg.use_bias:
    pred = pred + offset + c[r] + d[t]
  raw_resid = scale[t] * (np.asarray(resid.values) - pred)
  noise_var = float(np.sum(n * raw_resid ** 2) / max(n.sum(), 1.0))
  link = np.zeros((0,))
  if scfg.normalization == 'rank':
    link = normalization_lib.population_link(cols, raw, loc, scale)
  task_w = np.asarray(foldin.task_weights(
      jnp.asarray(v), jnp.asarray(d), jnp.asarray(offset, jnp.float32),
      jnp.asarray(loc, jnp.float32), jnp.asarray(scale, jnp.float32)),
                      np.float64)
  cov = (np.cov(task_w, rowvar=False, ddof=1) if task_w.shape[0] > 1
         else np.zeros((task_w.shape[1],) * 2))
  cov = ((1 - scfg.prior_shrinkage) * cov
         + scfg.prior_shrinkage * np.diag(np.diag(cov)))
  f32 = lambda a: jnp.asarray(a, jnp.float32)
  return space_lib.TransferSpace(
      model_factors=f32(u), task_factors=f32(v), model_bias=f32(c),
      task_bias=f32(d), offset=f32(offset), task_loc=f32(loc),
      task_scale=f32(scale), prior_mean=f32(task_w.mean(0)),
      prior_cov=f32(cov), noise_var=f32(noise_var), link=f32(link),
      config=scfg)
