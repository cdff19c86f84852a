"""Task affinities from image embeddings: Fennec's default task map.

A new task is placed among the historical tasks by its images: each of its
image embeddings (the proxy's features, compared by cosine) votes for the
historical tasks that own its k nearest historical images. The vote
fractions, smoothed towards uniform, are the task's affinities `a` (one per
historical task, summing to 1), and the recommender predicts the task's
normalized scores as the affinity-weighted mean of the historical tasks'
(completed) normalized score columns.

Why votes of single images rather than a regression from each task's mean
embedding: a history has tens to hundreds of tasks but each brings a hundred
images, so the votes rest on n * T points instead of T, and a task that looks
like two historical tasks gets a mixture of both. On the offline benchmark
(26 targets, leave one task out) the mean-embedding ridge map stays close to
the population mean (weighted tau 0.597 against popularity's 0.582); the
votes reach 0.637-0.641 over four probe draws
(`experiments/benchmarks/task_maps.py`).

`fit` chooses k and the smoothing by leave-one-task-out: each historical task
is predicted from the others' votes, and the pair with the lowest mean
squared error on the observed normalized scores wins. The same pass measures
how far each historical task's images lie from the other tasks' (the median
over its images of the cosine distance to the nearest other task's image)
and how spread out its images are (the median pairwise cosine distance):
`task_maps.NeighborsMap.confidence` compares a new task with these. The
top-k search runs in JAX, chunked over query images, so a history of 100k
images fits on one device; queries and pool are padded to powers of two
(masked), so folds and batches of similar size share one compilation.
"""

from collections.abc import Sequence
import functools
from typing import NamedTuple

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np


# (k nearest historical images, smoothing) candidates; the smoothing is the
# vote fraction added to every candidate task before renormalizing.
DEFAULT_GRID = ((1, 0.005), (1, 0.01), (1, 0.02), (1, 0.04),
                (3, 0.01), (3, 0.02), (3, 0.04),
                (10, 0.01), (10, 0.02), (10, 0.04))

# Query images per chunk of the nearest-neighbour search (bounds the
# [chunk, N] similarity block in memory).
_CHUNK = 256


class NeighborMap(NamedTuple):
  """The fitted map.

  Attributes:
    pool: [N, D] unit-norm image embeddings of the historical tasks (f32);
      `fit` pads N with zero rows to a bucket (`pad_pool`, `_bucket`).
    owner: [N] int32 column of the task each pool image belongs to (0..T-1,
      in the order of the tasks given to `fit`), -1 on padding rows.
    num_tasks: T.
    k: neighbours per query image.
    smoothing: vote fraction added to every task.
    loo_error: the leave-one-task-out mean squared error at (k, smoothing).
    loo_distance: [T] each task's `set_distances` to the other tasks' images
      (leave-one-task-out), or None (maps built before it was kept).
    spread: [T] each task's `set_spread`, or None.
  """
  pool: jax.Array
  owner: jax.Array
  num_tasks: int
  k: int
  smoothing: float
  loo_error: float
  loo_distance: np.ndarray | None = None
  spread: np.ndarray | None = None


def unit_sets(embeddings: Sequence[np.ndarray],
              names: Sequence[str] | None = None) -> list[np.ndarray]:
  """Each task's embeddings as a [n, D] float32 array of unit rows.

  Args:
    embeddings: per task a [D] vector (one embedding) or an [n, D] set (e.g.
      the proxy features of its probe images).
    names: how to name each entry in errors (default 'task i').

  Returns:
    The L2-normalized [n, D] arrays.

  Raises:
    ValueError: an empty, non-finite, all-zero or mis-shaped entry, or sets
      of different widths.
  """
  out = []
  names = names or [f'task {i}' for i in range(len(embeddings))]
  for name, e in zip(names, embeddings):
    e = np.asarray(e, np.float64)
    if e.ndim == 1:
      e = e[None, :]
    if e.ndim != 2 or e.shape[0] == 0 or e.shape[1] == 0:
      raise ValueError(f'{name}: embeddings must be a [D] vector or a '
                       f'non-empty [n, D] set, got shape {e.shape}.')
    if not np.isfinite(e).all():
      raise ValueError(f'{name}: embeddings are not all finite.')
    norm = np.linalg.norm(e, axis=1, keepdims=True)
    if (norm == 0).any():
      raise ValueError(f'{name}: embedding row '
                       f'{int(np.argmin(norm[:, 0]))} is all zeros (no '
                       'direction to compare).')
    out.append((e / norm).astype(np.float32))
  widths = {e.shape[1] for e in out}
  if len(widths) > 1:
    raise ValueError(f'embeddings have different widths {sorted(widths)}; '
                     'give all tasks embeddings from the same proxy.')
  return out


