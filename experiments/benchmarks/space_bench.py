r"""Speed of the transfer space at repository scale (a benchmark, not a test).

Synthetic history: --num_models x --num_tasks with --density of the entries
observed (a random subset per task), scores = low-rank signal of rank
--true_rank + biases + Gaussian noise (--noise). Measured:

1. `matmul`: the machine's dense f32 matmul rate (a --matmul_size^2 jitted
   matmul, median of --repeats), the reference for the ratios below.
2. `fit`: `space.fit_entries` with rank --rank on the observed entries (COO,
   so the cost is O(observed), not O(M * T)); wall time including compile
   and host preprocessing, the held-out RMSE, and the noise level it should
   approach.
3. `fold_in_top_k`: --num_new_tasks new tasks with --k_shot observed scores
   each are folded in (`fold_in_indices`, posterior only) and the top-10
   models over the whole repository are found (`top_k`, chunked over
   --chunk_size models, bounded memory). Median over --repeats after one
   warm-up call; effective GFLOP/s = 2 * B * M * d / time (the scoring
   matmul), and its ratio to the measured matmul rate. The top-10 of a few
   tasks is checked against NumPy argsort on the full score matrix.

Runs on CPU or GPU (imports only jax, numpy, optax, flax, scipy via
fennec_jax.space). Command (defaults = the issue's sizes):

  .venv/bin/python experiments/benchmarks/space_bench.py --out=/tmp/space_bench

Writes `DIR/space_bench.json` and `DIR/space_bench.md`.
"""

import json
import os
import platform
import time

from absl import app
from absl import flags
from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from fennec_jax import space as space_lib

_OUT = flags.DEFINE_string('out', None, 'Output directory.', required=True)
_NUM_MODELS = flags.DEFINE_integer('num_models', 100_000, 'M.')
_NUM_TASKS = flags.DEFINE_integer('num_tasks', 1_000, 'T.')
_DENSITY = flags.DEFINE_float('density', 0.05, 'Observed fraction.')
_RANK = flags.DEFINE_integer('rank', 32, 'k of the fitted space.')
_TRUE_RANK = flags.DEFINE_integer('true_rank', 8, 'Rank of the signal.')
_NOISE = flags.DEFINE_float('noise', 0.1, 'Noise std (signal std ~1).')
_BATCH = flags.DEFINE_integer('batch_size', 0, 'Entries per step (0 = full '
                              'batch).')
_LAYOUT = flags.DEFINE_enum('layout', 'auto', ['auto', 'dense', 'sparse'],
                            'SpaceConfig.layout.')
_STEPS = flags.DEFINE_integer('max_steps', 300, 'Most optimizer steps.')
_EVAL_EVERY = flags.DEFINE_integer('eval_every', 25, 'Steps per evaluation.')
_PATIENCE = flags.DEFINE_integer('patience', 1, 'Evaluations without '
                                 'improvement before stopping.')
_LR = flags.DEFINE_float('learning_rate', 0.05, 'Adam learning rate.')
_PRIOR = flags.DEFINE_float('prior_precision', 1.0, 'Factor prior '
                            'precision.')
_NUM_NEW = flags.DEFINE_integer('num_new_tasks', 1_000, 'B, tasks folded in.')
_K_SHOT = flags.DEFINE_integer('k_shot', 10, 'Observed models per new task.')
_TOP = flags.DEFINE_integer('top', 10, 'Models returned per task.')
_CHUNK = flags.DEFINE_integer('chunk_size', 2048, 'Models per top-k chunk.')
_MATMUL = flags.DEFINE_integer('matmul_size', 2048, 'Reference matmul size.')
_REPEATS = flags.DEFINE_integer('repeats', 5, 'Timed repeats (median).')
_SKIP_FIT = flags.DEFINE_bool('skip_fit', False, 'Only time fold-in/top-k '
                              '(on a random space).')
_SEED = flags.DEFINE_integer('seed', 0, 'Seed.')


def _median_time(fn, repeats):
  fn()  # Warm-up (compile).
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t0)
  return float(np.median(times)), [float(t) for t in times]


def matmul_rate(size, repeats):
  """Median GFLOP/s of a jitted size x size f32 matmul."""
  key = jax.random.key(0)
  a = jax.random.normal(key, (size, size), jnp.float32)
  b = jax.random.normal(jax.random.fold_in(key, 1), (size, size), jnp.float32)
  mm = jax.jit(jnp.matmul)
  t, times = _median_time(lambda: mm(a, b).block_until_ready(), repeats)
  return {'size': size, 'median_s': t, 'times_s': times,
          'gflops': 2 * size ** 3 / t / 1e9}


