r"""Recipe validation of the offline build (issue #14): short vs long recipes.

Fine-tunes the zoo of a build's work directory on a sample of targets under
several step counts and writes the per-target weighted tau of each recipe's
model ranking against the longest one's (`fennec_jax.benchmarks.offline.
recipe`). Resumable (one fsync'ed line per pair in `<out>/steps<S>.csv`).

  python experiments/benchmarks/offline_recipe.py --preset=v2 \
      --workdir=/work/runs/offline_v2_zoo --out=/work/runs/offline_v2_recipe \
      --steps=25,50,100,500 --targets=fashion_all,glyph10_greek_upper,...

Writes `<out>/recipe.json` and `<out>/recipe.md` (the data card's section).
"""

import json
import os

from absl import app
from absl import flags
from absl import logging

from fennec_jax.benchmarks import offline
from fennec_jax.benchmarks.offline import build
from fennec_jax.benchmarks.offline import presets
from fennec_jax.benchmarks.offline import recipe

_PRESET = flags.DEFINE_enum('preset', 'v2', ['v1', 'v2', 'v2_tiny'],
                            'Build config whose zoo is validated.')
_WORKDIR = flags.DEFINE_string('workdir', None, 'Build workdir (pretrained '
                               'zoo).', required=True)
_OUT = flags.DEFINE_string('out', None, 'Output dir.', required=True)
_STEPS = flags.DEFINE_list('steps', ['25', '50', '100', '500'],
                           'Step counts; the longest is the reference.')
_TARGETS = flags.DEFINE_list('targets', [], 'Sample of targets.')
_MODELS = flags.DEFINE_list('models', [], 'Model ids (default: the zoo).')
_REPORT_ONLY = flags.DEFINE_bool('report_only', False, 'Only summarize what '
                                 'is in --out.')
_COMMITTED_V1 = flags.DEFINE_bool(
    'committed_v1_zoo', False, 'Validate the committed v1 zoo (weights in '
    'benchmarks/offline_data) on --targets (any suite), data generated '
    'directly; --workdir is then only scratch.')


def main(argv):
  del argv
  config = {'v1': build.default_config, 'v2': presets.v2_config,
            'v2_tiny': presets.v2_tiny_config}[_PRESET.value]()
  steps = sorted(int(s) for s in _STEPS.value)
  load = None
  if _COMMITTED_V1.value:
    config = build.default_config()
    config.targets = list(_TARGETS.value)
    config.data = 'direct'
    load = lambda model_id: offline.load_model(model_id)[1]  # pylint: disable=g-long-lambda
  if not _REPORT_ONLY.value:
    recipe.validate(config, _WORKDIR.value, list(_TARGETS.value), steps,
                    _OUT.value, list(_MODELS.value) or None, load)
  report = recipe.agreement(recipe.read(_OUT.value))
  with open(os.path.join(_OUT.value, 'recipe.json'), 'w') as f:
    json.dump(report, f, indent=1, default=str)
  md = recipe.format_markdown(report)
  with open(os.path.join(_OUT.value, 'recipe.md'), 'w') as f:
    f.write(md)
  logging.info('\n%s', md)
  print(md)


if __name__ == '__main__':
  app.run(main)
