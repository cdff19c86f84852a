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
(vmapped) call with donated buffers, on a `fennec_jax.sharding` mesh.
`export` turns the work directory into the committed artifacts.
"""

import json
import os
import shutil
import time
from typing import Any

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
import tensorflow_datasets as tfds

from fennec_jax import files
from fennec_jax import progress as progress_lib
from fennec_jax import sharding
from fennec_jax.benchmarks.offline import zoo as zoo_lib
from fennec_jax.data import tasks as tasks_lib
from fennec_jax.data.builders import offline_tasks

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


def shrink_to_seconds(c: ml_collections.ConfigDict,
                      proxy_sources: list[str]) -> ml_collections.ConfigDict:
  """`c` with test-sized data and 4-step trainings (the tiny configs).

  The proxy is a small MLP over `proxy_sources`.
  """
  c.source_sizes = (64, 32)
  c.target_sizes = (64, 40)
  c.pretrain.update(steps=4, batch_size=16, warmup=1)
  c.proxy.update(arch='offline_mlp_s', sources=list(proxy_sources),
                 steps=4, batch_size=16, warmup=1)
  c.finetune.update(steps=4, batch_size=16, warmup=1, max_train=64,
                    eval_chunk=20)
  return c


def tiny_config() -> ml_collections.ConfigDict:
  """Seconds on a CPU: 2 archs x 2 models x 2 procedural targets."""
  c = default_config()
  c.targets = ['shape_color', 'count_parity']
  c.sources = ['src_shape_kind4', 'src_texture_kind4', 'src_count_big',
               'src_shape_rotation']
  c.archs = [['offline_mlp_s', 'mlp', 's'], ['offline_cnn_s', 'cnn', 's']]
  c.models_per_arch = 2
  return shrink_to_seconds(c, ['src_shape_kind4', 'src_count_big'])


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
  batch_sharding = sharding.split(mesh)

  def step(params, state, opt, x, y, n, class_mask, key, i):
    idx = jax.random.randint(jax.random.fold_in(key, i), (batch_size,), 0, n)
    xb = jax.lax.with_sharding_constraint(zoo_lib.preprocess(x[idx]),
                                          batch_sharding)
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
    # Fresh copies on the mesh: the step donates its buffers, the caller's
    # arrays stay valid.
    variables = sharding.put_replicated(variables, mesh)
    params = variables['params']
    state = {k: v for k, v in variables.items() if k != 'params'}
    x, y, n, class_mask = sharding.put_replicated((x, y, n, class_mask), mesh)
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


class TaskData:
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


def work_config(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The JSON form of `config` that decides the work (and its results)."""
  return _drop_runtime_keys(json.loads(json.dumps(config.to_dict(),
                                                  sort_keys=True)))


def _drop_runtime_keys(d: Any) -> Any:
  """How it runs (launcher, vmap or not, devices) does not change the work."""
  if isinstance(d, dict):
    for key in ('runner', 'vmap', 'num_devices'):
      d.pop(key, None)
  return d


