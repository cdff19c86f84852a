"""The offline benchmark builder: pretrain a zoo, fine-tune it on every target.

Stages (each resumable; all state lives in one work directory):

1. data: every task is prepared as a tfds array_record data set under
   `<workdir>/tfds` (`fennec_jax.data.builders.offline_tasks`) and read back.
2. zoo: every architecture's models are pretrained together under `vmap`
   (one per source task), then saved with orbax to `<workdir>/zoo/<model>`
   plus a `<model>.json` written last (its presence marks the model done).
3. proxy: one wider generalist pretrained on all single-domain sources.
4. fine-tune: one fixed recipe (new zero-padded head, AdamW + warmup-cosine,
   fixed steps and batch, same batches for every model) per (model, target);
   test accuracy is appended to `<workdir>/results.csv`, one fsync'ed line
   per pair, so a kill at any moment loses no finished pair and a restart
   skips them; a torn last line is repaired with a log line.

Static shapes everywhere: heads are padded to `max_classes` with masked
logits, train sets are padded to a fixed length with a valid count, so each
architecture compiles once per stage. Each training step is one jitted
(vmapped) call with donated buffers.
"""

import dataclasses
import functools
import hashlib
import json
import os
import shutil
import time
from typing import Any

from absl import logging
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp

from fennec_jax import models as models_lib
from fennec_jax.benchmarks.offline import zoo as zoo_lib
from fennec_jax.data import tasks as tasks_lib

RESULTS_FILE = 'results.csv'
RESULTS_HEADER = 'model,task,score,seconds'
CONFIG_FILE = 'config.json'

def default_config() -> ml_collections.ConfigDict:
  """The full offline benchmark (26 targets x 30 models + proxy)."""
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.targets = tasks_lib.list_tasks(role='target')
  c.sources = tasks_lib.list_tasks(role='source')
  c.archs = [list(a) for a in zoo_lib.ARCHS]
  c.models_per_arch = 3
  c.source_sizes = (2000, 300)  # (train, test) of every source task.
  c.target_sizes = None  # None: each task's own sizes.
  c.data = 'tfds'  # 'tfds' (array_record via the builders) or 'direct'.
  # Train the models of one architecture together under vmap. Off on CPU:
  # measured (experiments/benchmarks/offline_build_speed.py --steps=10, CPU s
  # of fine-tuning 3 models, vmap vs one by one) vmap is slower on XLA:CPU:
  # cnn_s 0.79 vs 0.30, resnet_s 5.37 vs 1.45, vit_s 1.01 vs 0.62, mixer_s
  # 0.43 vs 0.31, mlp_l 0.06 vs 0.06. Try it on accelerators.
  c.vmap = False
  c.num_devices = 1  # Data-parallel mesh size (batch sharded over 'data').
  # Sized for a shared 2-core CPU (the full build must stay under an hour).
  c.pretrain = dict(steps=150, batch_size=64, lr=2e-3, weight_decay=1e-4,
                    warmup=15, max_classes=64)
  c.proxy = dict(arch='offline_proxy_resnet', sources=tasks_lib.proxy_sources(),
                 steps=400, batch_size=64, lr=2e-3, weight_decay=1e-4,
                 warmup=20, max_classes=256)
  c.finetune = dict(steps=30, batch_size=32, lr=1e-3, weight_decay=1e-4,
                    warmup=3, max_classes=64, max_train=1500, eval_chunk=250)
  return c


def tiny_config() -> ml_collections.ConfigDict:
  """Seconds on a CPU: 2 archs x 2 models x 2 procedural targets."""
  c = default_config()
  c.targets = ['shape_color', 'count_parity']
  c.sources = ['src_shape_kind4', 'src_texture_kind4', 'src_count_big',
               'src_shape_rotation']
  c.archs = [['offline_mlp_s', 'mlp', 's'], ['offline_cnn_s', 'cnn', 's']]
  c.models_per_arch = 2
  c.source_sizes = (64, 32)
  c.target_sizes = (64, 40)
  c.pretrain.update(steps=4, batch_size=16, warmup=1)
  c.proxy.update(arch='offline_mlp_s', sources=['src_shape_kind4',
                                                'src_count_big'],
                 steps=4, batch_size=16, warmup=1)
  c.finetune.update(steps=4, batch_size=16, warmup=1, max_train=64,
                    eval_chunk=20)
  return c


def _mesh(num_devices: int) -> jax.sharding.Mesh:
  devices = jax.devices()
  if num_devices > len(devices):
    raise ValueError(f'num_devices={num_devices} but only {len(devices)} '
                     'devices are visible.')
  return jax.make_mesh((num_devices,), ('data',),
                       axis_types=(jax.sharding.AxisType.Auto,),
                       devices=devices[:num_devices])


def _apply(module, variables, x, train):
  """Returns (logits, new non-param collections) for any set of collections."""
  others = [k for k in variables if k != 'params']
  if train and others:
    return module.apply(variables, x, train=True, mutable=others)
  return module.apply(variables, x, train=train), {
      k: variables[k] for k in others}


