r"""Speed: every estimator batched in JAX vs a straightforward per-model NumPy.

The issue's size is 64 models x 2,000 samples x 768 dims x 100 classes:

  .venv/bin/python experiments/benchmarks/estimators_bench.py \
      --out=runs/estimators_bench

On a contended CPU both sides run interleaved in one process (JAX call, then
the NumPy loop, `--repeats` times) and the table reports medians and their
ratio. The NumPy side is timed on `--numpy_models` models (default 4) and scaled
to m: its per-model cost does not depend on m, and a full 64-model NumPy loop
takes tens of minutes for TransRate/SFDA. NumPy runs in float64, as the
released implementations do (`features.astype(np.float64)`); JAX in float32.

On an accelerator (imports neither jraph nor tensorflow-datasets), from the
repository root:

  R=experiments/benchmarks/results
  PYTHONPATH=. python experiments/benchmarks/estimators_bench.py --out=DIR \
      --numpy_models=0 --numpy_json=$R/estimators_cpu.json,\
$R/estimators_cpu_leep_nce.json,$R/estimators_cpu_parc_nleep_m8.json,\
$R/estimators_cpu_linear_probe_m8.json

(later files override earlier ones for the same estimator; they hold the CPU
NumPy seconds per model measured on the 2-core development machine.)

compares the device's JAX times with the NumPy times measured on the CPU
machine (same n, d, C, read from those JSONs); without `--numpy_models=0` it
also times NumPy on the host it runs on. Writes DIR/results.json and
DIR/results.md. The JAX time is the end-to-end `score_models` call on a NumPy
array (validation, transfer, compute, result back); compile time is reported
separately (first call).
"""

import json
import os
import platform
import sys
import time

from absl import app
from absl import flags
import jax
import numpy as np
import scipy.linalg
import scipy.optimize
import scipy.special
import scipy.stats

try:
  from fennec_jax import estimators  # pylint: disable=g-import-not-at-top
except ImportError as import_error:
  # An accelerator host may lack a dependency that only other parts of the
  # package need (fennec_jax/__init__.py re-exports the whole API, e.g.
  # archi2vec needs networkx). The estimators need jax/optax/scipy only, so
  # load the package as a bare namespace and import them directly.
  import types  # pylint: disable=g-import-not-at-top
  _PKG = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..',
                      'fennec_jax')
  for _name in [m for m in sys.modules if m.startswith('fennec_jax')]:
    del sys.modules[_name]
  _bare = types.ModuleType('fennec_jax')
  _bare.__path__ = [os.path.normpath(_PKG)]
  sys.modules['fennec_jax'] = _bare
  print(f'note: `import fennec_jax` failed ({import_error}); loaded '
        'fennec_jax.estimators without the package __init__.', flush=True)
  from fennec_jax import estimators  # pylint: disable=g-import-not-at-top

_OUT = flags.DEFINE_string('out', 'runs/estimators_bench', 'Output directory.')
_M = flags.DEFINE_integer('num_models', 64, 'Models (m).')
_N = flags.DEFINE_integer('num_samples', 2000, 'Samples (n).')
_D = flags.DEFINE_integer('dim', 768, 'Feature width (d).')
_C = flags.DEFINE_integer('num_classes', 100, 'Classes (C).')
_SRC = flags.DEFINE_integer('source_classes', 1000,
                            'Source classes for LEEP/NCE.')
_EST = flags.DEFINE_list(
    'estimators', ['logme', 'hscore', 'fda', 'reg_hscore', 'leep', 'nce',
                   'gbc', 'knn', 'transrate', 'sfda', 'parc', 'nleep',
                   'linear_probe'], 'Estimators to time.')
_REPEATS = flags.DEFINE_integer('repeats', 3, 'Interleaved repetitions.')
_NP_MODELS = flags.DEFINE_integer(
    'numpy_models', 4, 'Models the NumPy side is timed on (scaled to m); 0 '
    'skips NumPy.')
_NP_JSON = flags.DEFINE_list(
    'numpy_json', None, 'results.json file(s) of CPU runs at the same n, d, '
    'C: their per-model NumPy times give the cross-device ratio.')
