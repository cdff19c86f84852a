r"""Fennec recommendation latency and many-task throughput (issue 7 item 5).

A synthetic fitted Fennec (random factors: the values do not change the cost)
with M models, a D-dim task-embedding map and rank-k space; measures

* latency of one task from a cached embedding (ridge map + posterior + top-10
  over all M models), target <= 10 ms for M = 100,000 on the 2-core CPU;
* the same with K = 5 observed scores folded in as well;
* throughput of B tasks at once (one batched [B, d] @ [d, M] + top-10);
* the default 'neighbors' task map: one task given by the cached embeddings
  of its 100 probe images, searched against `--history_images` images per
  historical task (cost grows with the history's images, not with M);
* optionally (`--proxy=NAME`, random weights) latency from 100 raw 224 px
  images: the proxy forward pass, then the above (proxy-bound).

CPU:  python experiments/benchmarks/recommend_latency.py --out_dir=runs/bench
GPU:  python experiments/benchmarks/recommend_latency.py --out_dir=$OUT \
        --proxy=vit_base_patch16_224
Writes `<out_dir>/recommend_latency.json`. About 30 s on the CPU without a
proxy. Needs jax, flax, optax, numpy, scipy (no jraph/tfds), plus the proxy
modules with `--proxy`.
"""

import json
import os
import time

from absl import app
from absl import flags
from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from fennec_jax import neighbors
from fennec_jax import recommender
from fennec_jax import space as space_lib
from fennec_jax import task_maps

_NUM_MODELS = flags.DEFINE_integer('num_models', 100_000, 'M.')
_NUM_TASKS = flags.DEFINE_integer('num_tasks', 1000, 'Tasks, history + batch.')
_EMBED_DIM = flags.DEFINE_integer('embed_dim', 768, 'Task embedding dim.')
_RANK = flags.DEFINE_integer('rank', 2, 'Transfer-space rank k.')
_BATCH = flags.DEFINE_integer('batch', 1000, 'Tasks per throughput call.')
_TOP = flags.DEFINE_integer('top', 10, 'Models returned per task.')
_REPEATS = flags.DEFINE_integer('repeats', 50, 'Timed calls per measurement.')
_HISTORY_IMAGES = flags.DEFINE_integer(
    'history_images', 100, "Images per historical task in the 'neighbors' "
    'map (the paper: 100); 0 skips it.')
_PROXY = flags.DEFINE_string('proxy', '', 'Also time 100 raw images through '
                             'this registered proxy (random weights).')
_OUT_DIR = flags.DEFINE_string('out_dir', 'runs/bench', 'Output directory.')


def synthetic_fennec(num_models: int, num_tasks: int, embed_dim: int,
                     rank: int, seed: int = 0) -> recommender.Fennec:
  """A fitted-looking Fennec with random parameters (for timing only)."""
  rng = np.random.default_rng(seed)
  d = rank + 2
  f32 = lambda a: jnp.asarray(a, jnp.float32)
  cov = np.cov(rng.normal(size=(50, d)), rowvar=False)
  space = space_lib.TransferSpace(
      model_factors=f32(rng.normal(size=(num_models, rank))),
      task_factors=f32(rng.normal(size=(num_tasks, rank))),
      model_bias=f32(rng.normal(size=num_models)),
      task_bias=f32(rng.normal(size=num_tasks)),
      offset=f32(0.0), task_loc=f32(np.full(num_tasks, 0.7)),
      task_scale=f32(np.full(num_tasks, 0.1)),
      prior_mean=f32(rng.normal(size=d)), prior_cov=f32(cov),
      noise_var=f32(0.01), link=f32(np.sort(rng.normal(size=256))),
      config=space_lib.SpaceConfig(rank=rank))
  ridge = {'x_mean': np.zeros(embed_dim), 'x_scale': np.ones(embed_dim),
           'y_mean': rng.normal(size=d),
           'coef': rng.normal(size=(embed_dim, d)) / np.sqrt(embed_dim)}
  return recommender.Fennec.from_parts(
      space, [f'm{i}' for i in range(num_models)],
      [f't{j}' for j in range(num_tasks)], task_maps.RidgeMap(ridge, cov))


