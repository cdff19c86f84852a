"""Sharded extraction: 8 fake devices equal 1 device; one compile; resizing."""

from absl.testing import absltest
import jax
import numpy as np

from fennec_jax import models
from fennec_jax import proxy
from fennec_jax import sharding
from fennec_jax.proxy import extract

# Inception-style normalization; crop_fraction 1 keeps 32x32 inputs unchanged.
PREP = extract.Preprocessing(size=(32, 32), mean=(0.5, 0.4, 0.3),
                             std=(0.2, 0.25, 0.3), interpolation='bilinear',
                             crop_fraction=1.0)


def _model():
  model = models.get_model('vit_test_tiny', num_classes=0)
  variables = jax.jit(model.init)(jax.random.key(0),
                                  np.zeros((1, 32, 32, 3), np.float32))
  return model, variables


def _images(n, h=32, w=32, c=3, seed=0):
  return np.random.default_rng(seed).integers(0, 256, (n, h, w, c), np.uint8)


def _normalize(images):
  """NumPy reference of the on-device normalization (no resize)."""
  x = images.astype(np.float64) / 255.0
  return ((x - np.array(PREP.mean)) / np.array(PREP.std)).astype(np.float32)


class ExtractTest(absltest.TestCase):

  def test_eight_devices_equal_one_device_and_direct_apply(self):
    self.assertEqual(jax.device_count(), 8)  # tests/conftest.py
    model, variables = _model()
    apply = lambda v, x: model.apply(v, x, train=False)
    images = _images(21)  # 3 batches of 8; the last padded with 3 rows.
    eight = extract.FeatureExtractor(apply, variables, PREP, batch_size=8,
                                     max_traces=1)
    one = extract.FeatureExtractor(
        apply, variables, PREP, batch_size=8,
        mesh=extract.make_mesh(devices=jax.devices()[:1]))
    f8, f1 = eight(images), one(images)
    self.assertEqual(f8.shape, (21, 32))
    np.testing.assert_allclose(f8, f1, rtol=1e-5, atol=1e-5)
    want = jax.jit(model.apply)(variables, _normalize(images))
    np.testing.assert_allclose(f8, want, rtol=1e-5, atol=1e-5)
    # A second call with the same shapes reuses the compiled step
    # (max_traces=1 would raise on a retrace).
    np.testing.assert_array_equal(eight(images[:5]), f8[:5])

  def test_mesh_is_the_package_mesh(self):
    self.assertIs(proxy.make_mesh, sharding.make_mesh)
    eight = extract.FeatureExtractor(lambda v, x: x, {'w': np.ones(3)}, PREP,
                                     batch_size=8)
    self.assertEqual(eight.mesh.shape, {sharding.DATA_AXIS: 8})
    self.assertTrue(eight.variables['w'].sharding.is_fully_replicated)

  def test_batch_size_not_divisible_by_devices(self):
    with self.assertRaisesRegex(ValueError, r'batch_size=12 must be a '
                                r'positive multiple of the 8 devices'):
      extract.FeatureExtractor(lambda v, x: x, {}, PREP, batch_size=12)

  def test_channels_converted_on_device(self):
    gray = _images(2, c=1)
    rgb = np.repeat(gray, 3, axis=-1)
    rgba = np.concatenate([rgb, _images(2, c=1, seed=5)], axis=-1)
    ref = np.asarray(extract.to_model_input(rgb, PREP))
    np.testing.assert_allclose(extract.to_model_input(gray, PREP), ref)
    np.testing.assert_allclose(extract.to_model_input(rgba, PREP), ref)
    np.testing.assert_allclose(ref, _normalize(rgb), rtol=1e-6, atol=1e-6)

  def test_resize_and_center_crop_geometry(self):
    prep = extract.Preprocessing(size=(16, 16), mean=(0, 0, 0),
                                 std=(1, 1, 1), interpolation='bilinear',
                                 crop_fraction=0.5)
    # Shorter side 24 -> 16 / 0.5 = 32, so 24x48 becomes 32x64, then the
    # center 16x16 is cropped: rows 8..24, columns 24..40.
    self.assertEqual(prep.geometry(24, 48), (32, 64, 8, 24))
    # A horizontal ramp stays a ramp: after cropping, the columns are the
    # middle of the (upsampled) ramp, so the mean is the ramp's center.
    ramp = np.tile(np.linspace(0, 255, 48).astype(np.uint8), (1, 24, 1))
    img = np.repeat(ramp[..., None], 3, axis=-1)
    out = np.asarray(extract.to_model_input(img, prep))
    self.assertEqual(out.shape, (1, 16, 16, 3))
    self.assertAlmostEqual(float(out.mean()), 0.5, delta=0.02)
    self.assertTrue(np.all(np.diff(out[0, 0, :, 0]) > 0))
    # Constant images stay constant under resize (a wrong kernel would not).
    const = np.full((1, 24, 48, 3), 200, np.uint8)
    np.testing.assert_allclose(extract.to_model_input(const, prep),
                               200 / 255, atol=1e-6)
    # The host path (PIL) gives nearly the same pixels as the device path.
    host = extract.host_resize(img[0], prep).astype(np.float32) / 255
    np.testing.assert_allclose(host, out[0], atol=0.02)

  def test_mixed_sizes_resized_on_host(self):
    model, variables = _model()
    prep = extract.Preprocessing(size=(32, 32), interpolation='bilinear')
    fx = extract.FeatureExtractor(lambda v, x: model.apply(v, x), variables,
                                  prep, batch_size=8)
    imgs = [_images(1, 40, 50)[0], _images(1, 32, 32, c=1)[0],
            _images(1, 64, 48, c=4)[0]]
    got = fx(imgs)
    want = np.stack([fx(extract.host_resize(im, prep)[None])[0]
                     for im in imgs])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    with self.assertRaisesRegex(ValueError, 'must be uint8'):
      fx([np.zeros((8, 8, 3), np.float32)])


if __name__ == '__main__':
  absltest.main()
