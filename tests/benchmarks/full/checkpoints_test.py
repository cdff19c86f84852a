"""Candidates read from torchvision's own file format give torchvision's own
features and source-class probabilities; bad files are named."""

import os
import tempfile

from absl.testing import absltest
from absl.testing import parameterized
import jax
import numpy as np

from fennec_jax.benchmarks.full import catalogue
from fennec_jax.benchmarks.full import checkpoints
from fennec_jax.proxy import extract

try:
  import torch  # pylint: disable=g-import-not-at-top
  import torchvision  # pylint: disable=g-import-not-at-top,unused-import
  _HAS_TORCH = True
except ImportError:
  _HAS_TORCH = False


def _row(arch, file):
  return catalogue.Checkpoint('sfda_group1', arch, 'torchvision', arch,
                              'torchvision', file, 'https://example/x.pth',
                              '')


@absltest.skipUnless(_HAS_TORCH, 'needs torch + torchvision ([interop]).')
class TorchvisionFileTest(parameterized.TestCase):

  def setUp(self):
    super().setUp()
    self.dir = self.enterContext(tempfile.TemporaryDirectory())

  @parameterized.parameters('resnet50', 'mobilenet_v2', 'densenet121')
  def test_features_and_probs_match_torchvision(self, arch):
    row = _row(arch, f'{arch}.pth')
    path = checkpoints.write_tiny_candidate(row, self.dir, seed=3)
    self.assertTrue(os.path.isfile(path))
    cand = checkpoints.load_candidate(
        row, self.dir, overrides=checkpoints.TINY_OVERRIDES[arch],
        image_size=32)
    # The torchvision module that wrote the file, run on the same
    # normalized input.
    tm = checkpoints.tiny_torch_module(arch, seed=3)
    tm.load_state_dict(torch.load(path))
    images = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3),
                                               np.uint8)
    x = np.asarray(extract.to_model_input(images, cand.preprocessing))
    with torch.no_grad():
      logits = tm(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()
      if arch == 'resnet50':
        tm.fc = torch.nn.Identity()
      else:
        tm.classifier = torch.nn.Identity()
      feats = tm(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()
    out = np.asarray(jax.jit(cand.apply)(cand.variables, x))
    d = cand.num_features
    self.assertEqual(d, feats.shape[1])
    np.testing.assert_allclose(out[:, :d], feats, rtol=1e-4, atol=1e-4)
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    np.testing.assert_allclose(out[:, d:], probs, rtol=1e-4, atol=1e-6)

  def test_missing_file_names_path_and_url(self):
    with self.assertRaisesRegex(checkpoints.CheckpointFileError,
                                r'sfda_group1/resnet50 .*nope\.pth.*'
                                r'https://example/x\.pth'):
      checkpoints.load_candidate(_row('resnet50', 'nope.pth'), self.dir)

  def test_wrong_architecture_names_model_and_file(self):
    written = _row('mobilenet_v2', 'm.pth')
    checkpoints.write_tiny_candidate(written, self.dir, seed=0)
    with self.assertRaisesRegex(checkpoints.CheckpointFileError,
                                r'sfda_group1/resnet50 .*m\.pth.*does not '
                                r"fit architecture 'resnet50'"):
      checkpoints.load_candidate(_row('resnet50', 'm.pth'), self.dir,
                                 overrides=checkpoints.TINY_OVERRIDES[
                                     'resnet50'], image_size=32)


  def test_hugging_face_vit_directory(self):
    # A TransferGraph-style row: a transformers ViTForImageClassification
    # directory (safetensors), classifier dropped, [CLS] features.
    import transformers  # pylint: disable=g-import-not-at-top
    torch.manual_seed(0)
    cfg = transformers.ViTConfig(
        hidden_size=32, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=2, image_size=32, patch_size=8,
        layer_norm_eps=1e-6, num_labels=7)
    ref = transformers.ViTForImageClassification(cfg).eval()
    ref.save_pretrained(os.path.join(self.dir, 'hf', 'user__vit'),
                        safe_serialization=True)
    row = catalogue.Checkpoint('transfergraph_image', 'user/vit', 'hf',
                               'vit_test_tiny', 'hf_vit', 'hf/user__vit',
                               'https://huggingface.co/user/vit', '')
    cand = checkpoints.load_candidate(row, self.dir, image_size=32)
    images = np.random.default_rng(1).integers(0, 256, (3, 32, 32, 3),
                                               np.uint8)
    x = np.asarray(extract.to_model_input(images, cand.preprocessing))
    with torch.no_grad():
      want = ref.vit(pixel_values=torch.from_numpy(
          x.transpose(0, 3, 1, 2).copy())).last_hidden_state[:, 0].numpy()
    out = np.asarray(jax.jit(cand.apply)(cand.variables, x))
    self.assertEqual(out.shape, (3, 32))  # No source head: features only.
    np.testing.assert_allclose(out, want, rtol=1e-4, atol=1e-4)


if __name__ == '__main__':
  absltest.main()
