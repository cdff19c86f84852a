"""LEEP, NCE and NLEEP: scores built on source-class predictions.

LEEP (Nguyen et al., "LEEP: A New Measure to Evaluate Transferability of Learned
Representations", ICML 2020). With theta(x_i) the source model's class
probabilities over Z source classes and y_i the target label:

  P(y, z) = 1/n sum_{i: y_i = y} theta(x_i)_z,  P(y | z) = P(y, z) / P(z),
  LEEP = 1/n sum_i log sum_z P(y_i | z) theta(x_i)_z.

NCE (Tran et al., "Transferability and Hardness of Supervised Classification
Tasks", ICCV 2019): with hard source labels z_i, NCE = -H(Y | Z) =
sum_{y,z} P(y, z) log P(y | z) from the empirical joint of (y, z).

NLEEP (Li et al., "Ranking Neural Checkpoints", CVPR 2021): replaces the source
classifier by a Gaussian mixture fitted on the features: PCA keeping
`variance_fraction` (0.8) of the variance (at most `max_dim` components: the
width must be static, so components past the 80 % point are masked, not cut),
then a diagonal-covariance GMM with K = `component_ratio` * C components fitted
by EM in JAX (init: K distinct samples drawn with
`np.random.default_rng(seed).choice(n, K, replace=False)` as means, hard
assignment to the nearest, one M-step; then EM until the mean log-likelihood
changes by < `tol` or `max_iter` steps; variances + `reg_covar`, as sklearn's
GaussianMixture), and LEEP on the posteriors p(component | x). The original
uses full covariances; diagonal ones on PCA-decorrelated features are what fits
a batched accelerator run (and stays well-posed with 5 C components on 500
samples).

All three are invariant to permuting target class ids; NCE and LEEP also to
permuting source classes.

Shapes: the target classes take `max_classes` rows of the joint (default: the
next power of two >= C); the padding rows hold no mass and add nothing. NCE's
source classes are padded the same way (`num_source_classes`, default the next
power of two above the largest source id), and NLEEP fits min(ratio * K, n)
components of which only the first min(ratio * C, n) are live: the others get
weight 0 (log weight -inf), so they own no sample and the fit is the unpadded
one.
"""

import jax
import jax.numpy as jnp
import numpy as np

from fennec_jax.estimators import _batch
from fennec_jax.estimators import _common
from fennec_jax.estimators import preprocess


def check_source_probs(stack: np.ndarray) -> np.ndarray:
  """Validates source class probabilities [m, n, c_src] (rows sum to 1)."""
  stack = np.asarray(stack)
  if stack.ndim != 3:
    raise ValueError(
        f'source_probs must be [n, c_src] per model, got {stack.shape[1:]}.')
  if not np.issubdtype(stack.dtype, np.floating):
    stack = stack.astype(np.float32)
  if not np.all(np.isfinite(stack)):
    raise ValueError('source_probs holds NaN or inf.')
  if np.any(stack < 0):
    raise ValueError('source_probs holds negative values: pass probabilities '
                     '(softmax of the logits), not logits.')
  sums = stack.sum(-1)
  bad = np.argwhere(np.abs(sums - 1.0) > 1e-3)
  if bad.size:
    m, i = bad[0]
    raise ValueError(
        f'source_probs rows must sum to 1 (model {m}, row {i} sums to '
        f'{sums[m, i]:.4g}): pass softmax probabilities, not logits.')
  return stack


def check_source_labels(stack: np.ndarray) -> np.ndarray:
  """Validates hard source labels [m, n] (non-negative integers)."""
  stack = np.asarray(stack)
  if stack.ndim != 2:
    raise ValueError(f'source_labels must be [n] per model, got '
                     f'{stack.shape[1:]}.')
  if not np.issubdtype(stack.dtype, np.integer):
    raise ValueError(
        f'source_labels must be integer source-class ids, got {stack.dtype} '
        '(use argmax of the source logits).')
  if np.any(stack < 0):
    raise ValueError('source_labels must be >= 0.')
  return stack.astype(np.int32)


