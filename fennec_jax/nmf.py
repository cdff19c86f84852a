"""Masked non-negative matrix factorization (the paper's transfer phase).

The released Fennec code factorizes its performance matrix P (models x tasks)
with scikit-learn's `NMF(solver='mu')`: Lee & Seung multiplicative updates
for the squared error, W first then H, from sklearn's 'random' init. `nmf`
runs the same updates as one jitted `fori_loop`. The paper's P is dense; here
the updates are masked (only observed entries enter the numerators and
denominators), which is the exact multiplicative-update rule of the masked
squared error. A fixed iteration count keeps the loop one compiled program per
matrix shape.
"""

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


class NMFResult(NamedTuple):
  """P ~ model_factors @ task_factors.T (all entries >= 0).

  Attributes:
    model_factors: [M, k] u_i.
    task_factors: [T, k] v_j.
    loss: squared error over the observed entries.
  """
  model_factors: np.ndarray
  task_factors: np.ndarray
  loss: float


@functools.partial(jax.jit, static_argnames=('num_iterations',))
def _nmf_loop(x, mask, w, h, *, num_iterations):
  """`num_iterations` masked updates of (w, h) and the final masked loss."""
  eps = jnp.finfo(x.dtype).eps
  mx = mask * x

  def body(_, wh):
    w, h = wh
    w = w * (mx @ h) / ((mask * (w @ h.T)) @ h + eps)
    h = h * (mx.T @ w) / ((mask * (w @ h.T)).T @ w + eps)
    return w, h

  w, h = jax.lax.fori_loop(0, num_iterations, body, (w, h))
  resid = mask * (x - w @ h.T)
  return w, h, jnp.sum(resid ** 2)


def nmf_init(scores: np.ndarray, mask: np.ndarray, rank: int, seed: int
             ) -> tuple[np.ndarray, np.ndarray]:
  """sklearn's 'random' NMF init: sqrt(mean / k) |N(0, 1)| (observed mean).

  Args:
    scores: [M, T] scores.
    mask: [M, T] bool, True where observed.
    rank: k.
    seed: seeds `np.random.default_rng`.

  Returns:
    (U0 [M, k], V0 [T, k]) float64, non-negative.
  """
  avg = np.sqrt(max(float(scores[mask].mean()), 0.0) / rank)
  rng = np.random.default_rng(seed)
  w = avg * np.abs(rng.standard_normal((scores.shape[0], rank)))
  h = avg * np.abs(rng.standard_normal((scores.shape[1], rank)))
  return w, h


def nmf(scores: Any, mask: Any = None, *, rank: int = 5,
        num_iterations: int = 1000, seed: int = 0,
        init: tuple[Any, Any] | None = None) -> NMFResult:
  """Masked non-negative matrix factorization by multiplicative updates.

  Minimizes sum_observed (P_ij - u_i . v_j)^2 over U, V >= 0 with Lee &
  Seung's updates, W first then H as sklearn's 'mu' solver (eps = machine
  epsilon in the denominators):

    U <- U * ((M*P) V) / ((M*(U V^T)) V + eps)
    V <- V * ((M*P)^T U) / ((M*(U V^T))^T U + eps)

  Args:
    scores: [M, T] non-negative scores (NaN / anything where unobserved).
    mask: [M, T] bool, True where observed (default: finite entries).
    rank: k.
    num_iterations: updates (a fixed count: one compiled loop).
    seed: seeds the random init (`nmf_init`).
    init: optional (U0 [M, k], V0 [T, k]) non-negative initial factors.

  Returns:
    An `NMFResult` (float32 factors as numpy arrays).

  Raises:
    ValueError: negative or non-finite observed entries, no observation,
      bad shapes.
  """
  scores = np.asarray(scores, np.float64)
  mask = np.isfinite(scores) if mask is None else np.asarray(mask, bool)
  if scores.ndim != 2 or mask.shape != scores.shape:
    raise ValueError(f'scores must be [M, T] with a mask of the same shape; '
                     f'got {scores.shape} and {mask.shape}.')
  if not mask.any():
    raise ValueError('nmf: no observed entries.')
  if not np.isfinite(scores[mask]).all():
    raise ValueError('nmf: observed scores must be finite.')
  if (scores[mask] < 0).any():
    i, j = np.argwhere(mask & (scores < 0))[0]
    raise ValueError(f'nmf: scores must be >= 0; entry ({i}, {j}) is '
                     f'{scores[i, j]} (use PaperConfig(shift="min")).')
  if init is None:
    w, h = nmf_init(scores, mask, rank, seed)
  else:
    w, h = (np.asarray(a, np.float64) for a in init)
    if (w.shape != (scores.shape[0], rank)
        or h.shape != (scores.shape[1], rank)
        or (w < 0).any() or (h < 0).any()):
      raise ValueError(f'nmf init must be non-negative [M, {rank}] and '
                       f'[T, {rank}], got {w.shape}, {h.shape}.')
  x = np.where(mask, scores, 0.0)
  w, h, loss = _nmf_loop(jnp.asarray(x, jnp.float32),
                         jnp.asarray(mask, jnp.float32),
                         jnp.asarray(w, jnp.float32),
                         jnp.asarray(h, jnp.float32),
                         num_iterations=int(num_iterations))
  return NMFResult(np.asarray(w), np.asarray(h), float(loss))
