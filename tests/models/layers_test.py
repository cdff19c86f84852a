"""PyTorch-compatible layers against NumPy loops written from PyTorch's docs."""

import importlib.util
import math

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np

from fennec_jax.models import layers

_HAS_TORCH = importlib.util.find_spec('torch') is not None


def _np_pool(x, k, s, p, ceil_mode, op):
  """Naive NHWC pooling: windows start at i*s - p, PyTorch's size rule."""
  n, h, w, c = x.shape
  outs = []
  for size in (h, w):
    num = (size + 2 * p - k) / s
    o = (math.ceil(num) if ceil_mode else math.floor(num)) + 1
    if ceil_mode and (o - 1) * s >= size + p:
      o -= 1
    outs.append(o)
  out = np.zeros((n, outs[0], outs[1], c))
  for i in range(outs[0]):
    for j in range(outs[1]):
      r0, c0 = i * s - p, j * s - p
      if op == 'max':
        win = x[:, max(r0, 0):r0 + k, max(c0, 0):c0 + k]
        out[:, i, j] = win.max(axis=(1, 2))
      else:  # avg, count_include_pad=True: divide by k*k (window in padding).
        win = x[:, max(r0, 0):min(r0 + k, h), max(c0, 0):min(c0 + k, w)]
        out[:, i, j] = win.sum(axis=(1, 2)) / (k * k)
  return out


class PoolTest(parameterized.TestCase):

  # PyTorch allows padding up to half the kernel.
  @parameterized.parameters(
      (size, k, s, p, ceil) for size in (7, 8, 13) for k in (2, 3)
      for s in (1, 2) for p in (0, 1) for ceil in (False, True) if p <= k // 2)
  def test_max_pool_matches_pytorch_rule(self, size, k, s, p, ceil_mode):
    x = np.random.default_rng(size).standard_normal((1, size, size + 1, 2))
    x = x - 10.0  # all-negative input: zero padding would win a max.
    got = layers.max_pool(jnp.asarray(x, jnp.float32), k, s, p, ceil_mode)
    np.testing.assert_allclose(got, _np_pool(x, k, s, p, ceil_mode, 'max'),
                               rtol=1e-6)

  @parameterized.parameters((5, 2, 0), (5, 3, 0), (5, 3, 1), (8, 3, 1))
  def test_avg_pool_counts_padding(self, size, k, p):
    x = np.random.default_rng(size).standard_normal((2, size, size, 3))
    got = layers.avg_pool(jnp.asarray(x, jnp.float32), k, 1, p)
    np.testing.assert_allclose(got, _np_pool(x, k, 1, p, False, 'avg'),
                               rtol=1e-5, atol=1e-6)

  @parameterized.parameters((5, 3), (6, 6), (1, 6), (7, 2))
  def test_adaptive_avg_pool_bins(self, size, out):
    x = np.random.default_rng(0).standard_normal((1, size, size, 2))
    got = layers.adaptive_avg_pool(jnp.asarray(x, jnp.float32), out)
    for i in range(out):
      for j in range(out):
        r0, r1 = (i * size) // out, -(-(i + 1) * size // out)
        c0, c1 = (j * size) // out, -(-(j + 1) * size // out)
        np.testing.assert_allclose(got[0, i, j],
                                   x[0, r0:r1, c0:c1].mean(axis=(0, 1)),
                                   rtol=1e-5, atol=1e-6)


class BatchNormTest(absltest.TestCase):

  def test_train_and_eval_follow_pytorch(self):
    x = np.random.default_rng(0).normal(2.0, 3.0, (4, 3, 5, 6))
    bn = layers.BatchNorm()
    variables = bn.init(jax.random.key(0), jnp.ones((1, 1, 1, 6)))
    params = {'scale': np.linspace(0.5, 1.5, 6).astype(np.float32),
              'bias': np.linspace(-1, 1, 6).astype(np.float32)}
    stats = {'mean': np.full(6, 0.5, np.float32),
             'var': np.full(6, 2.0, np.float32)}
    variables = {'params': params, 'batch_stats': stats}
    y, upd = bn.apply(variables, jnp.asarray(x, jnp.float32), train=True,
                      mutable=['batch_stats'])
    mean, var = x.mean(axis=(0, 1, 2)), x.var(axis=(0, 1, 2))
    n = 4 * 3 * 5
    expected = ((x - mean) / np.sqrt(var + 1e-5) * params['scale']
                + params['bias'])
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-4)
    # torch: running = (1 - 0.1) * running + 0.1 * batch, unbiased variance.
    np.testing.assert_allclose(upd['batch_stats']['mean'],
                               0.9 * 0.5 + 0.1 * mean, rtol=1e-5)
    np.testing.assert_allclose(upd['batch_stats']['var'],
                               0.9 * 2.0 + 0.1 * var * n / (n - 1), rtol=1e-5)
    y_eval = bn.apply(variables, jnp.asarray(x, jnp.float32))
    np.testing.assert_allclose(
        y_eval, (x - 0.5) / np.sqrt(2.0 + 1e-5) * params['scale']
        + params['bias'], rtol=1e-4, atol=1e-4)