def leep_from_probs(probs: jnp.ndarray, labels: jnp.ndarray,
                    max_classes: int) -> jnp.ndarray:
  """LEEP of target labels [n] (< max_classes) given soft assignments [n, Z].

  O(n Z): the joint is a segment sum over rows and only the true class's
  expected empirical prediction is formed (no [n, C] product). Classes
  without a sample have an all-zero row of the joint and change nothing.
  """
  n = probs.shape[0]
  joint = jax.ops.segment_sum(probs, labels, num_segments=max_classes) / n
  pz = joint.sum(0)
  cond = jnp.where(pz > 0, joint / jnp.where(pz > 0, pz, 1.0), 0.0)
  eep = jnp.sum(cond[labels] * probs, 1)
  return jnp.mean(jnp.log(eep))


def _leep_core(probs, *, labels, num_classes, max_classes):
  del num_classes  # Empty classes add nothing to the joint.
  probs = probs.astype(_common.float_dtype(probs))
  return leep_from_probs(probs, labels, max_classes)


def _leep_prepare(stack, labels, *, num_classes=None, max_classes=None):
  bound, arrays = _common.class_arrays(labels, stack.shape[1], num_classes,
                                       max_classes)
  return dict(max_classes=bound), arrays


def _nce_core(z, *, labels, num_classes, max_classes, num_source_classes):
  del num_classes  # Empty classes add nothing to the joint.
  dtype = jnp.result_type(float)
  n = z.shape[0]
  # Joint counts by scatter-add (a one-hot product costs n * C * Z flops).
  joint = jnp.zeros((max_classes * num_source_classes,), dtype).at[
      labels * num_source_classes + z].add(1.0).reshape(
          max_classes, num_source_classes) / n
  pz = joint.sum(0, keepdims=True)
  ratio = jnp.where(joint > 0, joint / jnp.where(pz > 0, pz, 1.0), 1.0)
  return jnp.sum(joint * jnp.log(ratio))


def _nce_prepare(stack, labels, *, num_classes=None, max_classes=None,
                 num_source_classes=None):
  bound, arrays = _common.class_arrays(labels, stack.shape[1], num_classes,
                                       max_classes)
  top = int(stack.max()) + 1
  if num_source_classes is None:
    num_source_classes = _common.class_bound(top)
  elif top > num_source_classes:
    raise ValueError(f'source_labels hold id {top - 1} >= num_source_classes='
                     f'{num_source_classes}.')
  return (dict(max_classes=bound, num_source_classes=int(num_source_classes)),
          arrays)


def gmm_diag_em(x: jnp.ndarray, mask: jnp.ndarray, init_means: jnp.ndarray, *,
                max_iter: int = 100, tol: float = 1e-3,
                reg_covar: float = 1e-6,
                live: jnp.ndarray | None = None) -> jnp.ndarray:
  """EM for a diagonal Gaussian mixture on x [n, D] over dims where mask=1.

  Args:
    x: [n, D] data (masked dims are ignored).
    mask: [D] 0/1 weights of the dims that count.
    init_means: [K, D] initial means.
    max_iter: most EM iterations.
    tol: stop when the mean log-likelihood changes by less.
    reg_covar: added to every variance.
    live: [K] booleans, the components that exist (default: all); the
      others have log weight -inf and get no sample.

  Returns:
    [n, K] posteriors p(component | x) after the last M-step (0 for the
    components that are not live).
  """
  n = x.shape[0]
  eps = 10 * jnp.finfo(x.dtype).eps
  if live is None:
    live = jnp.ones((init_means.shape[0],), bool)

  def m_step(resp):
    nk = resp.sum(0) + eps
    means = resp.T @ x / nk[:, None]
    var = resp.T @ (x * x) / nk[:, None] - means**2
    var = jnp.clip(var, 0.0) + reg_covar
    return nk / n, means, var

  def e_step(params):
    weights, means, var = params
    prec = mask[None, :] / var
    quad = ((x * x) @ prec.T - 2.0 * x @ (means * prec).T
            + jnp.sum(means**2 * prec, 1)[None, :])
    logdet = jnp.sum(mask[None, :] * jnp.log(2 * jnp.pi * var), 1)
    logp = jnp.log(weights)[None, :] - 0.5 * (quad + logdet[None, :])
    logp = jnp.where(live[None, :], logp, -jnp.inf)
    norm = jax.scipy.special.logsumexp(logp, axis=1, keepdims=True)
    return jnp.exp(logp - norm), jnp.mean(norm)

  d2 = (jnp.sum((x * mask) ** 2, 1)[:, None]
        - 2.0 * (x * mask) @ init_means.T
        + jnp.sum((init_means * mask) ** 2, 1)[None, :])
  d2 = jnp.where(live[None, :], d2, jnp.inf)
  resp0 = jax.nn.one_hot(jnp.argmin(d2, 1), init_means.shape[0],
                         dtype=x.dtype)
  params0 = m_step(resp0)

  def cond(state):
    it, _, _, change = state
    return (it < max_iter) & (jnp.abs(change) >= tol)

  def body(state):
    it, params, lower, _ = state
    resp, new_lower = e_step(params)
    return it + 1, m_step(resp), new_lower, new_lower - lower

  inf = jnp.asarray(jnp.inf, x.dtype)
  _, params, _, _ = jax.lax.while_loop(
      cond, body, (0, params0, -inf, inf))
  resp, _ = e_step(params)
  return resp