def pad_sets(sets: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
  """([B, n_max, D] zero-padded sets, [B, n_max] validity mask)."""
  n = max(len(s) for s in sets)
  x = np.zeros((len(sets), n, sets[0].shape[1]), np.float32)
  valid = np.zeros((len(sets), n), bool)
  for b, s in enumerate(sets):
    x[b, :len(s)] = s
    valid[b, :len(s)] = True
  return x, valid


def _bucket(n: int) -> int:
  """The padded size of a pool: n rounded up to one of 16 sizes per octave.

  The grain is a sixteenth of the next power of two (at least 8), so padding
  adds less than an eighth to the search (a power of two could double it), and
  pools of leave-one-task-out folds or histories of slightly different sizes
  still share one compilation per bucket.
  """
  grain = 1 << max(max(int(n) - 1, 0).bit_length() - 4, 3)
  return max(8, -(-int(n) // grain) * grain)


def _query_bucket(q: int) -> int:
  """The padded size of a query batch: `_bucket`, and past the chunk size a
  multiple of it (the search runs chunk by chunk)."""
  b = _bucket(q)
  return b if b <= _CHUNK else -(-b // _CHUNK) * _CHUNK


def pad_pool(pool: np.ndarray, owner: np.ndarray
             ) -> tuple[jax.Array, jax.Array]:
  """(pool, owner) padded to `_bucket` rows; padding rows have owner -1."""
  pool = np.asarray(pool, np.float32)
  pad = _bucket(len(pool)) - len(pool)
  return (jnp.asarray(np.pad(pool, ((0, pad), (0, 0)))),
          jnp.asarray(np.pad(np.asarray(owner, np.int32), (0, pad),
                             constant_values=-1)))


@functools.partial(jax.jit, static_argnames=('k', 'exclude'))
def _search(queries, query_task, pool, owner, *, k, exclude):
  """([Q, k] cosine similarities, [Q, k] owning tasks) of each query's k
  nearest pool images.

  Pool rows with owner -1 are padding and never chosen. With `exclude`,
  pool images of the query's own task (`query_task`) are left out: this is
  what makes the fit-time votes leave-one-task-out. New tasks skip that
  pass. Q is a multiple of the chunk size (`search` pads it).
  """

  def chunk(args):
    q, t = args
    sims = jnp.where(owner[None, :] >= 0, q @ pool.T, -jnp.inf)
    if exclude:
      sims = jnp.where(owner[None, :] == t[:, None], -jnp.inf, sims)
    top, idx = jax.lax.top_k(sims, k)
    return top, owner[idx]

  size = min(_CHUNK, queries.shape[0])
  qs = queries.reshape(-1, size, queries.shape[1])
  ts = query_task.reshape(-1, size)
  top, owners = jax.lax.map(chunk, (qs, ts))
  return top.reshape(-1, k), owners.reshape(-1, k)


def search(queries: np.ndarray, query_task: np.ndarray, pool: jax.Array,
           owner: jax.Array, *, k: int, exclude: bool
           ) -> tuple[jax.Array, jax.Array]:
  """Each query's k nearest pool images (see `fit`).

  The queries are padded to `_query_bucket` rows (a multiple of the chunk
  size once past it), so any Q up to a bucket reuses one compilation for a
  given pool shape.

  Args:
    queries: [Q, D] unit-norm query embeddings.
    query_task: [Q] int32 task of each query (-1: none; used by `exclude`).
    pool: [N, D] unit-norm pool embeddings (padded rows allowed).
    owner: [N] int32 task of each pool row, -1 on padding rows.
    k: neighbours per query.
    exclude: leave out pool rows of the query's own task.

  Returns:
    ([Q, k] cosine similarities, best first; [Q, k] their owners).
  """
  q = len(queries)
  pad = _query_bucket(q) - q
  queries = np.pad(np.asarray(queries, np.float32), ((0, pad), (0, 0)))
  query_task = np.pad(np.asarray(query_task, np.int32), (0, pad),
                      constant_values=-1)
  top, owners = _search(jnp.asarray(queries), jnp.asarray(query_task), pool,
                        owner, k=k, exclude=exclude)
  return top[:q], owners[:q]


def _votes(owners: jax.Array, valid: jax.Array, k: int,
           num_tasks: int) -> jax.Array:
  """[B, T] vote fractions from [B, n, >=k] neighbour owners."""
  hits = jax.nn.one_hot(owners[..., :k], num_tasks, dtype=jnp.float32)
  hits = (hits.sum(2) * valid[..., None]).sum(1)
  return hits / jnp.maximum(hits.sum(-1, keepdims=True), 1.0)


def _smooth(votes: jax.Array, smoothing: float,
            allowed: jax.Array) -> jax.Array:
  """Affinities: votes + smoothing on every allowed task, renormalized."""
  a = (votes + smoothing) * allowed
  return a / jnp.maximum(a.sum(-1, keepdims=True), 1e-12)


def fit(sets: Sequence[np.ndarray], columns: np.ndarray, mask: np.ndarray,
        grid: Sequence[tuple[int, float]] = DEFAULT_GRID
        ) -> tuple[NeighborMap, np.ndarray]:
  """Fits the map and chooses (k, smoothing) by leave-one-task-out.

  Args:
    sets: per historical task, its [n, D] unit-norm embeddings (`unit_sets`).
    columns: [M, T] the tasks' completed normalized scores (what a new
      task's prediction averages).
    mask: [M, T] bool, which entries were observed (the error is measured
      there only).
    grid: candidate (k, smoothing) pairs.

  Returns:
    (the map, [T, T] leave-one-task-out affinities at the chosen pair: row j
    predicts task j from the other tasks; its diagonal is 0).

  Raises:
    ValueError: fewer than 3 tasks, an empty grid or a bad candidate.
  """
  t = len(sets)
  if t < 3:
    raise ValueError(f'need embeddings of at least 3 historical tasks to fit '
                     f'the neighbour map, got {t}.')
  if not grid:
    raise ValueError('the neighbour grid is empty.')
  for k, s in grid:
    if int(k) < 1 or not s >= 0:
      raise ValueError(f'neighbour candidate (k={k}, smoothing={s}): need '
                       'k >= 1 and smoothing >= 0.')
  columns = np.asarray(columns, np.float64)
  mask = np.asarray(mask, bool)
  if columns.shape != mask.shape or columns.shape[1] != t:
    raise ValueError(f'columns {columns.shape} and mask {mask.shape} must be '
                     f'[M, {t}] (one column per task set).')
  num_images = sum(len(s) for s in sets)
  pool, owner = pad_pool(np.concatenate(sets),
                         np.repeat(np.arange(t), [len(s) for s in sets]))
  # A task's own images are excluded, so at most N - n_j neighbours exist.
  kmax = min(max(int(k) for k, _ in grid),
             num_images - max(len(s) for s in sets))
  x, valid = pad_sets(sets)
  top, owners = search(
      x.reshape(-1, x.shape[-1]), np.repeat(np.arange(t), x.shape[1]),
      pool, owner, k=kmax, exclude=True)
  owners = owners.reshape(t, x.shape[1], kmax)
  loo_distance = _median_distance(top[:, 0].reshape(t, -1), valid)
  allowed = 1.0 - jnp.eye(t)
  best = None
  for k, s in grid:
    k = min(int(k), kmax)
    a = np.asarray(_smooth(_votes(owners, jnp.asarray(valid), k, t),
                           float(s), allowed), np.float64)
    pred = columns @ a.T  # [M, T]: column j predicted from the others.
    err = float(((pred - columns) ** 2)[mask].mean())
    if best is None or err < best[0]:
      best = (err, k, float(s), a)
  err, k, s, a = best
  logging.info('neighbour map: %d tasks, %d images; k=%d, smoothing %.3g '
               '(leave-one-task-out MSE %.4f).', t, num_images, k, s, err)
  return NeighborMap(pool, owner, t, k, s, err, loo_distance,
                     np.asarray([set_spread(e) for e in sets])), a


def votes_and_distances(nmap: NeighborMap, sets: Sequence[np.ndarray]
                        ) -> tuple[jax.Array, np.ndarray]:
  """`votes` and `set_distances` of B new tasks from one search.

  The task map's prior needs the votes and its confidence the distances;
  one search serves both (`task_maps.NeighborsMap` keeps the distances of
  its last prior).
  """
  if sets[0].shape[1] != nmap.pool.shape[1]:
    raise ValueError(f'task embeddings have width {sets[0].shape[1]}; the '
                     f'map was fit on width {nmap.pool.shape[1]} (another '
                     'proxy?).')
  x, valid = pad_sets(sets)
  b, n, d = x.shape
  top, owners = search(
      x.reshape(-1, d), np.full((b * n,), -1, np.int32), nmap.pool,
      nmap.owner, k=nmap.k, exclude=False)
  return (_votes(owners.reshape(b, n, nmap.k), jnp.asarray(valid), nmap.k,
                 nmap.num_tasks),
          _median_distance(top[:, 0].reshape(b, n), valid))


def votes(nmap: NeighborMap, sets: Sequence[np.ndarray]) -> jax.Array:
  """[B, T] vote fractions of B new tasks, each given by a [n_b, D] unit set.

  At most n_b * k entries of a row are non-zero; `affinities` adds the
  smoothing.
  """
  return votes_and_distances(nmap, sets)[0]


def affinities(nmap: NeighborMap, sets: Sequence[np.ndarray]) -> jax.Array:
  """[B, T] affinities of B new tasks, each given by a [n_b, D] unit set."""
  return _smooth(votes(nmap, sets), nmap.smoothing,
                 jnp.ones((nmap.num_tasks,)))


def _median_distance(similarity: jax.Array, valid: np.ndarray) -> np.ndarray:
  """[B] median over each set's valid rows of 1 - [B, n] similarity."""
  dist = 1.0 - np.asarray(similarity, np.float64)
  return np.asarray([np.median(d[v]) for d, v in zip(dist, valid)])


def set_distances(nmap: NeighborMap, sets: Sequence[np.ndarray]
                  ) -> np.ndarray:
  """[B] how far each new task's images lie from the history's images.

  Each image's cosine distance to its nearest historical image, the median
  over the task's images (robust to a few odd images). `fit` keeps the same
  measure of each historical task against the other tasks
  (`NeighborMap.loo_distance`).

  Args:
    nmap: the fitted map.
    sets: B [n_b, D] unit-norm sets (`unit_sets`).

  Returns:
    [B] float64 distances in [0, 2].
  """
  return votes_and_distances(nmap, sets)[1]


# Rows of a set that `set_spread` compares pairwise (evenly spaced), so a
# task of many images costs at most this squared.
_SPREAD_ROWS = 256


def set_spread(unit_set: np.ndarray) -> float:
  """The median pairwise cosine distance of a [n, D] unit-norm set.

  Near 0 when the images all look alike to the proxy (e.g. random noise,
  one repeated image): such a set gives the votes nothing to tell tasks
  apart. NaN for a single row.
  """
  e = np.asarray(unit_set, np.float64)
  if len(e) > _SPREAD_ROWS:
    e = e[np.linspace(0, len(e) - 1, _SPREAD_ROWS).astype(int)]
  if len(e) < 2:
    return float('nan')
  return float(np.median(1.0 - (e @ e.T)[np.triu_indices(len(e), 1)]))