@absltest.skipUnless(_HAS_TORCH, 'needs torch ([interop]).')
class AgainstTorchTest(parameterized.TestCase):

  def test_batchnorm_train_step_equals_torch(self):
    import torch  # pylint: disable=g-import-not-at-top
    x = np.random.default_rng(1).normal(1.0, 2.0, (3, 6, 5, 4))
    tbn = torch.nn.BatchNorm2d(6)
    with torch.no_grad():
      tbn.weight.uniform_(0.5, 1.5)
      tbn.bias.uniform_(-1, 1)
      ref = tbn.train()(torch.tensor(x, dtype=torch.float32)).numpy()
    variables = {'params': {'scale': tbn.weight.detach().numpy(),
                            'bias': tbn.bias.detach().numpy()},
                 'batch_stats': {'mean': np.zeros(6, np.float32),
                                 'var': np.ones(6, np.float32)}}
    y, upd = layers.BatchNorm().apply(
        variables, jnp.asarray(x.transpose(0, 2, 3, 1), jnp.float32),
        train=True, mutable=['batch_stats'])
    np.testing.assert_allclose(y, ref.transpose(0, 2, 3, 1), rtol=1e-4,
                               atol=1e-5)
    np.testing.assert_allclose(upd['batch_stats']['mean'],
                               tbn.running_mean.numpy(), rtol=1e-5)
    np.testing.assert_allclose(upd['batch_stats']['var'],
                               tbn.running_var.numpy(), rtol=1e-5)

  @parameterized.parameters((9, 3, 2, 0, True), (10, 3, 2, 1, True),
                            (7, 2, 2, 0, True), (8, 3, 1, 1, True),
                            (11, 3, 2, 1, False))
  def test_max_pool_equals_torch(self, size, k, s, p, ceil_mode):
    import torch  # pylint: disable=g-import-not-at-top
    x = np.random.default_rng(size).standard_normal((1, 2, size, size + 2))
    ref = torch.nn.functional.max_pool2d(
        torch.tensor(x, dtype=torch.float32), k, s, p,
        ceil_mode=ceil_mode).numpy().transpose(0, 2, 3, 1)
    got = layers.max_pool(jnp.asarray(x.transpose(0, 2, 3, 1), jnp.float32),
                          k, s, p, ceil_mode)
    np.testing.assert_array_equal(got, ref)


class DropPathTest(absltest.TestCase):

  def test_drops_whole_samples_and_rescales(self):
    x = jnp.ones((64, 2, 2, 3))
    dp = layers.DropPath(0.25)
    np.testing.assert_array_equal(dp.apply({}, x), x)
    y = np.asarray(dp.apply({}, x, deterministic=False,
                            rngs={'dropout': jax.random.key(0)}))
    per_sample = y.reshape(64, -1)
    # Each sample is either dropped entirely or scaled by 1 / keep.
    self.assertTrue(np.all((per_sample == 0) | (per_sample == 1 / 0.75)))
    self.assertTrue(np.all(per_sample.min(1) == per_sample.max(1)))
    kept = int((per_sample[:, 0] > 0).sum())
    self.assertBetween(kept, 32, 60)


class ConverterTest(absltest.TestCase):

  def test_transposes_and_reports_bad_keys(self):
    target = {'params': {'conv': {'kernel': jnp.zeros((3, 2, 4, 5))},
                         'fc': {'kernel': jnp.zeros((5, 7)),
                                'bias': jnp.zeros(7)}}}
    conv_w = np.arange(5 * 4 * 3 * 2, dtype=np.float32).reshape(5, 4, 3, 2)
    fc_w = np.arange(35, dtype=np.float32).reshape(7, 5)
    state = {'conv.weight': conv_w, 'fc.weight': fc_w,
             'fc.bias': np.ones(7, np.float32),
             'bn.num_batches_tracked': np.zeros(())}
    out = layers.torch_to_flax(state, target, '.'.join)
    # OIHW -> HWIO and (out, in) -> (in, out).
    self.assertEqual(out['params']['conv']['kernel'][1, 0, 2, 4],
                     conv_w[4, 2, 1, 0])
    np.testing.assert_array_equal(out['params']['fc']['kernel'], fc_w.T)
    bad = dict(state)
    del bad['fc.bias']
    bad['fc.weight'] = fc_w.T
    bad['head.weight'] = fc_w
    with self.assertRaisesRegex(
        ValueError, r'my ckpt does not match.*1 missing \[fc\.bias.*'
        r'1 unexpected \[head\.weight\].*1 mis-shaped \[fc\.weight: got '
        r'\(7, 5\)'):
      layers.torch_to_flax(bad, target, '.'.join, source='my ckpt')

  def test_random_variables_shapes_and_ranges(self):
    shapes = {'params': {'c': {'kernel': jax.ShapeDtypeStruct((3, 3, 4, 8),
                                                              jnp.float32)}},
              'batch_stats': {'b': {'var': jax.ShapeDtypeStruct(
                  (8,), jnp.float32)}}}
    v = layers.random_variables(shapes, seed=0)
    self.assertEqual(v['params']['c']['kernel'].shape, (3, 3, 4, 8))
    self.assertTrue(np.all(v['batch_stats']['b']['var'] >= 0.5))
    std = v['params']['c']['kernel'].std()
    self.assertBetween(std, 0.5 / 6, 2 / 6)  # ~1/sqrt(fan_in = 36)


if __name__ == '__main__':
  absltest.main()