def check_workdir(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Creates `workdir` for `config`, or checks it was made by the same config.

  Raises:
    ValueError: the directory holds a different configuration's work.
  """
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, CONFIG_FILE)
  want = work_config(config)
  if not os.path.exists(path):
    files.write_text(path, json.dumps(want, indent=1, sort_keys=True))
    return
  try:
    with open(path) as f:
      have = json.load(f)
  except json.JSONDecodeError as e:
    raise ValueError(f'{path} is not valid JSON ({e}); this work directory is '
                     'damaged: use a fresh --workdir.') from None
  have = _drop_runtime_keys(have)
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


def append_result(path: str, model: str, task: str, score: float,
                   seconds: float) -> None:
  """Appends one full line and fsyncs it: a kill leaves at most a torn line."""
  new = not os.path.exists(path) or os.path.getsize(path) == 0
  line = f'{model},{task},{score:.6f},{seconds:.3f}\n'
  with open(path, 'a') as f:
    f.write((RESULTS_HEADER + '\n' if new else '') + line)
    f.flush()
    os.fsync(f.fileno())


# --------------------------------------------------------------- checkpoints


def _abstract_variables(arch: str, num_outputs: int) -> Any:
  module = zoo_lib.make_classifier(arch, num_outputs)
  x = jax.ShapeDtypeStruct((1, *tasks_lib.IMAGE_SHAPE), jnp.float32)
  return jax.eval_shape(module.init, jax.random.key(0), x)


def model_paths(workdir: str, model_id: str) -> tuple[str, str]:
  """(orbax checkpoint dir, metadata JSON written last) of a zoo model."""
  return (os.path.join(workdir, 'zoo', model_id),
          os.path.join(workdir, 'zoo', model_id + '.json'))


def load_pretrained(workdir: str, model_id: str) -> tuple[Any, dict[str, Any]]:
  """Restores a pretrained model's variables (orbax) and its metadata."""
  ckpt, meta_path = model_paths(workdir, model_id)
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
  ckpt, meta_path = model_paths(workdir, model_id)
  if os.path.exists(ckpt):  # From a run killed between the two writes.
    shutil.rmtree(ckpt)
  ckptr = ocp.StandardCheckpointer()
  ckptr.save(ckpt, jax.device_get(variables))
  ckptr.wait_until_finished()
  files.write_text(meta_path, json.dumps(meta, indent=1, sort_keys=True))


# ------------------------------------------------------------------ stages


def _stack(trees):
  return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def _unstack(tree, n):
  return [jax.tree.map(lambda x, i=i: x[i], tree) for i in range(n)]


def _source_data(data: TaskData, sources: list[str]):
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
                 data: TaskData | None = None,
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
  data = data or TaskData(config, workdir)
  mesh = sharding.make_mesh(config.num_devices)
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
  done = sum(os.path.exists(model_paths(workdir, m.model_id)[1])
             for m in plan + [proxy])
  progress = progress_lib.Progress('pretrain', total, done=done)
  for g, (arch, members, sources) in enumerate(groups):
    if (which == 'zoo' and sources) or (which == 'proxy' and not sources):
      continue
    todo = [m for m in members
            if not os.path.exists(model_paths(workdir, m.model_id)[1])]
    if not todo:
      continue
    t0 = time.time()
    variables, losses, accs = _pretrain_group(
        config, mesh, arch, todo, sources, data,
        jax.random.fold_in(jax.random.fold_in(root, 1), g))
    seconds = (time.time() - t0) / len(todo)
    for m, v, loss, acc in zip(todo, variables, losses, accs):
      head = (config.pretrain if sources is None else config.proxy).max_classes
      specs = [tasks_lib.get_task(s) for s in sources or [m.source]]
      meta = dict(model_id=m.model_id, arch=m.arch, family=m.family,
                  size=m.size, source=m.source, head_classes=head,
                  source_classes=sum(s.num_classes for s in specs),
                  source_domains=sorted({d for s in specs for d in s.domains}),
                  source_accuracy=float(acc),
                  final_loss=float(np.mean(loss[-10:])),
                  num_params=int(sum(np.size(p) for p in jax.tree.leaves(
                      v['params']['backbone']))),
                  seconds=seconds)
      _save_pretrained(workdir, m.model_id, v, meta)
      logging.info('pretrained %s on %s: source acc %.3f, loss %.3f',
                   m.model_id, m.source[:60], acc, meta['final_loss'])
      progress.update()
  return plan


def finetune_all(config: ml_collections.ConfigDict, workdir: str,
                 data: TaskData | None = None) -> dict[tuple[str, str], float]:
  """Stage 4: fine-tunes every (zoo model, target) pair not yet recorded."""
  data = data or TaskData(config, workdir)
  mesh = sharding.make_mesh(config.num_devices)
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
  progress = progress_lib.Progress('fine-tune', total, done=len(results))
  root = jax.random.fold_in(jax.random.key(config.seed), 2)
  archs = list(dict.fromkeys(m.arch for m in plan))
  fns: dict[tuple[str, int], Any] = {}
  # Domains interleaved, so a partial build already covers every domain.
  for task in zoo_lib.interleave_domains(config.targets):
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
        fns[key] = finetune_fn(config, mesh, arch, chunk, len(todo))
      accs = fns[key](backbones, task_key, *args)
      seconds = (time.time() - t0) / len(todo)
      for m, acc in zip(todo, accs):
        append_result(path, m.model_id, task, float(acc), seconds)
        results[(m.model_id, task)] = float(acc)
        progress.update()
      logging.info('%s on %s: %s', arch, task,
                   ' '.join(f'{a:.3f}' for a in accs))
    data.drop(task)
  return results


def finetune_fn(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh,
                arch: str, chunk: int, group: int):
  """`f(backbones, key, *task_arrays) -> accuracies`: the recipe
  (`config.finetune`) of one architecture; `group` (models fine-tuned
  together) only keys the caller's cache, as shapes follow the inputs."""
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
  tfds.disable_progress_bar()
  t0 = time.time()
  data = TaskData(config, workdir)
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