def _nleep_core(f, *, labels, init_index, num_components, num_classes,
                max_classes, max_dim, variance_fraction, max_iter, tol,
                reg_covar):
  del num_classes  # Empty classes add nothing to the joint.
  x = f.astype(_common.float_dtype(f))
  components, variances = preprocess.pca_basis(x, max_dim)
  xc = x - x.mean(0, keepdims=True)
  total = jnp.sum(xc * xc) / max(x.shape[0] - 1, 1)
  cum = jnp.cumsum(variances) / jnp.where(total > 0, total, 1.0)
  keep = jnp.sum(cum <= variance_fraction) + 1
  mask = (jnp.arange(components.shape[1]) < keep).astype(x.dtype)
  z = (xc @ components) * mask[None, :]
  live = jnp.arange(init_index.shape[0]) < num_components
  resp = gmm_diag_em(z, mask, z[init_index], max_iter=max_iter, tol=tol,
                     reg_covar=reg_covar, live=live)
  return leep_from_probs(resp, labels, max_classes)


def nleep_init_index(n: int, num_components: int, seed: int) -> np.ndarray:
  """The documented GMM initialisation: distinct samples as initial means."""
  return np.sort(np.random.default_rng(seed).choice(
      n, size=num_components, replace=False)).astype(np.int32)


def _nleep_prepare(stack, labels, *, num_classes=None, max_classes=None,
                   component_ratio=5, variance_fraction=0.8, max_dim=64,
                   max_iter=100, tol=1e-3, reg_covar=1e-6, seed=0):
  n = stack.shape[1]
  bound, arrays = _common.class_arrays(labels, n, num_classes, max_classes)
  if not 0.0 < variance_fraction <= 1.0:
    raise ValueError(
        f'variance_fraction must be in (0, 1], got {variance_fraction}.')
  num_components = int(min(component_ratio * int(arrays['num_classes']), n))
  # Padded to the bound's component count; the padding starts at sample 0
  # and is never live.
  init_index = np.zeros((int(min(component_ratio * bound, n)),), np.int32)
  init_index[:num_components] = nleep_init_index(n, num_components, seed)
  static = dict(max_classes=bound, max_dim=int(max_dim),
                variance_fraction=float(variance_fraction),
                max_iter=int(max_iter), tol=float(tol),
                reg_covar=float(reg_covar))
  return static, dict(arrays, init_index=init_index,
                      num_components=np.int32(num_components))


LEEP = _batch.Spec('leep', _leep_core, _leep_prepare, kind='source_probs',
                   doc=__doc__)
NCE = _batch.Spec('nce', _nce_core, _nce_prepare, kind='source_labels',
                  doc=__doc__)
NLEEP = _batch.Spec('nleep', _nleep_core, _nleep_prepare, doc=__doc__)
