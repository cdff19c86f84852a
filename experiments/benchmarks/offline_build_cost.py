r"""CPU cost of an offline build, from measured per-architecture step costs.

Measures, per zoo architecture, the process CPU seconds of the builder's own
fine-tune function (`build.finetune_fn`, batch and eval as configured) at
two step counts after a warm-up call, so that the per-step cost and the fixed
per-pair cost (new head, evaluation of the test split) separate; then
estimates the CPU seconds of the build's stages for the given preset and
several fine-tune step counts. CPU seconds (not wall) because the machine is
shared: wall ~ CPU / (cores actually available).

  python experiments/benchmarks/offline_build_cost.py --preset=v2 \
      --out=runs/offline_build_cost --finetune_steps=25,50,100

Pretraining is estimated at 2x the fine-tune per-step cost (batch 64 vs 32);
data generation and compilation are not included (minutes).
"""

import json
import os
import time

from absl import app
from absl import flags
import jax
import numpy as np

from fennec_jax import sharding
from fennec_jax.benchmarks.offline import build
from fennec_jax.benchmarks.offline import presets
from fennec_jax.benchmarks.offline import zoo

_PRESET = flags.DEFINE_enum('preset', 'v2', ['v1', 'v2'], 'Build config.')
_OUT = flags.DEFINE_string('out', 'runs/offline_build_cost', 'Output dir.')
_STEPS = flags.DEFINE_list('finetune_steps', ['25', '50', '100'],
                           'Fine-tune step counts to estimate.')
_MEASURE = flags.DEFINE_list('measure_steps', ['5', '25'],
                             'The two step counts measured per arch.')


def measure(config, arch, steps_pair):
  """(CPU s per step, fixed CPU s per pair) of fine-tuning one model."""
  mesh = sharding.make_mesh(1)
  rng = np.random.default_rng(0)
  fc = config.finetune
  n, nt = fc.max_train, 500
  args = (rng.integers(0, 255, (n, 28, 28, 3), dtype=np.uint8),
          rng.integers(0, 10, n).astype(np.int32), np.int32(800),
          np.arange(fc.max_classes) < 10,
          rng.integers(0, 255, (nt, 28, 28, 3), dtype=np.uint8),
          rng.integers(0, 10, nt).astype(np.int32), np.int32(nt))
  module = zoo.make_classifier(arch, fc.max_classes)
  v = module.init(jax.random.key(0), np.zeros((1, 28, 28, 3), np.float32))
  backbone = [{k: c['backbone'] for k, c in v.items()}]
  cpu = []
  for steps in steps_pair:
    c = build.default_config()
    c.finetune.update(dict(fc))
    c.finetune.steps = steps
    fn = build.finetune_fn(c, mesh, arch, fc.eval_chunk, 1)
    fn(backbone, jax.random.key(0), *args)  # Compile.
    c0 = time.process_time()
    fn(backbone, jax.random.key(1), *args)
    cpu.append(time.process_time() - c0)
  per_step = (cpu[1] - cpu[0]) / (steps_pair[1] - steps_pair[0])
  return per_step, cpu[0] - steps_pair[0] * per_step


def main(argv):
  del argv
  config = (presets.v2_config() if _PRESET.value == 'v2'
            else build.default_config())
  plan = zoo.zoo_plan(config)
  pair = [int(s) for s in _MEASURE.value]
  costs = {}
  for arch in list(dict.fromkeys(m.arch for m in plan)) + [config.proxy.arch]:
    costs[arch] = measure(config, arch, pair)
    print(json.dumps(dict(arch=arch, cpu_per_step=costs[arch][0],
                          cpu_fixed=costs[arch][1])), flush=True)
  per_model = [costs[m.arch] for m in plan]
  targets = len(config.targets)
  pretrain = sum(2 * c[0] * config.pretrain.steps for c in per_model)
  proxy = (costs[config.proxy.arch][0] * config.proxy.steps
           * config.proxy.batch_size / config.finetune.batch_size)
  rows = []
  for s in (int(x) for x in _STEPS.value):
    finetune = targets * sum(c[0] * s + c[1] for c in per_model)
    rows.append(dict(finetune_steps=s, pairs=targets * len(plan),
                     pretrain_cpu_s=pretrain, proxy_cpu_s=proxy,
                     finetune_cpu_s=finetune,
                     total_cpu_min=(pretrain + proxy + finetune) / 60))
    print(json.dumps(rows[-1]), flush=True)
  os.makedirs(_OUT.value, exist_ok=True)
  with open(os.path.join(_OUT.value, 'offline_build_cost.json'), 'w') as f:
    json.dump(dict(preset=_PRESET.value, device=str(jax.devices()[0]),
                   costs=costs, estimates=rows), f, indent=1)


if __name__ == '__main__':
  app.run(main)