_SEED = flags.DEFINE_integer('seed', 0, 'Data seed.')



# --------------------------------------------------------------------------
# Straightforward per-model NumPy versions (float64, as released code).
# --------------------------------------------------------------------------


def np_logme(f, y):
  """LogME, TPAMI fixed-point version, one Python loop over classes."""
  f = f.astype(np.float64)
  n, d = f.shape
  s, v = np.linalg.eigh(f.T @ f)
  s = np.clip(s, 0, None)
  keep = s > 1e-10 * s.max()
  evidences = []
  for c in range(y.max() + 1):
    yc = (y == c).astype(np.float64)
    z = v.T @ (f.T @ yc)
    x2 = np.where(keep, z**2 / np.where(keep, s, 1), 0)
    res_x2 = yc @ yc - x2.sum()
    alpha, beta = 1.0, 1.0
    for _ in range(11):
      t = alpha / beta
      gamma = np.sum(s / (s + t))
      m2 = np.sum(s * x2 / (t + s) ** 2)
      res2 = np.sum(x2 * t**2 / (t + s) ** 2) + res_x2
      alpha, beta = gamma / (m2 + 1e-5), (n - gamma) / (res2 + 1e-5)
      if abs(alpha / beta - t) / t <= 1e-3:
        break
    t = alpha / beta
    m2 = np.sum(s * x2 / (t + s) ** 2)
    res2 = np.sum(x2 * t**2 / (t + s) ** 2) + res_x2
    ev = (d / 2 * np.log(alpha) + n / 2 * np.log(beta) - n / 2 * np.log(
        2 * np.pi) - beta / 2 * res2 - alpha / 2 * m2 -
          0.5 * np.sum(np.log(alpha + beta * s)))
    evidences.append(ev / n)
  return np.mean(evidences)


def _g(f, y):
  g = np.zeros_like(f)
  for c in range(y.max() + 1):
    g[y == c] = f[y == c].mean(0)
  return g


def np_hscore(f, y):
  f = f.astype(np.float64)
  return np.trace(np.linalg.pinv(np.cov(f, rowvar=False), rcond=1e-15)
                  @ np.cov(_g(f, y), rowvar=False))


def np_reg_hscore(f, y):
  f = f.astype(np.float64)
  f = f - f.mean(0)
  n, d = f.shape
  emp = f.T @ f / n
  mu = np.trace(emp) / d
  f2 = f**2
  beta = (np.sum(f2.T @ f2) / n - np.sum(emp**2)) / (d * n)
  delta = np.sum((emp - mu * np.eye(d)) ** 2) / d
  a = min(beta, delta) / delta
  cov = (1 - a) * emp + a * mu * np.eye(d)
  return np.trace(np.linalg.pinv(cov, rcond=1e-15)
                  @ ((1 - a) * np.cov(_g(f, y), rowvar=False)))


def np_transrate(f, y, eps=1e-4):
  f = f.astype(np.float64)
  z = f - f.mean(0)

  def rate(z):
    n, d = z.shape
    return 0.5 * np.linalg.slogdet(np.eye(d) + z.T @ z / (n * eps))[1]

  c = y.max() + 1
  return rate(z) - sum(rate(z[y == k]) for k in range(c)) / c


def np_gbc(f, y):
  f = f.astype(np.float64)
  c = y.max() + 1
  means = [f[y == k].mean(0) for k in range(c)]
  var = [np.maximum(f[y == k].var(0), 1e-4) for k in range(c)]
  total = 0.0
  for i in range(c):
    for j in range(c):
      if i != j:
        v = (var[i] + var[j]) / 2
        db = np.sum((means[i] - means[j]) ** 2 / v) / 8 + 0.5 * (
            np.sum(np.log(v)) - 0.5 * np.sum(np.log(var[i])) -
            0.5 * np.sum(np.log(var[j])))
        total += np.exp(-db)
  return -total