def _make_trainer(module, steps, batch_size, lr, weight_decay, warmup, mesh,
                  vmapped, shared_data):
  """`train(variables, x, y, n, class_mask, key) -> (variables, losses)`.

  A host loop over one jitted step (params/optimizer donated). Not
  `lax.scan`: XLA:CPU runs convolutions inside a while loop ~8x slower than
  as separate calls (measured, 0.09 vs 0.011 s per step of offline_cnn_s).

  Args:
    module: the `Classifier`.
    steps: optimizer steps.
    batch_size: examples per step, drawn with replacement from the first `n`
      rows of `x` by `fold_in(key, step)`.
    lr: peak learning rate of the warmup-cosine schedule.
    weight_decay: AdamW weight decay.
    warmup: warmup steps.
    mesh: the 'data' mesh; each batch is sharded over it.
    vmapped: variables carry a leading model axis; the step is vmapped.
    shared_data: with `vmapped`, all models see the same batches (fine-tune)
      rather than one data set each (pretraining).

  Returns:
    The train function.
  """
  schedule = optax.warmup_cosine_decay_schedule(0.0, lr, warmup, steps)
  tx = optax.adamw(schedule, weight_decay=weight_decay)
  batch_sharding = jax.sharding.NamedSharding(mesh, jax.P('data'))

  def step(params, state, opt, x, y, n, class_mask, key, i):
    idx = jax.random.randint(jax.random.fold_in(key, i), (batch_size,), 0, n)
    xb = jax.lax.with_sharding_constraint(zoo_lib.preprocess(x[idx]), batch_sharding)
    yb = y[idx]

    def loss_fn(p):
      logits, new_state = _apply(module, {'params': p, **state}, xb, True)
      logits = jnp.where(class_mask, logits, -1e9)
      loss = optax.softmax_cross_entropy_with_integer_labels(logits, yb)
      return loss.mean(), new_state

    (loss, state), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt = tx.update(grads, opt, params)
    return optax.apply_updates(params, updates), state, opt, loss

  init_opt = tx.init
  if vmapped:
    d = None if shared_data else 0
    step = jax.vmap(step, in_axes=(0, 0, 0, d, d, d, d, None, None))
    init_opt = jax.vmap(init_opt)
  step = jax.jit(step, donate_argnums=(0, 1, 2))
  init_opt = jax.jit(init_opt)

  def train(variables, x, y, n, class_mask, key):
    # Copies: the step donates its buffers, the caller's arrays stay valid.
    variables = jax.tree.map(jnp.array, variables)
    params = variables['params']
    state = {k: v for k, v in variables.items() if k != 'params'}
    x, y, n, class_mask = (jnp.asarray(a) for a in (x, y, n, class_mask))
    with jax.set_mesh(mesh):
      opt = init_opt(params)
      losses = []
      for i in range(steps):
        params, state, opt, loss = step(params, state, opt, x, y, n,
                                        class_mask, key, i)
        losses.append(loss)
    return {'params': params, **state}, np.stack(jax.device_get(losses),
                                                  axis=-1)

  return train


def _make_evaluator(module, chunk, vmapped, shared_data):
  """`evaluate(variables, x, y, n, class_mask) -> accuracy` (per model).

  Host loop over chunks of `chunk` rows of the padded test set; only the
  first `n` rows count; logits of padded classes are masked out.
  """
  def correct(variables, xc, yc, valid, class_mask):
    logits = _apply(module, variables, zoo_lib.preprocess(xc), False)[0]
    pred = jnp.argmax(jnp.where(class_mask, logits, -jnp.inf), axis=-1)
    return jnp.sum((pred == yc) & valid)

  if vmapped:
    d = None if shared_data else 0
    correct = jax.vmap(correct, in_axes=(0, d, d, d, d))
  correct = jax.jit(correct)

  def evaluate(variables, x, y, n, class_mask):
    n = np.asarray(n)
    axis = x.ndim - 4  # 1 when each model has its own test set.
    total = 0
    for start in range(0, x.shape[axis], chunk):
      sl = (slice(None),) * axis + (slice(start, start + chunk),)
      rows = np.arange(start, start + chunk)
      valid = rows < (n[..., None] if n.ndim else n)
      total = total + np.asarray(correct(variables, x[sl], y[sl], valid,
                                         class_mask))
    return total / n

  return evaluate


def _pad(x: np.ndarray, length: int) -> np.ndarray:
  if len(x) > length:
    return x[:length]
  pad = np.zeros((length - len(x), *x.shape[1:]), x.dtype)
  return np.concatenate([x, pad])


def _class_mask(num_classes: int, max_classes: int) -> np.ndarray:
  if num_classes > max_classes:
    raise ValueError(f'A task with {num_classes} classes exceeds the padded '
                     f'head of max_classes={max_classes}; raise it.')
  return np.arange(max_classes) < num_classes


# ------------------------------------------------------------------- the data


