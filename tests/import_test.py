"""Importing fennec_jax must be side-effect free for the research code using it.

Checked in a fresh interpreter: no JAX backend initialized (so no device memory
taken), no absl flags parsed, none defined by fennec_jax modules, no logging handlers installed,
no heavy optional dependency (TensorFlow, tfds, torch) pulled in; and every name
in `__all__` resolves.
"""

import json
import subprocess
import sys

from absl.testing import absltest

_PROBE = r'''
import json, logging, sys
from absl import flags
import fennec_jax
from jax._src import xla_bridge
print(json.dumps({
    'backends': xla_bridge.backends_are_initialized(),
    'parsed': flags.FLAGS.is_parsed(),
    'our_flags': sorted(m for m in flags.FLAGS.flags_by_module_dict()
                       if 'fennec_jax' in m),
    'handlers': len(logging.getLogger().handlers),
    'heavy': [m for m in ('tensorflow', 'tensorflow_datasets', 'torch')
              if m in sys.modules],
    'missing': [n for n in fennec_jax.__all__ if not hasattr(fennec_jax, n)],
}))
'''


class ImportTest(absltest.TestCase):

  def test_import_has_no_side_effects(self):
    out = subprocess.run([sys.executable, '-c', _PROBE], check=True,
                         capture_output=True, text=True, timeout=300).stdout
    report = json.loads(out.strip().splitlines()[-1])
    self.assertFalse(report['backends'], 'importing initialized a backend')
    self.assertFalse(report['parsed'])
    self.assertEqual(report['our_flags'], [])
    self.assertEqual(report['handlers'], 0)
    self.assertEqual(report['heavy'], [])
    self.assertEqual(report['missing'], [])


if __name__ == '__main__':
  absltest.main()
