"""The evaluation's learned part as two JAX processes (gloo CPU
collectives, 2 fake devices each).

Inside `sharding.default_devices(jax.local_devices()[:1])` every process
fits the transfer space on a device of its own and gets what one process
gets; process 0 alone writes a checkpoint (orbax without waiting for the
other). Without it the fit's mesh spans both processes and its host reads
fail: the reason the run's evaluation uses it.
"""

import os
import subprocess
import sys
import tempfile
import textwrap

from absl.testing import absltest
import jax
import numpy as np
import pytest

from fennec_jax import recommender
from fennec_jax import sharding
from fennec_jax.benchmarks.full import distributed

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))

# One seeded Fennec fit and its prediction for a new task (run by the
# workers and by this process).
_FIT = textwrap.dedent('''
    import numpy as np
    from fennec_jax import history as history_lib
    from fennec_jax import recommender
    from fennec_jax import space as space_lib

    def fit_and_rank():
      rng = np.random.default_rng(0)
      scores = rng.uniform(50, 90, (6, 5))
      history = history_lib.History(
          model_ids=tuple(f'm{i}' for i in range(6)),
          task_ids=tuple(f't{j}' for j in range(5)), scores=scores,
          mask=np.ones_like(scores, bool))
      emb = {t: rng.normal(size=(8, 16)).astype(np.float32)
             for t in history.task_ids}
      config = recommender.FennecConfig(space=space_lib.SpaceConfig(
          max_steps=30, seed=0))
      fennec = recommender.Fennec(config).fit(history, task_embeddings=emb)
      new = rng.normal(size=(8, 16)).astype(np.float32)
      rec = fennec.recommend(task_embeddings=[new], observed=[{}], top=6)
      return fennec, np.asarray(rec.predicted, np.float64)
''')

_WORKER = textwrap.dedent('''
    import os, sys
    import numpy as np
    from fennec_jax.benchmarks.full import distributed
    distributed.initialize(sys.argv[1], 2, int(sys.argv[2]), 2)
    import jax
    from fennec_jax import sharding
    out = sys.argv[3]
    try:
      fit_and_rank()
      error = ''
    except Exception as e:  # The global mesh: expected to fail.
      error = type(e).__name__ + ': ' + str(e)
    with sharding.default_devices(jax.local_devices()[:1]):
      fennec, predicted = fit_and_rank()
    if jax.process_index() == 0:
      fennec.save(os.path.join(out, 'fennec'))
    np.savez(os.path.join(out, f'p{jax.process_index()}.npz'),
             predicted=predicted, error=np.asarray(error))
''')


def fit_and_rank():
  scope = {}
  exec(_FIT, scope)  # pylint: disable=exec-used
  return scope['fit_and_rank']()


@pytest.mark.slow
class TwoProcessFitTest(absltest.TestCase):

  def test_each_process_fits_alone_as_one_process_does(self):
    out = self.enterContext(tempfile.TemporaryDirectory())
    script = os.path.join(out, 'worker.py')
    with open(script, 'w') as f:
      f.write(_FIT + _WORKER)
    port = distributed.free_port()
    env = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=_ROOT)
    env.pop('XLA_FLAGS', None)  # Each worker sets its own device count.
    procs = [subprocess.Popen(
        [sys.executable, script, f'127.0.0.1:{port}', str(i), out], env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    for p in procs:
      self.addCleanup(p.kill)
    for p in procs:
      _, err = p.communicate(timeout=300)
      self.assertEqual(p.returncode, 0, err[-3000:])
    got = [np.load(os.path.join(out, f'p{i}.npz')) for i in range(2)]
    np.testing.assert_array_equal(got[0]['predicted'], got[1]['predicted'])
    with sharding.default_devices(jax.local_devices()[:1]):
      _, want = fit_and_rank()
    np.testing.assert_allclose(got[0]['predicted'], want, rtol=1e-5)
    for g in got:  # The global mesh spans both processes: the fit fails.
      self.assertNotEqual(str(g['error']), '')
    loaded = recommender.Fennec.load(os.path.join(out, 'fennec'))
    self.assertEqual(loaded.model_ids, tuple(f'm{i}' for i in range(6)))


if __name__ == '__main__':
  absltest.main()