def with_neighbor_map(fennec: recommender.Fennec, images_per_task: int,
                      observed: float = 0.05,
                      seed: int = 0) -> recommender.Fennec:
  """`fennec` with a random 'neighbors' map (for timing only).

  Every history task gets `images_per_task` unit-norm embeddings of the
  ridge map's width, and a residual for each observed (model, task) pair
  (a fraction `observed` of them, as in space_bench.py).
  """
  rng = np.random.default_rng(seed)
  t, m = fennec.space.num_tasks, fennec.space.num_models
  dim = fennec.task_map.input_dim
  pool = rng.normal(size=(t * images_per_task, dim)).astype(np.float32)
  pool /= np.linalg.norm(pool, axis=1, keepdims=True)
  nmap = neighbors.NeighborMap(
      jnp.asarray(pool), jnp.asarray(np.repeat(np.arange(t), images_per_task),
                                     jnp.int32), t, 1, 0.02, 0.0)
  pairs = rng.choice(m * t, int(observed * m * t), replace=False)
  rows, cols = np.divmod(pairs, t)
  state = {
      'w_norm': rng.normal(size=(t, fennec.space.dim)),
      'loc': np.full(t, 0.7), 'scale': np.full(t, 0.1),
      'resid_rows': rows.astype(np.int32), 'resid_cols': cols.astype(np.int32),
      'resid_values': rng.normal(size=len(pairs)).astype(np.float32)}
  return recommender.Fennec.from_parts(
      fennec.space, fennec.model_ids, fennec.task_ids,
      task_maps.NeighborsMap(nmap, state, fennec.task_map.covariance,
                             noise_var=0.01, num_models=m))


def _time(fn, repeats: int) -> dict[str, float]:
  """Median/min wall time of `fn()` (which must block) after 3 warm-ups."""
  for _ in range(3):
    fn()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return {'median_s': float(np.median(times)), 'min_s': float(np.min(times)),
          'repeats': repeats}


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments {argv[1:]}')
  m, top = _NUM_MODELS.value, _TOP.value
  fennec = synthetic_fennec(m, _NUM_TASKS.value, _EMBED_DIM.value,
                            _RANK.value)
  rng = np.random.default_rng(1)
  one = rng.normal(size=(1, _EMBED_DIM.value))
  many = rng.normal(size=(_BATCH.value, _EMBED_DIM.value))
  obs = [{f'm{i}': float(rng.uniform()) for i in rng.choice(m, 5, False)}]
  results = {'device': str(jax.devices()[0]), 'backend': jax.default_backend(),
             'jax': jax.__version__, 'num_models': m, 'top': top,
             'rank': _RANK.value, 'embed_dim': _EMBED_DIM.value}

  results['one_task_from_embedding'] = _time(
      lambda: fennec.recommend(task_embeddings=one, top=top, full=False),
      _REPEATS.value)
  results['one_task_embedding_plus_5_scores'] = _time(
      lambda: fennec.recommend(task_embeddings=one, observed=obs, top=top,
                               full=False), _REPEATS.value)
  batch = _time(lambda: fennec.recommend(task_embeddings=many, top=top,
                                         full=False),
                max(3, _REPEATS.value // 10))
  batch['tasks_per_s'] = _BATCH.value / batch['median_s']
  batch['batch'] = _BATCH.value
  results['many_tasks'] = batch

  if _HISTORY_IMAGES.value:
    nb = with_neighbor_map(fennec, _HISTORY_IMAGES.value)
    probe = [rng.normal(size=(100, _EMBED_DIM.value))]
    results['one_task_from_100_image_embeddings_neighbors'] = dict(
        _time(lambda: nb.recommend(task_embeddings=probe, top=top,
                                   full=False), _REPEATS.value),
        history_images=int(nb.task_map.nmap.pool.shape[0]),
        residual_entries=int(len(nb.task_map.state['resid_values'])))

  # Reference: the bare [B, d] @ [d, M] matmul + top-k at the same shapes.
  phi = fennec.space.model_features()
  w = jnp.asarray(many[:, :phi.shape[1]], jnp.float32)
  bare = jax.jit(lambda w: jax.lax.top_k(w @ phi.T, top))
  ref = _time(lambda: jax.block_until_ready(bare(w)),
              max(3, _REPEATS.value // 10))
  results['bare_matmul_topk_batch'] = ref
  results['overhead_ratio_many_tasks'] = batch['median_s'] / ref['median_s']

  if _PROXY.value:
    from fennec_jax.proxy import embed  # pylint: disable=g-import-not-at-top
    from fennec_jax.proxy import proxy as proxy_lib  # pylint: disable=g-import-not-at-top
    proxy = proxy_lib.load_proxy(_PROXY.value)
    images = rng.integers(0, 256, size=(100, 224, 224, 3), dtype=np.uint8)
    emb_dim = proxy.feature_dim
    fennec_p = synthetic_fennec(m, _NUM_TASKS.value, emb_dim, _RANK.value)

    def from_images():
      feats = proxy.embed(images)
      e = embed.task_embedding(np.asarray(feats)).mean[None, :]
      return fennec_p.recommend(task_embeddings=e, top=top, full=False)

    results['one_task_from_100_images'] = _time(from_images, 3)
    results['proxy'] = _PROXY.value

  os.makedirs(_OUT_DIR.value, exist_ok=True)
  path = os.path.join(_OUT_DIR.value, 'recommend_latency.json')
  with open(path, 'w') as f:
    json.dump(results, f, indent=1)
  logging.info('wrote %s', path)
  print(json.dumps(results, indent=1))


if __name__ == '__main__':
  app.run(main)
