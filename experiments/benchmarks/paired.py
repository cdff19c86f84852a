r"""Paired differences between one method and the others in a results.csv.

`fennec evaluate` reports each method's mean over targets with its own
bootstrap interval; two methods' intervals overlap even when one is better
on most targets. This compares them on the same targets
(`fennec_jax.benchmarks.report.paired_differences`): per target, the
method's metric minus the other's, then the mean difference, a 95%
percentile bootstrap over targets (10,000 resamples, seeded) and the number
of targets won.

Command:

  python experiments/benchmarks/paired.py \
      --results=runs/offline_images/results.csv --method=fennec

Prints a Markdown table (and writes it with --out).
"""

from absl import app
from absl import flags

from fennec_jax.benchmarks import report

_RESULTS = flags.DEFINE_string('results', None, 'A results.csv of `fennec '
                               'evaluate`.', required=True)
_METHOD = flags.DEFINE_string('method', 'fennec', 'The method compared.')
_METRIC = flags.DEFINE_string('metric', 'weighted_tau', 'Column compared.')
_K_SHOT = flags.DEFINE_integer('k_shot', 0, 'Rows with this K.')
_RESAMPLES = flags.DEFINE_integer('resamples', 10_000, 'Bootstrap resamples.')
_OUT = flags.DEFINE_string('out', None, 'Also write the table here.')


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments {argv[1:]}')
  values = report.read_metric_csv(_RESULTS.value, _METRIC.value,
                                  _K_SHOT.value)
  rows = report.paired_differences(values, _METHOD.value, _RESAMPLES.value)
  lines = [f'{_METHOD.value} minus each method, {_METRIC.value}, K = '
           f'{_K_SHOT.value} ({_RESULTS.value}):', '',
           '| other | mean difference [95% CI] | targets won |',
           '|---|---|---|']
  lines += [f"| {r['other']} | {r['mean_diff']:+.3f} [{r['low']:.3f}, "
            f"{r['high']:.3f}] | {r['won']} / {r['targets']} |" for r in rows]
  text = '\n'.join(lines)
  print(text)
  if _OUT.value:
    with open(_OUT.value, 'w') as f:
      f.write(text + '\n')


if __name__ == '__main__':
  app.run(main)
