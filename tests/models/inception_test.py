"""GoogLeNet / Inception-v3: torchvision counts (no aux heads) and parity."""

import importlib.util

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np

from fennec_jax import models
from fennec_jax.models import inception

_HAS_TORCH = (importlib.util.find_spec('torch') is not None
              and importlib.util.find_spec('torchvision') is not None)


class InceptionTest(parameterized.TestCase):

  @parameterized.named_parameters(
      # torchvision 0.29.1, aux_logits=False: sum(p.numel() ...).
      ('googlenet', 'googlenet', 6_624_904, 1024),
      ('inception_v3', 'inception_v3', 23_834_568, 2048),
  )
  def test_counts_and_feature_width(self, name, count, width):
    self.assertEqual(models.num_params(name), count)
    self.assertEqual(models.get_model(name).num_features, width)
    shapes = models.init_shapes(name, num_classes=0)
    out = jax.eval_shape(models.get_model(name, num_classes=0).apply, shapes,
                         jax.ShapeDtypeStruct((2, *models.get_spec(
                             name).input_shape), jnp.float32))
    self.assertEqual(out.shape, (2, width))

  def test_inception_v3_rejects_small_input(self):
    model = models.get_model('inception_v3')
    with self.assertRaisesRegex(ValueError, 'at least 75x75'):
      jax.eval_shape(model.init, jax.random.key(0),
                     jnp.ones((1, 64, 64, 3)))

  def test_transform_input_maps_imagenet_to_half_normalization(self):
    # An image normalized with ImageNet mean/std becomes (pixel - .5) / .5.
    pixels = np.random.default_rng(0).uniform(size=(2, 4, 4, 3))
    mean = np.array([0.485, 0.456, 0.406])
    std = np.array([0.229, 0.224, 0.225])
    got = inception._transform_input(  # pylint: disable=protected-access
        jnp.asarray((pixels - mean) / std, jnp.float32))
    np.testing.assert_allclose(got, (pixels - 0.5) / 0.5, atol=1e-5)

  @parameterized.named_parameters(('googlenet', 'googlenet', 32),
                                  ('inception_v3', 'inception_v3', 75))
  @absltest.skipUnless(_HAS_TORCH, 'needs torch + torchvision ([interop]).')
  def test_parity_with_torchvision(self, name, size):
    import torch  # pylint: disable=g-import-not-at-top
    import torchvision  # pylint: disable=g-import-not-at-top
    torch.manual_seed(0)
    if name == 'googlenet':
      # Pretrained GoogLeNet ships aux heads and transform_input=True.
      tm = torchvision.models.GoogLeNet(aux_logits=True, init_weights=True,
                                        transform_input=True)
      kwargs = {'transform_input': True}
    else:
      tm = torchvision.models.Inception3(aux_logits=True, init_weights=True)
      kwargs = {}
    for m in tm.modules():
      if isinstance(m, torch.nn.BatchNorm2d):
        m.running_mean.uniform_(-0.5, 0.5)
        m.running_var.uniform_(0.5, 2.0)
    tm.eval()
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
      ref = tm(x).numpy()
    variables = inception.torchvision_inception_to_flax(
        tm.state_dict(), models.init_shapes(name))
    out = jax.jit(models.get_model(name, **kwargs).apply)(
        variables, x.numpy().transpose(0, 2, 3, 1))
    self.assertLessEqual(np.max(np.abs(out - ref)) / np.max(np.abs(ref)),
                         1e-4)


if __name__ == '__main__':
  absltest.main()
