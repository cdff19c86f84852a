"""Properties every CNN / hierarchical architecture must have.

Run on the tiny registered variants (real forward passes) so that a wrong
head, a BatchNorm that ignores `train`, or a dtype leak shows up for every
family at once. Exact counts and PyTorch parity live in the per-module tests.
"""

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np

from fennec_jax import models
from fennec_jax.models import layers

# name -> (uses BatchNorm, feature width with num_classes=0)
TINY = {
    'resnet_tiny': (True, 64),
    'resnet_tiny_bottleneck': (True, 64),
    'densenet_tiny': (True, 16 + 2 * 8),  # ((16 + 2*8) // 2) + 2*8
    'mobilenet_v2_tiny': (True, 1280),
    'mnasnet_tiny': (True, 1280),
    'alexnet_tiny': (False, 32),
    'convnext_test': (False, 32),
    'swin_test': (False, 16),
}


def _head_key(name):
  """The one top-level param module that `num_classes=0` removes."""
  full = models.init_shapes(name)['params']
  headless = models.init_shapes(name, num_classes=0)['params']
  removed = sorted(set(full) - set(headless))
  return removed, full, headless


class ArchitecturesTest(parameterized.TestCase):

  @parameterized.named_parameters((n, n) for n in TINY)
  def test_forward_head_and_features(self, name):
    uses_bn, width = TINY[name]
    spec = models.get_spec(name)
    model = models.get_model(name)
    headless_model = models.get_model(name, num_classes=0)
    self.assertEqual(headless_model.num_features, width)
    removed, full, headless = _head_key(name)
    # Dropping the head removes exactly one Dense(num_features, 10) layer.
    self.assertLen(removed, 1)
    self.assertEqual(full[removed[0]]['kernel'].shape, (width, 10))
    jax.tree.map(lambda a, b: self.assertEqual(a.shape, b.shape),
                 {k: v for k, v in full.items() if k != removed[0]}, headless)

    x = jax.random.normal(jax.random.key(0), (2, *spec.input_shape))
    variables = layers.random_variables(models.init_shapes(name), seed=1)
    self.assertEqual(bool(variables.get('batch_stats')), uses_bn)

    @jax.jit
    def run(variables, x):
      logits = model.apply(variables, x)
      trunk = {**variables, 'params': {k: v for k, v in
                                       variables['params'].items()
                                       if k != removed[0]}}
      feats = headless_model.apply(trunk, x)
      train_out, updates = model.apply(
          variables, x, train=True, mutable=['batch_stats'],
          rngs={'dropout': jax.random.key(2)})
      return logits, feats, train_out, updates

    logits, feats, train_out, updates = run(variables, x)
    self.assertEqual(logits.shape, (2, 10))
    self.assertEqual(feats.shape, (2, width))
    self.assertEqual(logits.dtype, jnp.float32)
    self.assertTrue(np.all(np.isfinite(logits)))
    head = variables['params'][removed[0]]
    np.testing.assert_allclose(logits, feats @ head['kernel'] + head['bias'],
                               rtol=1e-4, atol=1e-5)
    if uses_bn:
      # Train mode normalizes with batch statistics and updates running ones.
      self.assertFalse(np.allclose(train_out, logits, atol=1e-4))
      changed = jax.tree.map(lambda a, b: not np.array_equal(a, b),
                             updates['batch_stats'], variables['batch_stats'])
      self.assertTrue(all(jax.tree.leaves(changed)))
    else:
      self.assertEqual(updates, {})

  def test_bfloat16_compute_float32_params(self):
    name = 'resnet_tiny'
    spec = models.get_spec(name)
    x = jax.random.normal(jax.random.key(0), (1, *spec.input_shape))
    model = models.get_model(name)
    variables = layers.random_variables(models.init_shapes(name), seed=1)
    bf16 = models.get_model(name, dtype=jnp.bfloat16)
    shapes = jax.eval_shape(bf16.init, jax.random.key(1), x)
    self.assertEqual({leaf.dtype for leaf in jax.tree.leaves(shapes)},
                     {jnp.dtype(jnp.float32)})
    ref = jax.jit(model.apply)(variables, x)
    out = jax.jit(bf16.apply)(variables, x)
    self.assertEqual(out.dtype, jnp.float32)
    scale = float(np.max(np.abs(ref)))
    # bf16 has an 8-bit mantissa: agree to a few percent, not exactly.
    self.assertLess(float(np.max(np.abs(out - ref))), 0.1 * scale + 1e-3)
    self.assertGreater(float(np.max(np.abs(out - ref))), 0.0)

  def test_unknown_name_lists_valid_names(self):
    with self.assertRaisesRegex(ValueError, 'densenet121.*swin_tiny'):
      models.get_model('densenet122')


if __name__ == '__main__':
  absltest.main()