def _lda_fit(x, y, shrinkage=None):
  n, d = x.shape
  c = y.max() + 1
  priors = np.bincount(y) / n
  means = np.stack([x[y == k].mean(0) for k in range(c)])
  sw = sum(priors[k] * np.cov(x[y == k], rowvar=False, bias=True)
           for k in range(c))
  if shrinkage is None:
    v = sw.sum(1)
    for _ in range(3):
      u = sw @ v / np.linalg.norm(sw @ v)
      v = sw @ u / np.linalg.norm(sw @ u)
    shrinkage = max(np.exp(-5 * v @ sw @ u), 1e-10)
  shrunk = lambda s: (1 - shrinkage) * s + shrinkage * np.trace(s) / d * np.eye(
      d)
  st = shrunk(np.cov(x, rowvar=False, bias=True))
  sws = shrunk(sw)
  _, evecs = scipy.linalg.eigh(st - sws, sws)
  coef = means @ evecs @ evecs.T
  intercept = -0.5 * np.diag(means @ coef.T) + np.log(priors)
  return scipy.special.softmax(x @ coef.T + intercept, axis=1), shrinkage


def np_sfda(f, y):
  x = f.astype(np.float64).copy()
  c = y.max() + 1
  prob, shrinkage = _lda_fit(x, y)
  prob = scipy.special.softmax(prob, axis=1)
  means = np.stack([x[y == k].mean(0) for k in range(c)])
  for k in range(c):
    p = prob[y == k, k][:, None]
    x[y == k] = p * x[y == k] + (1 - p) * (means.sum(0) - means[k]) / (c - 1)
  prob, _ = _lda_fit(x, y, shrinkage)
  return prob[np.arange(len(y)), y].mean()


def np_fda(f, y, dim=32):
  f = f.astype(np.float64)
  fc = f - f.mean(0)
  _, _, vt = np.linalg.svd(fc, full_matrices=False)
  x = fc @ vt[:dim].T
  n, k = x.shape
  c = y.max() + 1
  means = np.stack([x[y == j].mean(0) for j in range(c)])
  resid = x - means[y]
  sw = resid.T @ resid / (n - c)
  cov = sw + 1e-6 * max(np.trace(sw) / k, np.sum(x * x) / (n * k)) * np.eye(k)
  coef = np.linalg.solve(cov, means.T).T
  logits = x @ coef.T - 0.5 * np.sum(means * coef, 1) + np.log(
      np.bincount(y) / n)
  return scipy.special.softmax(logits, axis=1)[np.arange(n), y].mean()


def np_leep(probs, y):
  probs = probs.astype(np.float64)
  n = len(y)
  joint = np.zeros((y.max() + 1, probs.shape[1]))
  for k in range(y.max() + 1):
    joint[k] = probs[y == k].sum(0) / n
  cond = joint / joint.sum(0, keepdims=True)
  return np.mean(np.log(np.sum(probs @ cond.T * np.eye(y.max() + 1)[y], 1)))


def np_nce(z, y):
  n = len(y)
  joint = np.zeros((y.max() + 1, z.max() + 1))
  np.add.at(joint, (y, z), 1.0 / n)
  pz = joint.sum(0, keepdims=True)
  nz = joint > 0
  return np.sum(joint[nz] * np.log((joint / np.where(pz > 0, pz, 1))[nz]))


def np_knn(f, y, k=5):
  f = f.astype(np.float64)
  d2 = np.sum(f**2, 1)[:, None] - 2 * f @ f.T + np.sum(f**2, 1)[None]
  np.fill_diagonal(d2, np.inf)
  nbr = np.argsort(d2, 1)[:, :k]
  c = y.max() + 1
  w = 1 + (k - np.arange(k)) / (k * (k + 1))
  votes = np.zeros((len(y), c))
  for r in range(k):
    votes[np.arange(len(y)), y[nbr[:, r]]] += w[r]
  return np.mean(votes.argmax(1) == y)


def np_parc(f, y):
  f = f.astype(np.float64)
  x = (f - f.mean(0)) / f.std(0)
  lower = np.tril_indices(len(y), -1)
  rdm_f = 1 - np.corrcoef(x)
  rdm_y = 1 - np.corrcoef(np.eye(y.max() + 1)[y])
  return 100 * scipy.stats.spearmanr(rdm_f[lower], rdm_y[lower]).correlation