def synthetic(rng, num_models, num_tasks, density, true_rank, noise):
  """COO entries of a low-rank + bias + noise matrix, random per task."""
  u = rng.normal(size=(num_models, true_rank)).astype(np.float32)
  v = rng.normal(size=(num_tasks, true_rank)).astype(np.float32)
  u /= np.sqrt(true_rank)
  mb = (0.5 * rng.normal(size=num_models)).astype(np.float32)
  tb = (0.5 * rng.normal(size=num_tasks)).astype(np.float32)
  rows, cols = [], []
  step = max(1, 50_000_000 // num_models)
  for t0 in range(0, num_tasks, step):
    t1 = min(num_tasks, t0 + step)
    r, c = np.nonzero(rng.random((num_models, t1 - t0), np.float32)
                      < density)
    rows.append(r.astype(np.int32))
    cols.append((c + t0).astype(np.int32))
  rows, cols = np.concatenate(rows), np.concatenate(cols)
  values = np.empty(rows.size, np.float32)
  for s in range(0, rows.size, 1_000_000):
    r, c = rows[s:s + 1_000_000], cols[s:s + 1_000_000]
    values[s:s + 1_000_000] = (np.einsum('nk,nk->n', u[r], v[c]) + mb[r]
                               + tb[c])
  values += noise * rng.normal(size=values.shape).astype(np.float32)
  return rows, cols, values, (u, v, mb, tb)


def random_space(rng, num_models, rank):
  """A space with random factors (for --skip_fit)."""
  d = rank + 2
  f32 = np.float32
  space = space_lib.TransferSpace(
      model_factors=rng.normal(size=(num_models, rank)).astype(f32),
      task_factors=rng.normal(size=(2, rank)).astype(f32),
      model_bias=rng.normal(size=num_models).astype(f32),
      task_bias=np.zeros(2, f32), offset=f32(0), task_loc=np.zeros(2, f32),
      task_scale=np.ones(2, f32), prior_mean=np.zeros(d, f32),
      prior_cov=np.eye(d, dtype=f32), noise_var=f32(0.01),
      link=np.zeros((0,), f32),
      config=space_lib.SpaceConfig(rank=rank, normalization='none'))
  return jax.tree.map(jnp.asarray, space)  # On device, as a fit returns it.


def main(argv):
  del argv
  os.makedirs(_OUT.value, exist_ok=True)
  rng = np.random.default_rng(_SEED.value)
  m, t = _NUM_MODELS.value, _NUM_TASKS.value
  result = {
      'device': str(jax.devices()[0]), 'backend': jax.default_backend(),
      'num_devices': jax.device_count(), 'jax': jax.__version__,
      'cpu_count': os.cpu_count(), 'platform': platform.platform(),
      'load_average_start': list(os.getloadavg()),
      'flags': {f: flags.FLAGS[f].value for f in (
          'num_models', 'num_tasks', 'density', 'rank', 'true_rank', 'noise',
          'batch_size', 'layout', 'max_steps', 'eval_every', 'patience',
          'learning_rate', 'prior_precision', 'num_new_tasks', 'k_shot',
          'top', 'chunk_size', 'repeats', 'skip_fit', 'seed')},
  }
  result['matmul'] = matmul_rate(_MATMUL.value, _REPEATS.value)
  logging.info('matmul: %.1f GFLOP/s', result['matmul']['gflops'])

  if _SKIP_FIT.value:
    space = random_space(rng, m, _RANK.value)
  else:
    t0 = time.perf_counter()
    rows, cols, values, _ = synthetic(rng, m, t, _DENSITY.value,
                                      _TRUE_RANK.value, _NOISE.value)
    gen_s = time.perf_counter() - t0
    config = space_lib.SpaceConfig(
        rank=_RANK.value, prior_precision=_PRIOR.value,
        bias_prior_precision=_PRIOR.value, normalization='none',
        learning_rate=_LR.value, max_steps=_STEPS.value,
        eval_every=_EVAL_EVERY.value, patience=_PATIENCE.value,
        holdout_fraction=0.02,
        batch_size=_BATCH.value or None, layout=_LAYOUT.value,
        seed=_SEED.value)
    t0 = time.perf_counter()
    space, info = space_lib.fit_entries(rows, cols, values, (m, t), config,
                                        return_info=True)
    jax.block_until_ready(space)
    fit_s = time.perf_counter() - t0
    result['fit'] = {
        'observed': int(rows.size), 'generate_s': gen_s, 'fit_s': fit_s,
        'steps': info.steps, 'best_step': info.best_step,
        'heldout_rmse': [float(x) for x in info.eval_rmse],
        'best_heldout_rmse': float(info.eval_rmse.min()),
        'noise_std': _NOISE.value, 'signal_std': float(values.std()),
        'num_train': info.num_train, 'num_heldout': info.num_heldout}
    logging.info('fit: %s', result['fit'])
    del rows, cols, values

  b, k_shot = _NUM_NEW.value, _K_SHOT.value
  idx = np.stack([rng.choice(m, k_shot, replace=False) for _ in range(b)])
  true_w = np.asarray(space.prior_mean) + rng.normal(
      size=(b, space.dim)).astype(np.float32) @ np.linalg.cholesky(
          np.asarray(space.prior_cov, np.float64) + 1e-6 * np.eye(space.dim)
      ).T.astype(np.float32)
  phi = np.asarray(space.model_features())
  obs = np.einsum('bkd,bd->bk', phi[idx], true_w)

  def fold_and_rank():
    fold = space.fold_in_indices(idx, obs, return_predicted=False,
                                 return_cov=False)
    return jax.block_until_ready(space.top_k(fold.vectors, _TOP.value,
                                             _CHUNK.value))

  def rank_only(vectors):
    return jax.block_until_ready(space.top_k(vectors, _TOP.value,
                                             _CHUNK.value))

  total_s, total_times = _median_time(fold_and_rank, _REPEATS.value)
  fold = space.fold_in_indices(idx, obs, return_predicted=False,
                               return_cov=False)
  topk_s, topk_times = _median_time(lambda: rank_only(fold.vectors),
                                    _REPEATS.value)
  flop = 2.0 * b * m * space.dim
  vals, top = fold_and_rank()
  check = 8
  full = np.asarray(fold.vectors[:check], np.float64) @ phi.T.astype(
      np.float64)
  expected = np.argsort(-full, axis=1)[:, :_TOP.value]
  exact = float(np.mean(np.asarray(top[:check]) == expected))
  result['fold_in_top_k'] = {
      'num_new_tasks': b, 'k_shot': k_shot, 'top': _TOP.value,
      'dim': space.dim, 'chunk_size': _CHUNK.value,
      'median_s': total_s, 'times_s': total_times,
      'top_k_only_median_s': topk_s, 'top_k_only_times_s': topk_times,
      'scoring_gflop': flop / 1e9,
      'effective_gflops': flop / total_s / 1e9,
      'ratio_to_matmul': flop / total_s / 1e9 / result['matmul']['gflops'],
      'top_k_only_ratio_to_matmul': (flop / topk_s / 1e9
                                     / result['matmul']['gflops']),
      'top_k_agrees_with_argsort': exact}
  result['load_average_end'] = list(os.getloadavg())
  logging.info('fold-in + top-k: %s', result['fold_in_top_k'])

  with open(os.path.join(_OUT.value, 'space_bench.json'), 'w') as f:
    json.dump(result, f, indent=1)
  lines = [
      f'device: {result["device"]} ({result["backend"]}), load average '
      f'{result["load_average_start"][0]:.1f} -> '
      f'{result["load_average_end"][0]:.1f}',
      '',
      '| measurement | value |', '|---|---|',
      f'| matmul {_MATMUL.value}^2 f32 | {result["matmul"]["gflops"]:.1f} '
      'GFLOP/s |']
  if 'fit' in result:
    r = result['fit']
    lines += [
        f'| fit {m}x{t}, {r["observed"]} observed, rank {_RANK.value} | '
        f'{r["fit_s"]:.1f} s ({r["steps"]} steps, held-out RMSE '
        f'{r["best_heldout_rmse"]:.3f}, noise {r["noise_std"]}) |']
  r = result['fold_in_top_k']
  lines += [
      f'| fold-in + top-{r["top"]}, {b} tasks x {m} models | '
      f'{r["median_s"]:.3f} s ({r["effective_gflops"]:.1f} GFLOP/s, '
      f'{r["ratio_to_matmul"]:.2f} of matmul) |',
      f'| top-{r["top"]} only | {r["top_k_only_median_s"]:.3f} s '
      f'({r["top_k_only_ratio_to_matmul"]:.2f} of matmul) |']
  with open(os.path.join(_OUT.value, 'space_bench.md'), 'w') as f:
    f.write('\n'.join(lines) + '\n')
  print('\n'.join(lines))


if __name__ == '__main__':
  app.run(main)