class _Data:
  """Loads task splits (tfds or direct) with the config's sizes, cached."""

  def __init__(self, config: ml_collections.ConfigDict, workdir: str):
    self.config = config
    self.tfds_dir = os.path.join(workdir, 'tfds')
    self._cache: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}

  def sizes(self, task: str) -> tuple[int, int]:
    spec = tasks_lib.get_task(task)
    sizes = (self.config.source_sizes if spec.role == 'source'
             else self.config.target_sizes)
    return tuple(sizes) if sizes else (spec.train_size, spec.test_size)

  def get(self, task: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    key = (task, split)
    if key not in self._cache:
      train, test = self.sizes(task)
      if self.config.data == 'tfds':
        from fennec_jax.data.builders import offline_tasks  # pylint: disable=g-import-not-at-top
        self._cache[key] = offline_tasks.load_arrays(task, split,
                                                     self.tfds_dir, train, test)
      elif self.config.data == 'direct':
        self._cache[key] = tasks_lib.generate(
            task, split, train if split == 'train' else test)
      else:
        raise ValueError(f"config.data={self.config.data!r}; valid: 'tfds', "
                         "'direct'.")
    return self._cache[key]

  def drop(self, task: str) -> None:
    for split in tasks_lib.SPLITS:
      self._cache.pop((task, split), None)


# ------------------------------------------------------------ work directory


def _config_dict(config: ml_collections.ConfigDict) -> dict[str, Any]:
  d = json.loads(json.dumps(config.to_dict(), sort_keys=True))
  # How it runs (launcher, vmap or not, devices) does not change the work.
  for key in ('runner', 'vmap', 'num_devices'):
    d.pop(key, None)
  return d


def _atomic_write(path: str, text: str) -> None:
  tmp = f'{path}.tmp.{os.getpid()}'
  with open(tmp, 'w') as f:
    f.write(text)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


def check_workdir(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Creates `workdir` for `config`, or checks it was made by the same config.

  Raises:
    ValueError: the directory holds a different configuration's work.
  """
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, CONFIG_FILE)
  want = _config_dict(config)
  if not os.path.exists(path):
    _atomic_write(path, json.dumps(want, indent=1, sort_keys=True))
    return
  try:
    with open(path) as f:
      have = json.load(f)
  except json.JSONDecodeError as e:
    raise ValueError(f'{path} is not valid JSON ({e}); this work directory is '
                     'damaged: use a fresh --workdir.') from None
  if isinstance(have, dict):
    for key in ('runner', 'vmap', 'num_devices'):
      have.pop(key, None)
  if have != want:
    keys = sorted(k for k in set(have) | set(want)
                  if have.get(k) != want.get(k))
    raise ValueError(
        f'Work directory {workdir} was created by a different configuration '
        f'(differs in: {", ".join(keys)}). Resume it with its own config '
        f'(saved in {path}) or pass a fresh --workdir; its finished results '
        f'stay in {os.path.join(workdir, RESULTS_FILE)}.')


def read_results(path: str, repair: bool = True) -> dict[tuple[str, str],
                                                        float]:
  """Reads the results file; repairs a torn last line (logged).

  Args:
    path: the results CSV (`model,task,score,seconds`).
    repair: truncate an unterminated last line (a kill mid-write).

  Returns:
    `{(model, task): score}`.

  Raises:
    ValueError: a bad header, a malformed complete row or a duplicate pair,
      naming the file and row.
  """
  if not os.path.exists(path):
    return {}
  with open(path, 'rb') as f:
    data = f.read()
  if data and not data.endswith(b'\n'):
    cut = data.rfind(b'\n') + 1
    logging.warning('%s: last line %r is incomplete (interrupted write); '
                    'dropping it, that pair will be redone.', path, data[cut:])
    if repair:
      with open(path, 'r+b') as f:
        f.truncate(cut)
        f.flush()
        os.fsync(f.fileno())
    data = data[:cut]
  lines = data.decode('utf-8', errors='replace').splitlines()
  if not lines:
    return {}
  if lines[0] != RESULTS_HEADER:
    raise ValueError(f'{path}: header {lines[0]!r} is not {RESULTS_HEADER!r}; '
                     'this is not a results file of this builder.')
  out = {}
  for row, line in enumerate(lines[1:], start=2):
    parts = line.split(',')
    try:
      if len(parts) != 4:
        raise ValueError('expected 4 fields')
      model, task, score = parts[0], parts[1], float(parts[2])
      float(parts[3])
      if not 0.0 <= score <= 1.0:
        raise ValueError(f'score {score} outside [0, 1]')
    except ValueError as e:
      raise ValueError(
          f'{path}, row {row}: {line!r} is malformed ({e}). Fix or delete '
          'that row (every other finished pair is kept), then restart.'
      ) from None
    if (model, task) in out:
      raise ValueError(f'{path}, row {row}: pair ({model}, {task}) appears '
                       'twice; delete one of the rows, then restart.')
    out[(model, task)] = score
  return out


def _append_result(path: str, model: str, task: str, score: float,
                   seconds: float) -> None:
  """Appends one full line and fsyncs it: a kill leaves at most a torn line."""
  new = not os.path.exists(path) or os.path.getsize(path) == 0
  line = f'{model},{task},{score:.6f},{seconds:.3f}\n'
  with open(path, 'a') as f:
    f.write((RESULTS_HEADER + '\n' if new else '') + line)
    f.flush()
    os.fsync(f.fileno())


class _Progress:
  """Logs a text progress bar with ETA (absl logging)."""

  def __init__(self, what: str, total: int, done: int):
    self.what, self.total, self.start_done = what, total, done
    self.done, self.t0 = done, time.time()

  def update(self, n: int = 1) -> None:
    self.done += n
    el = time.time() - self.t0
    rate = (self.done - self.start_done) / max(el, 1e-9)
    eta = (self.total - self.done) / rate if rate > 0 else float('inf')
    filled = int(30 * self.done / max(self.total, 1))
    logging.info('%s [%s%s] %d/%d elapsed %.0fs ETA %.0fs', self.what,
                 '#' * filled, '.' * (30 - filled), self.done, self.total, el,
                 eta)


# --------------------------------------------------------------- checkpoints


def _abstract_variables(arch: str, num_outputs: int) -> Any:
  module = zoo_lib.make_classifier(arch, num_outputs)
  x = jax.ShapeDtypeStruct((1, *tasks_lib.IMAGE_SHAPE), jnp.float32)
  return jax.eval_shape(module.init, jax.random.key(0), x)


def _model_paths(workdir: str, model_id: str) -> tuple[str, str]:
  return (os.path.join(workdir, 'zoo', model_id),
          os.path.join(workdir, 'zoo', model_id + '.json'))


def load_pretrained(workdir: str, model_id: str) -> tuple[Any, dict[str, Any]]:
  """Restores a pretrained model's variables (orbax) and its metadata."""
  ckpt, meta_path = _model_paths(workdir, model_id)
  if not os.path.exists(meta_path):
    raise ValueError(f'{model_id} is not pretrained in {workdir} yet '
                     f'({meta_path} missing); run the build first.')
  with open(meta_path) as f:
    meta = json.load(f)
  target = jax.tree.map(ocp.utils.to_shape_dtype_struct,
                        _abstract_variables(meta['arch'],
                                            meta['head_classes']))
  variables = ocp.StandardCheckpointer().restore(ckpt, target)
  return variables, meta


def _save_pretrained(workdir: str, model_id: str, variables: Any,
                     meta: dict[str, Any]) -> None:
  ckpt, meta_path = _model_paths(workdir, model_id)
  if os.path.exists(ckpt):  # From a run killed between the two writes.
    shutil.rmtree(ckpt)
  ckptr = ocp.StandardCheckpointer()
  ckptr.save(ckpt, jax.device_get(variables))
  ckptr.wait_until_finished()
  _atomic_write(meta_path, json.dumps(meta, indent=1, sort_keys=True))


# ------------------------------------------------------------------ stages


def _stack(trees):
  return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def _unstack(tree, n):
  return [jax.tree.map(lambda x, i=i: x[i], tree) for i in range(n)]


def _source_data(data: _Data, sources: list[str]):
  """Train/test arrays of a source or of a list of sources (a mixture)."""
  xs, ys, xt, yt, offset = [], [], [], [], 0
  for s in sources:
    x, y = data.get(s, 'train')
    x2, y2 = data.get(s, 'test')
    xs.append(x)
    ys.append(y + offset)
    xt.append(x2)
    yt.append(y2 + offset)
    offset += tasks_lib.get_task(s).num_classes
  return (np.concatenate(xs), np.concatenate(ys), np.concatenate(xt),
          np.concatenate(yt), offset)


def _pretrain_group(config, mesh, arch, members, sources_of, data, key):
  """Pretrains `members` of one architecture (vmapped); returns vars, accs."""
  pc = config.pretrain if sources_of is None else config.proxy
  max_classes = pc.max_classes
  module = zoo_lib.make_classifier(arch, max_classes)
  arrays = [_source_data(data, [m.source] if sources_of is None
                         else sources_of) for m in members]
  n_train = max(len(a[0]) for a in arrays)
  n_test = max(len(a[2]) for a in arrays)
  chunk = min(config.finetune.eval_chunk, n_test)
  n_test = -(-n_test // chunk) * chunk
  x = np.stack([_pad(a[0], n_train) for a in arrays])
  y = np.stack([_pad(a[1], n_train) for a in arrays])
  xt = np.stack([_pad(a[2], n_test) for a in arrays])
  yt = np.stack([_pad(a[3], n_test) for a in arrays])
  n = np.array([len(a[0]) for a in arrays], np.int32)
  nt = np.array([len(a[2]) for a in arrays], np.int32)
  mask = np.stack([_class_mask(a[4], max_classes) for a in arrays])
  dummy = jnp.zeros((1, *tasks_lib.IMAGE_SHAPE), jnp.float32)
  inits = [module.init(jax.random.fold_in(key, i), dummy)
           for i in range(len(members))]
  train_key = jax.random.fold_in(key, 10**6)
  vmapped = config.vmap and len(members) > 1
  train = _make_trainer(module, pc.steps, pc.batch_size, pc.lr,
                        pc.weight_decay, pc.warmup, mesh, vmapped, False)
  evaluate = _make_evaluator(module, chunk, vmapped, False)
  if vmapped:
    variables, losses = train(_stack(inits), x, y, n, mask, train_key)
    accs = evaluate(variables, xt, yt, nt, mask)
    return _unstack(variables, len(members)), losses, accs
  outs, losses, accs = [], [], []
  for i, v in enumerate(inits):
    v, loss = train(v, x[i], y[i], n[i], mask[i], train_key)
    accs.append(evaluate(v, xt[i], yt[i], nt[i], mask[i]))
    outs.append(v)
    losses.append(loss)
  return outs, np.stack(losses), np.array(accs)


def pretrain_zoo(config: ml_collections.ConfigDict, workdir: str,
                 data: _Data | None = None,
                 which: str = 'all') -> list[zoo_lib.ZooModel]:
  """Stages 2 and 3: pretrains the zoo models and/or the proxy not yet done.

  Args:
    config: the build config.
    workdir: the work directory.
    data: task data cache.
    which: 'zoo', 'proxy' or 'all'.

  Returns:
    The zoo plan.
  """
  data = data or _Data(config, workdir)
  mesh = _mesh(config.num_devices)
  root = jax.random.key(config.seed)
  plan = zoo_lib.zoo_plan(config)
  archs = list(dict.fromkeys(m.arch for m in plan))
  proxy = zoo_lib.ZooModel('proxy', config.proxy.arch, 'proxy', 'xl',
                   '+'.join(config.proxy.sources))
  groups = [(a, [m for m in plan if m.arch == a], None) for a in archs]
  groups.append((proxy.arch, [proxy], list(config.proxy.sources)))
  if which not in ('zoo', 'proxy', 'all'):
    raise ValueError(f"which={which!r}; valid: 'zoo', 'proxy', 'all'.")
  total = len(plan) + 1
  done = sum(os.path.exists(_model_paths(workdir, m.model_id)[1])
             for m in plan + [proxy])
  progress = _Progress('pretrain', total, done)
  for g, (arch, members, sources) in enumerate(groups):
    if (which == 'zoo' and sources) or (which == 'proxy' and not sources):
      continue
    todo = [m for m in members
            if not os.path.exists(_model_paths(workdir, m.model_id)[1])]
    if not todo:
      continue
    t0 = time.time()
    variables, losses, accs = _pretrain_group(
        config, mesh, arch, todo, sources, data,
        jax.random.fold_in(jax.random.fold_in(root, 1), g))
    seconds = (time.time() - t0) / len(todo)
    for m, v, loss, acc in zip(todo, variables, losses, accs):
      head = (config.pretrain if sources is None else config.proxy).max_classes
      srcs = sources or [m.source]
      meta = dict(model_id=m.model_id, arch=m.arch, family=m.family,
                  size=m.size, source=m.source, head_classes=head,
                  source_classes=sum(tasks_lib.get_task(s).num_classes
                                     for s in srcs),
                  source_domains=sorted({d for s in srcs
                                         for d in tasks_lib.get_task(s)
                                         .domains}),
                  source_accuracy=float(acc),
                  final_loss=float(np.mean(loss[-10:])),
                  num_params=int(sum(np.size(p) for p in jax.tree.leaves(
                      v['params']['backbone']))),
                  seconds=seconds)
      _save_pretrained(workdir, m.model_id, v, meta)
      logging.info('pretrained %s on %s: source acc %.3f, loss %.3f', m.model_id,
                   m.source[:60], acc, meta['final_loss'])
      progress.update()
  return plan


def finetune_all(config: ml_collections.ConfigDict, workdir: str,
                 data: _Data | None = None) -> dict[tuple[str, str], float]:
  """Stage 4: fine-tunes every (zoo model, target) pair not yet recorded."""
  data = data or _Data(config, workdir)
  mesh = _mesh(config.num_devices)
  fc = config.finetune
  plan = zoo_lib.zoo_plan(config)
  path = os.path.join(workdir, RESULTS_FILE)
  results = read_results(path)
  ids = {m.model_id for m in plan}
  for model, task in results:
    if model not in ids or task not in config.targets:
      raise ValueError(f'{path} holds pair ({model}, {task}) that is not in '
                       'this configuration; use this config\'s own workdir.')
  total = len(plan) * len(config.targets)
  progress = _Progress('fine-tune', total, len(results))
  root = jax.random.fold_in(jax.random.key(config.seed), 2)
  archs = list(dict.fromkeys(m.arch for m in plan))
  fns: dict[tuple[str, int], Any] = {}
  # Domains interleaved, so a partial build already covers every domain.
  by_domain: dict[str, list[str]] = {}
  for task in config.targets:
    by_domain.setdefault(tasks_lib.get_task(task).domain, []).append(task)
  lists, order = list(by_domain.values()), []
  while any(lists):
    order += [lst.pop(0) for lst in lists if lst]
  for task in order:
    t = list(config.targets).index(task)
    spec = tasks_lib.get_task(task)
    todo_all = [m for m in plan if (m.model_id, task) not in results]
    if not todo_all:
      continue
    x, y = data.get(task, 'train')
    xt, yt = data.get(task, 'test')
    chunk = min(fc.eval_chunk, len(yt))
    n_test = -(-len(yt) // chunk) * chunk
    args = (_pad(x, fc.max_train), _pad(y, fc.max_train),
            np.int32(min(len(y), fc.max_train)),
            _class_mask(spec.num_classes, fc.max_classes),
            _pad(xt, n_test), _pad(yt, n_test), np.int32(len(yt)))
    task_key = jax.random.fold_in(root, t)
    for arch in archs:
      todo = [m for m in todo_all if m.arch == arch]
      if not todo:
        continue
      t0 = time.time()
      backbones = []
      for m in todo:
        v, _ = load_pretrained(workdir, m.model_id)
        backbones.append({k: c['backbone'] for k, c in v.items()})
      key = (arch, len(todo) if config.vmap else 1, n_test)
      if key not in fns:
        fns[key] = _finetune_fn(config, mesh, arch, chunk, len(todo))
      accs = fns[key](backbones, task_key, *args)
      seconds = (time.time() - t0) / len(todo)
      for m, acc in zip(todo, accs):
        _append_result(path, m.model_id, task, float(acc), seconds)
        results[(m.model_id, task)] = float(acc)
        progress.update()
      logging.info('%s on %s: %s', arch, task,
                   ' '.join(f'{a:.3f}' for a in accs))
    data.drop(task)
  return results


def _finetune_fn(config, mesh, arch, chunk, group):
  """Returns `f(backbones, key, *task_arrays) -> accuracies` for one arch."""
  del group  # Shapes follow the inputs; kept for the compile-cache key.
  fc = config.finetune
  module = zoo_lib.make_classifier(arch, fc.max_classes)
  dummy = jnp.zeros((1, *tasks_lib.IMAGE_SHAPE), jnp.float32)
  init = jax.jit(module.init)
  trainers = {v: _make_trainer(module, fc.steps, fc.batch_size, fc.lr,
                               fc.weight_decay, fc.warmup, mesh, v, True)
              for v in (True, False)}
  evaluators = {v: _make_evaluator(module, chunk, v, True)
                for v in (True, False)}

  def run(backbones, key, x, y, n, mask, xt, yt, nt):
    # The same new head (from the task key) for every model.
    head = init(jax.random.fold_in(key, 0), dummy)
    head = {k: {kk: vv for kk, vv in c.items() if kk != 'backbone'}
            for k, c in head.items()}
    train_key = jax.random.fold_in(key, 1)
    members = [{k: {**head.get(k, {}), 'backbone': b[k]} for k in b}
               for b in backbones]
    if config.vmap and len(members) > 1:
      v, _ = trainers[True](_stack(members), x, y, n, mask, train_key)
      return np.asarray(evaluators[True](v, xt, yt, nt, mask))
    accs = []
    for m in members:
      v, _ = trainers[False](m, x, y, n, mask, train_key)
      accs.append(evaluators[False](v, xt, yt, nt, mask))
    return np.array(accs, np.float64)

  return run


def build(config: ml_collections.ConfigDict,
          workdir: str) -> dict[tuple[str, str], float]:
  """Runs (or resumes) every stage; returns `{(model, task): accuracy}`.

  Args:
    config: `default_config()`, `tiny_config()` or an experiments config.
    workdir: where all state lives; rerun with the same config to resume.

  Returns:
    All fine-tuning results.

  Raises:
    ValueError: unknown task/model names, or a workdir of another config.
    fennec_jax.data.tasks.MissingSystemDataError: Fashion-MNIST missing.
  """
  workdir = os.path.abspath(workdir)
  for name in list(config.targets) + list(config.sources) + list(
      config.proxy.sources):
    tasks_lib.get_task(name)  # Unknown names fail before any work.
  for name in config.targets:
    if tasks_lib.get_task(name).role != 'target':
      raise ValueError(f'{name!r} in config.targets is a source task; valid '
                       f'targets: {tasks_lib.list_tasks(role="target")}')
  zoo_lib.zoo_plan(config)
  check_workdir(config, workdir)
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  tfds.disable_progress_bar()
  t0 = time.time()
  data = _Data(config, workdir)
  # The proxy last: the ground truth (zoo x targets) does not need it.
  pretrain_zoo(config, workdir, data, which='zoo')
  t1 = time.time()
  results = finetune_all(config, workdir, data)
  pretrain_zoo(config, workdir, data, which='proxy')
  logging.info('build done: pretrain %.0fs, fine-tune %.0fs (this run)',
               t1 - t0, time.time() - t1)
  timing_path = os.path.join(workdir, 'timing.jsonl')
  with open(timing_path, 'a') as f:
    f.write(json.dumps(dict(pretrain_s=t1 - t0, finetune_s=time.time() - t1,
                            finished=time.time())) + '\n')
  return results


# ------------------------------------------------------------------- export


def benchmark_stats(results: dict[tuple[str, str], float],
                    models: list[dict[str, Any]],
                    targets: list[str]) -> dict[str, Any]:
  """Is the benchmark worth ranking on? Spread, relatedness, architecture.

  Args:
    results: `{(model, task): accuracy}`.
    models: model metadata rows (`model`, `family`, `size`,
      `source_domains` as a list).
    targets: target task names.

  Returns:
    A dict with a `per_target` list and summary numbers.
  """
  by_id = {m['model']: m for m in models}
  per_target, wins = [], {}
  same_all, other_all = [], []
  for t in targets:
    dom = tasks_lib.get_task(t).domain
    acc = {m: s for (m, tt), s in results.items() if tt == t and m in by_id}
    if not acc:
      continue
    vals = np.array(list(acc.values()))
    best = max(acc, key=acc.get)
    wins[best] = wins.get(best, 0) + 1
    same = [s for m, s in acc.items() if dom in by_id[m]['source_domains']]
    other = [s for m, s in acc.items()
             if dom not in by_id[m]['source_domains']]
    same_all += [s - vals.mean() for s in same]
    other_all += [s - vals.mean() for s in other]
    per_target.append(dict(
        task=t, domain=dom, models=len(acc), min=float(vals.min()),
        max=float(vals.max()), mean=float(vals.mean()),
        spread=float(vals.max() - vals.min()), best=best,
        same_domain_mean=float(np.mean(same)) if same else float('nan'),
        other_domain_mean=float(np.mean(other)) if other else float('nan')))
  fam = {}
  for (m, t), s in results.items():
    if m in by_id and t in targets:
      key = f"{by_id[m]['family']}_{by_id[m]['size']}"
      fam.setdefault(key, []).append(s)
  return dict(
      per_target=per_target,
      targets_with_spread_ge_10=sum(r['spread'] >= 0.10 for r in per_target),
      num_targets=len(per_target),
      wins=dict(sorted(wins.items(), key=lambda kv: -kv[1])),
      same_minus_target_mean=float(np.mean(same_all)) if same_all else None,
      other_minus_target_mean=float(np.mean(other_all)) if other_all
      else None,
      arch_mean={k: float(np.mean(v)) for k, v in sorted(fam.items())})


def _to_float16(variables: Any) -> Any:
  """Params to float16 (halves the artifact size); BatchNorm stats stay f32."""
  out = {}
  for col, tree in jax.device_get(variables).items():
    dtype = np.float16 if col == 'params' else np.float32
    out[col] = jax.tree.map(lambda a, d=dtype: np.asarray(a, d), tree)
  return out


def export_artifacts(config: ml_collections.ConfigDict, workdir: str,
                     out_dir: str, probe_size: int = 500,
                     graphs: bool = True) -> dict[str, Any]:
  """Writes the committed artifacts from a (finished or partial) build.

  Files: results.csv (model,task,score), models.csv, tasks.csv,
  weights/<model>.msgpack (float16 params), probes/<task>.npz (class-balanced
  train probe), graphs/<arch>.json + index.json (archi2vec traces),
  stats.json, build_info.json.

  Args:
    config: the build config.
    workdir: the build's work directory.
    out_dir: where to write the artifacts.
    probe_size: images per target probe.
    graphs: whether to export architecture graphs.

  Returns:
    `benchmark_stats` of the exported results.
  """
  from flax import serialization  # pylint: disable=g-import-not-at-top
  from fennec_jax.data import probe  # pylint: disable=g-import-not-at-top
  workdir = os.path.abspath(workdir)
  check_workdir(config, workdir)
  os.makedirs(os.path.join(out_dir, 'weights'), exist_ok=True)
  os.makedirs(os.path.join(out_dir, 'probes'), exist_ok=True)
  results = read_results(os.path.join(workdir, RESULTS_FILE), repair=False)
  plan = zoo_lib.zoo_plan(config)
  ids = [m.model_id for m in plan] + ['proxy']
  metas = []
  for model_id in ids:
    if not os.path.exists(_model_paths(workdir, model_id)[1]):
      logging.warning('export: %s is not pretrained yet; skipped.', model_id)
      continue
    variables, meta = load_pretrained(workdir, model_id)
    with open(os.path.join(out_dir, 'weights', f'{model_id}.msgpack'),
              'wb') as f:
      f.write(serialization.msgpack_serialize(_to_float16(variables)))
    metas.append(meta)
  cols = ('model', 'family', 'size', 'arch', 'num_params', 'source',
          'source_domains', 'source_classes', 'source_accuracy',
          'head_classes')
  with open(os.path.join(out_dir, 'models.csv'), 'w') as f:
    f.write(','.join(cols) + '\n')
    for m in metas:
      row = dict(m, model=m['model_id'],
                 source_domains=';'.join(m['source_domains']),
                 source_accuracy=f"{m['source_accuracy']:.4f}",
                 source=m['source'] if m['model_id'] != 'proxy'
                 else 'all single-domain sources')
      f.write(','.join(str(row[c]) for c in cols) + '\n')
  data = _Data(config, workdir)
  tcols = ('task', 'role', 'domain', 'domains', 'num_classes', 'train_size',
           'test_size', 'seed', 'needs_system_data', 'description')
  with open(os.path.join(out_dir, 'tasks.csv'), 'w') as f:
    f.write(','.join(tcols) + '\n')
    for name in list(config.targets) + list(config.sources):
      spec = tasks_lib.get_task(name)
      train, test = data.sizes(name)
      row = dict(task=name, role=spec.role, domain=spec.domain,
                 domains=';'.join(spec.domains), num_classes=spec.num_classes,
                 train_size=train, test_size=test, seed=spec.seed,
                 needs_system_data=spec.needs_system_data,
                 description=spec.description.replace(',', ';'))
      f.write(','.join(str(row[c]) for c in tcols) + '\n')
  for name in config.targets:
    x, y = data.get(name, 'train')
    idx = probe.class_balanced_indices(y, probe_size, seed=config.seed)
    # Procedural probes are regenerated (noisy images compress badly); only
    # tasks made from system data ship their pixels. The hash catches a
    # renderer (PIL / FreeType) that draws differently.
    extra = ({'images': x[idx]} if tasks_lib.get_task(name).needs_system_data
             else {})
    np.savez_compressed(os.path.join(out_dir, 'probes', f'{name}.npz'),
                        labels=y[idx], indices=idx,
                        sha256=np.array(hashlib.sha256(
                            np.ascontiguousarray(x[idx]).tobytes()).hexdigest()),
                        **extra)
    data.drop(name)
  with open(os.path.join(out_dir, 'results.csv'), 'w') as f:
    f.write('model,task,score\n')
    for (m, t), s in sorted(results.items()):
      f.write(f'{m},{t},{s:.6f}\n')
  if graphs:
    from fennec_jax.archi2vec import graphs as graphs_lib  # pylint: disable=g-import-not-at-top
    from fennec_jax.archi2vec import trace as trace_lib  # pylint: disable=g-import-not-at-top
    os.makedirs(os.path.join(out_dir, 'graphs'), exist_ok=True)
    index = {}
    for arch in dict.fromkeys([m['arch'] for m in metas]):
      g = trace_lib.trace(arch)
      graphs_lib.write_graph(g, os.path.join(out_dir, 'graphs',
                                              f'{arch}.json'))
      index[arch] = f'{arch}.json'
    with open(os.path.join(out_dir, 'graphs', 'index.json'), 'w') as f:
      json.dump(index, f, indent=1, sort_keys=True)
  models = [dict(model=m['model_id'], family=m['family'], size=m['size'],
                 source_domains=m['source_domains']) for m in metas]
  stats = benchmark_stats(results, models, list(config.targets))
  with open(os.path.join(out_dir, 'stats.json'), 'w') as f:
    json.dump(stats, f, indent=1)
  timing = []
  if os.path.exists(os.path.join(workdir, 'timing.jsonl')):
    with open(os.path.join(workdir, 'timing.jsonl')) as f:
      timing = [json.loads(line) for line in f if line.strip()]
  info = dict(config=_config_dict(config), runs=timing,
              pairs_done=len(results),
              pairs_total=len(plan) * len(config.targets),
              jax=jax.__version__, devices=str(jax.devices()[0].device_kind))
  with open(os.path.join(out_dir, 'build_info.json'), 'w') as f:
    json.dump(info, f, indent=1, sort_keys=True)
  write_data_card(out_dir)
  return stats


def write_data_card(out_dir: str) -> str:
  """Writes `<out_dir>/README.md` from the exported files (numbers included).

  Args:
    out_dir: a directory written by `export_artifacts`.

  Returns:
    The path of the data card.
  """
  import csv  # pylint: disable=g-import-not-at-top

  def rows(name):
    with open(os.path.join(out_dir, name), newline='') as f:
      return list(csv.DictReader(f))

  with open(os.path.join(out_dir, 'stats.json')) as f:
    stats = json.load(f)
  with open(os.path.join(out_dir, 'build_info.json')) as f:
    info = json.load(f)
  models, task_rows = rows('models.csv'), rows('tasks.csv')
  cfg = info['config']
  wall = sum(r.get('pretrain_s', 0) + r.get('finetune_s', 0)
             for r in info['runs'])
  fam_counts = {}
  for m in models:
    if m['model'] != 'proxy':
      fam_counts[m['family']] = fam_counts.get(m['family'], 0) + 1
  size = sum(os.path.getsize(os.path.join(dp, f))
             for dp, _, fs in os.walk(out_dir) for f in fs)
  out = [
      '# Offline benchmark: data card',
      '',
      'A models x tasks table of measured fine-tuning accuracy, built end to '
      'end on offline data by `fennec_jax.benchmarks.build` (issue 6). '
      'Everything here is generated; nothing was downloaded.',
      '',
      f"* **{stats['num_targets']} target tasks** over "
      f"{len({t['domain'] for t in task_rows if t['role'] == 'target'})} "
      f"visual domains; **{len(models) - 1} zoo models** "
      f"({', '.join(f'{k}: {v}' for k, v in sorted(fam_counts.items()))}) "
      'at two sizes (s, l), each pretrained on its own source task or '
      'mixture; one proxy '
      f"(`{next(m['arch'] for m in models if m['model'] == 'proxy')}`) "
      'pretrained on all single-domain sources.',
      f"* Pairs measured: {info['pairs_done']} / {info['pairs_total']}.",
      f'* Build wall time of the run(s) that completed: {wall / 60:.1f} min '
      '(2-core CPU shared with other jobs; runs killed and resumed before '
      'are not counted); per-run timings in build_info.json.',
      f'* Size on disk: {size / 2**20:.1f} MiB.',
      '',
      '## Build command',
      '',
      '```',
      'fennec build-benchmark --workdir=runs/offline_build \\',
      '    --export_dir=fennec_jax/benchmarks/offline_data',
      '```',
      '',
      'Resumable: kill it at any moment and rerun the same command. Fashion '
      'tasks need the Debian package `dataset-fashion-mnist`.',
      '',
      '## Recipe (one for every pair)',
      '',
      f"* Pretraining: {cfg['pretrain']['steps']} AdamW steps, batch "
      f"{cfg['pretrain']['batch_size']}, lr {cfg['pretrain']['lr']} "
      f"(warmup-cosine), weight decay {cfg['pretrain']['weight_decay']}, "
      f"{cfg['source_sizes'][0]} train / {cfg['source_sizes'][1]} held-out "
      'images per source. With `vmap` on, the models of one architecture '
      'train together (off on CPU, where it measured slower). Proxy: '
      f"{cfg['proxy']['steps']} steps, batch "
      f"{cfg['proxy']['batch_size']}.",
      f"* Fine-tuning: full fine-tune, new linear head (padded to "
      f"{cfg['finetune']['max_classes']} outputs, masked), "
      f"{cfg['finetune']['steps']} AdamW steps, batch "
      f"{cfg['finetune']['batch_size']}, lr {cfg['finetune']['lr']} "
      f"(warmup-cosine), weight decay {cfg['finetune']['weight_decay']}; "
      'the same batches and head initialization for every model. Score: '
      'accuracy on the target test split.',
      '* Images: 28x28x3 uint8, scaled to [-1, 1] (`offline.preprocess`).',
      '',
      '## Is it worth ranking on?',
      '',
      f"* Targets whose accuracy spread across models is >= 10 points: "
      f"**{stats['targets_with_spread_ge_10']} / {stats['num_targets']}**.",
      f"* Best-model counts (model: targets won): "
      + ', '.join(f'{k}: {v}' for k, v in list(stats['wins'].items())[:8])
      + '.',
      '* Source-target relatedness: mean accuracy minus the target mean, '
      'for models whose source shares the target domain: '
      f"**{100 * (stats['same_minus_target_mean'] or 0):+.1f} points**; "
      'other-domain sources: '
      f"**{100 * (stats['other_minus_target_mean'] or 0):+.1f} points**.",
      '* Mean accuracy by architecture: '
      + ', '.join(f'{k} {100 * v:.1f}' for k, v in stats['arch_mean'].items())
      + '.',
      '',
      '| target | domain | classes | train | min | mean | max | spread | '
      'same-domain mean | other-domain mean | best model |',
      '|---|---|---|---|---|---|---|---|---|---|---|',
  ]
  tmeta = {t['task']: t for t in task_rows}
  for r in stats['per_target']:
    t = tmeta[r['task']]
    out.append(
        f"| {r['task']} | {r['domain']} | {t['num_classes']} | "
        f"{t['train_size']} | {100 * r['min']:.1f} | {100 * r['mean']:.1f} | "
        f"{100 * r['max']:.1f} | {100 * r['spread']:.1f} | "
        f"{100 * r['same_domain_mean']:.1f} | "
        f"{100 * r['other_domain_mean']:.1f} | {r['best']} |")
  out += ['', '## Tasks', '',
          'Targets come from the Fashion-MNIST *test* file (split 6000/4000 '
          'into train/test pools), DejaVu glyphs (the fonts bundled with '
          'matplotlib), and procedural shapes, textures and counting scenes. '
          'Sources use the Fashion-MNIST *train* file, other character sets '
          '(lowercase, symbols, fonts), other shape/texture/counting '
          'definitions, and mixtures of two or three sources; no source sees '
          "a target's test split. Every task is deterministic from its seed "
          '(crc32 of the name).', '',
          '| task | role | domain | classes | train | test | description |',
          '|---|---|---|---|---|---|---|']
  for t in task_rows:
    out.append(f"| {t['task']} | {t['role']} | {t['domains']} | "
               f"{t['num_classes']} | {t['train_size']} | {t['test_size']} | "
               f"{t['description']} |")
  out += ['', '## Models', '',
          '| model | family | size | params | source | source domains | '
          'source acc |', '|---|---|---|---|---|---|---|']
  for m in models:
    out.append(f"| {m['model']} | {m['family']} | {m['size']} | "
               f"{int(m['num_params']):,} | {m['source']} | "
               f"{m['source_domains']} | "
               f"{100 * float(m['source_accuracy']):.1f} |")
  out += ['', '## Files', '',
          '* `results.csv`: `model,task,score` (test accuracy), long format; '
          '`fennec_jax.benchmarks.offline.load()` returns it as a `History` '
          'with model and task metadata.',
          '* `models.csv`, `tasks.csv`: metadata (family, size, #params, '
          'source, source accuracy; domain, classes, split sizes, seed).',
          '* `weights/<model>.msgpack`: flax msgpack, params float16 (+ '
          'BatchNorm stats float32) of backbone and padded source head; '
          '`offline.load_model(id)` returns `(module, variables)`.',
          '* `probes/<task>.npz`: class-balanced 500-image probe of each '
          "target's train split: indices, labels, SHA-256; Fashion probes "
          'also carry pixels, the others are regenerated '
          '(`offline.load_probe`).',
          '* `graphs/<arch>.json`: archi2vec traces (`offline.load_graph`).',
          '* `stats.json`, `build_info.json`: the numbers above, the config.',
          '', '## Limitations', '',
          '* Tiny images (28x28), tiny models (19k-700k params) and short '
          'fine-tunes: a world for testing recommenders end to end, not a '
          'substitute for public benchmarks.',
          '* One seed per pair; differences of a point or two are noise.',
          '* Glyph rendering depends on PIL/FreeType; `load_probe` checks '
          'the SHA-256 and logs a warning if pixels differ.', '']
  path = os.path.join(out_dir, 'README.md')
  with open(path, 'w') as f:
    f.write('\n'.join(out))
  return path