def np_nleep(f, y, ratio=5, max_dim=64, iters=100):
  f = f.astype(np.float64)
  n = len(y)
  fc = f - f.mean(0)
  _, s, vt = np.linalg.svd(fc, full_matrices=False)
  cum = np.cumsum(s**2) / np.sum(s**2)
  keep = min(int(np.sum(cum[:max_dim] <= 0.8)) + 1, max_dim)
  x = fc @ vt[:keep].T
  k = min(ratio * (y.max() + 1), n)
  init = np.sort(np.random.default_rng(0).choice(n, k, replace=False))
  d2 = np.sum(x**2, 1)[:, None] - 2 * x @ x[init].T + np.sum(x[init]**2, 1)
  resp = np.eye(k)[d2.argmin(1)]
  lower = -np.inf
  for _ in range(iters + 1):
    nk = resp.sum(0) + 1e-15
    means = resp.T @ x / nk[:, None]
    var = np.maximum(resp.T @ x**2 / nk[:, None] - means**2, 0) + 1e-6
    logp = (np.log(nk / n) - 0.5 * ((x**2) @ (1 / var).T - 2 * x @ (
        means / var).T + np.sum(means**2 / var, 1) + np.sum(
            np.log(2 * np.pi * var), 1)))
    norm = scipy.special.logsumexp(logp, 1, keepdims=True)
    resp = np.exp(logp - norm)
    if abs(norm.mean() - lower) < 1e-3:
      break
    lower = norm.mean()
  return np_leep(resp, y)


def np_linear_probe(f, y, l2=1e-2, steps=100):
  from fennec_jax.data import probe  # pylint: disable=g-import-not-at-top
  f = f.astype(np.float64)
  train = probe.balanced_split(y, 0.2, seed=0)
  x = (f - f[train].mean(0)) / np.where(f[train].std(0) > 0,
                                         f[train].std(0), 1)
  d, c = x.shape[1], y.max() + 1
  onehot = np.eye(c)[y[train]]

  def loss_grad(theta):
    w, b = theta[:d * c].reshape(d, c), theta[d * c:]
    logits = x[train] @ w + b
    logp = scipy.special.log_softmax(logits, 1)
    g = (np.exp(logp) - onehot) / len(onehot)
    return (-np.sum(onehot * logp) / len(onehot) + 0.5 * l2 * np.sum(w * w),
            np.concatenate([(x[train].T @ g + l2 * w).ravel(), g.sum(0)]))

  res = scipy.optimize.minimize(loss_grad, np.zeros(d * c + c), jac=True,
                                method='L-BFGS-B', options=dict(maxiter=steps))
  w, b = res.x[:d * c].reshape(d, c), res.x[d * c:]
  return np.mean((np.argmax(x @ w + b, 1) == y)[~train])


NUMPY = dict(logme=np_logme, hscore=np_hscore, reg_hscore=np_reg_hscore,
             transrate=np_transrate, gbc=np_gbc, sfda=np_sfda, fda=np_fda,
             leep=np_leep, nce=np_nce, knn=np_knn, parc=np_parc,
             nleep=np_nleep, linear_probe=np_linear_probe)


# --------------------------------------------------------------------------


def make_data(m, n, d, c, src, seed, with_source=True):
  """Synthetic zoo: class structure of varying strength per model."""
  rng = np.random.default_rng(seed)
  y = np.arange(n) % c
  feats = rng.standard_normal((m, n, d), dtype=np.float32)
  strength = np.linspace(0.1, 1.0, m, dtype=np.float32)
  for i in range(m):
    feats[i] += strength[i] * rng.standard_normal((c, d), dtype=np.float32)[y]
  if not with_source:
    return feats, None, None, y
  logits = rng.standard_normal((m, n, src), dtype=np.float32)
  logits[:, np.arange(n), (y * 7) % src] += 4.0 * strength[:, None]
  probs = scipy.special.softmax(logits, axis=-1).astype(np.float32)
  source_labels = np.argmax(logits, -1).astype(np.int32)
  return feats, probs, source_labels, y


def _input_for(name, feats, probs, source_labels):
  kind = estimators.registry.get_spec(name).kind
  return {'features': feats, 'source_probs': probs,
          'source_labels': source_labels}[kind]


def _time(fn):
  start = time.perf_counter()
  out = fn()
  return time.perf_counter() - start, out


