"""`fennec list`: the bundled benchmarks, registered models and estimators.

  fennec list benchmarks                      # name, models x tasks, score name
  fennec list models                             # registered architectures
  fennec list models --benchmark=sfda_group1     # a benchmark's model ids
  fennec list estimators                         # name and the input it needs

One name per line first, so the output can be piped (`cut -d' ' -f1`).
"""

from absl import flags

from fennec_jax.benchmarks import public
from fennec_jax.estimators import registry as estimator_registry
from fennec_jax.models import registry as model_registry

_BENCHMARK = flags.DEFINE_string(
    'benchmark', None, 'With `list models`: list this benchmark\'s model ids '
    'instead of the registered architectures.')

SUBJECTS = ('benchmarks', 'models', 'estimators')


def _benchmarks() -> list[str]:
  lines = []
  for name in public.list_benchmarks():
    history = public.load_benchmark(name)
    lines.append(f'{name}  {history.num_models} models x {history.num_tasks} '
                 f'tasks, {history.num_observed} scores '
                 f'({history.score_name})')
  return lines


def _estimators() -> list[str]:
  return [f'{name}  (input: {estimator_registry.get_spec(name).kind})'
          for name in estimator_registry.list_estimators()]


def lines_for(subject: str, benchmark: str | None = None) -> list[str]:
  """The output lines of `fennec list SUBJECT [--benchmark=NAME]`.

  Args:
    subject: one of `SUBJECTS`.
    benchmark: with 'models', a benchmark whose model ids to list.

  Returns:
    One line per item, its name first.

  Raises:
    ValueError: an unknown subject or benchmark, or `benchmark` with a
      subject other than 'models'.
  """
  if subject not in SUBJECTS:
    raise ValueError(f'unknown subject {subject!r}; valid: '
                     f'{", ".join(SUBJECTS)}.')
  if benchmark and subject != 'models':
    raise ValueError(f'--benchmark applies to `fennec list models`, not '
                     f'{subject!r}.')
  if subject == 'benchmarks':
    return _benchmarks()
  if subject == 'estimators':
    return _estimators()
  if benchmark:
    return list(public.load_benchmark(benchmark).model_ids)
  return model_registry.list_models()


def main(argv: list[str]) -> None:
  if len(argv) != 2:
    raise ValueError(f'give one of {", ".join(SUBJECTS)}, e.g. `fennec list '
                     f'models`; got {argv[1:] or "nothing"}.')
  print('\n'.join(lines_for(argv[1], _BENCHMARK.value)))