def main(argv):
  del argv
  m, n, d, c = _M.value, _N.value, _D.value, _C.value
  feats, probs, source_labels, y = make_data(
      m, n, d, c, _SRC.value, _SEED.value,
      with_source=bool({'leep', 'nce'} & set(_EST.value)))
  cpu_numpy = {}  # estimator -> NumPy seconds per model on the CPU host.
  for path in _NP_JSON.value or []:
    with open(path) as f:
      ref = json.load(f)
    size = dict(ref['size'])
    del size['m']  # NumPy cost per model does not depend on m.
    if size != dict(n=n, d=d, c=c, source_classes=_SRC.value):
      raise ValueError(f'{path} was run at size {ref["size"]}.')
    cpu_numpy.update({r['estimator']: r['numpy_s_per_model']
                      for r in ref['rows'] if r.get('numpy_s_per_model')})
  device = jax.devices()[0]
  rows = []
  for name in _EST.value:
    data = _input_for(name, feats, probs, source_labels)
    compile_s, scores = _time(lambda: estimators.score_models(name, data, y))
    jax_times, np_times = [], []
    np_scores = []
    k = min(_NP_MODELS.value, m)
    for _ in range(_REPEATS.value):
      t, scores = _time(lambda: estimators.score_models(name, data, y))
      jax_times.append(t)
      if k:
        t, np_scores = _time(
            lambda: [NUMPY[name](data[i], y) for i in range(k)])
        np_times.append(t)
    row = dict(estimator=name, jax_s=float(np.median(jax_times)),
               jax_first_call_s=compile_s, jax_all_s=jax_times)
    if k:
      row['numpy_s_per_model'] = float(np.median(np_times)) / k
      row['numpy_s_scaled'] = row['numpy_s_per_model'] * m
      row['numpy_models_timed'] = k
      row['ratio_same_host'] = row['numpy_s_scaled'] / row['jax_s']
      row['max_abs_diff_vs_numpy'] = float(
          np.max(np.abs(np.asarray(np_scores) - scores[:k])))
    if name in cpu_numpy:
      row['cpu_numpy_s_scaled'] = cpu_numpy[name] * m
      row['ratio_vs_cpu_numpy'] = cpu_numpy[name] * m / row['jax_s']
    rows.append(row)
    print(json.dumps(row), flush=True)
  result = dict(
      size=dict(m=m, n=n, d=d, c=c, source_classes=_SRC.value),
      device=f'{device.platform}: {device.device_kind}',
      device_count=jax.device_count(), jax_version=jax.__version__,
      host=platform.node(), cpu_count=os.cpu_count(),
      jraph_imported='jraph' in sys.modules,
      tfds_imported='tensorflow_datasets' in sys.modules,
      numpy_blas_threads=os.environ.get('OPENBLAS_NUM_THREADS', 'default'),
      repeats=_REPEATS.value, rows=rows)
  os.makedirs(_OUT.value, exist_ok=True)
  with open(os.path.join(_OUT.value, 'results.json'), 'w') as f:
    json.dump(result, f, indent=1)
  lines = [f'# Estimators: {m} models x {n} samples x {d} dims x {c} classes',
           f'JAX device: {result["device"]} (jax {jax.__version__}); NumPy '
           f'float64 on this host, {_NP_MODELS.value} models timed and '
           f'scaled to {m}.', '',
           '| estimator | JAX s (median) | first call s | NumPy s (scaled) '
           '| ratio | ratio vs CPU NumPy JSON |', '|---|---|---|---|---|---|']
  for r in rows:
    lines.append(
        f"| {r['estimator']} | {r['jax_s']:.3f} | {r['jax_first_call_s']:.2f}"
        f" | {r.get('numpy_s_scaled', float('nan')):.2f} | "
        f"{r.get('ratio_same_host', float('nan')):.1f}x | "
        f"{r.get('ratio_vs_cpu_numpy', float('nan')):.1f}x |")
  with open(os.path.join(_OUT.value, 'results.md'), 'w') as f:
    f.write('\n'.join(lines) + '\n')
  print('\n'.join(lines))


if __name__ == '__main__':
  app.run(main)
