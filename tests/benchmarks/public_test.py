"""Bundled public benchmarks against the raw tables and the published numbers.

References are independent of the loader: counts re-derived from the raw CSV
with the `csv` module here, correlations from SciPy, and the values
TransferGraph published in its `result_analysis/` tables.
"""

import collections
import csv
import importlib
import pathlib
import sys
import tempfile
from unittest import mock

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np
from scipy import stats

from fennec_jax import benchmarks
from fennec_jax import history as history_lib
from fennec_jax.benchmarks import public

# The 8 targets TransferGraph reports results on.
TG_TARGETS = ('stanfordcars', 'svhn', 'caltech101', 'pets', 'cifar100',
              'flowers', 'smallnorb_label_elevation', 'dtd')
PUBLIC = ('model_spider_multi', 'model_spider_single', 'parc_all',
          'parc_controlled', 'sfda_group1', 'transfergraph_image',
          'transfergraph_text')


def _raw(*parts):
  with open(public.third_party_path(*parts), newline='') as f:
    return list(csv.DictReader(f))


def _popularity(scores, target):
  """Mean per-task z-score (population std) over every task but `target`."""
  others = np.delete(scores, target, axis=1)
  z = (others - np.nanmean(others, 0)) / np.nanstd(others, 0)
  return np.nanmean(z, 1)


def _published(kind, metric, method):
  rows = _raw('transfergraph', kind, 'result_analysis',
              f'{metric}_correlation.csv')
  row = next(r for r in rows if r[''] == method)
  return {k: float(v) for k, v in row.items() if k}


class RegistryTest(absltest.TestCase):

  def test_names_and_unknown_name(self):
    self.assertEqual(benchmarks.list_benchmarks(),
                     sorted(PUBLIC + ('offline',)))
    with self.assertRaisesRegex(ValueError, 'valid names: .*parc_all'):
      benchmarks.load_benchmark('imagenet')
    with self.assertRaisesRegex(ValueError, 'valid names'):
      benchmarks.load_baseline_scores('imagenet')

  def test_offline_dispatches_to_the_loader(self):
    fake = history_lib.History.from_matrix(np.eye(2))
    with mock.patch.object(public.offline_loader, 'load',
                           return_value=fake) as load:
      h = benchmarks.load_benchmark('offline', data_dir='/nowhere')
      self.assertEqual(benchmarks.load_baseline_scores('offline'), {})
    load.assert_called_with(data_dir='/nowhere')
    self.assertIs(h, fake)


class PublicBenchmarkTest(parameterized.TestCase):

  @parameterized.parameters(
      # name, models, tasks, observed (from the sources' READMEs/papers)
      ('transfergraph_image', 180, 13, 2254),
      ('transfergraph_text', 164, 10, None),
      ('sfda_group1', 11, 11, 121),
      ('model_spider_single', 10, 8, 80),
      ('model_spider_multi', 66, 7, 462),
      ('parc_all', 71, 7, 469),
      ('parc_controlled', 32, 7, 196),
  )
  def test_shapes(self, name, models, tasks, observed):
    h = benchmarks.load_benchmark(name)
    self.assertEqual(h.name, name)
    self.assertEqual((h.num_models, h.num_tasks), (models, tasks))
    if observed is not None:
      self.assertEqual(h.num_observed, observed)
    self.assertTrue(np.isfinite(h.scores[h.mask]).all())

  def test_transfergraph_image_scores_equal_raw_records(self):
    h = benchmarks.load_benchmark('transfergraph_image')
    rows = _raw('transfergraph', 'image_classification', 'records.csv')
    self.assertLen(rows, h.num_observed)
    for row in rows:
      self.assertEqual(
          h.scores[h.model_index(row['model']),
                   h.task_index(row['finetuned_dataset'])],
          float(row['eval_accuracy']))

  def test_transfergraph_popularity_reproduces_published(self):
    # The lead's acceptance numbers: popularity at K = 0 over the 8 targets.
    h = benchmarks.load_benchmark('transfergraph_image')
    pearson, wtau = [], []
    for target in TG_TARGETS:
      j = h.task_index(target)
      pop = _popularity(h.scores, j)
      ok = h.mask[:, j] & np.isfinite(pop)
      pearson.append(stats.pearsonr(pop[ok], h.scores[ok, j]).statistic)
      wtau.append(stats.weightedtau(pop[ok], h.scores[ok, j]).statistic)
    self.assertAlmostEqual(np.mean(pearson), 0.834, delta=0.001)
    self.assertAlmostEqual(np.mean(wtau), 0.618, delta=0.001)

  @parameterized.parameters(('logme', 'LogME'), ('reg_h_score', 'Reg-H-Score'))
  def test_transfergraph_estimators_reproduce_published(self, method, label):
    h = benchmarks.load_benchmark('transfergraph_image')
    est = benchmarks.load_baseline_scores('transfergraph_image')[method]
    self.assertEqual(est.model_ids, h.model_ids)
    self.assertEqual(set(est.task_ids), set(TG_TARGETS))
    pub_pearson = _published('image_classification', 'pearson', label)
    pub_wtau = _published('image_classification', 'w-kendall', label)
    # dtd is excluded: the published table counts its 56 duplicated models
    # twice, the loader once (see third_party/transfergraph/README.md).
    for target in TG_TARGETS[:-1]:
      j, k = h.task_index(target), est.task_index(target)
      ok = h.mask[:, j] & est.mask[:, k]
      x, y = est.scores[ok, k], h.scores[ok, j]
      self.assertAlmostEqual(stats.pearsonr(x, y).statistic,
                             pub_pearson[target], delta=1e-9)
      self.assertAlmostEqual(stats.weightedtau(x, y).statistic,
                             pub_wtau[target], delta=1e-9)

  def test_transfergraph_dtd_duplicates_are_averaged(self):
    est = benchmarks.load_baseline_scores('transfergraph_image')['logme']
    runs = collections.defaultdict(list)
    for row in _raw('transfergraph', 'image_classification',
                    'transferability_score_records.csv'):
      if (row['metric'] == 'TransferabilityMethod.LOG_ME'
          and row['target_dataset'] == 'dtd'):
        runs[row['model']].append(float(row['score']))
    repeated = {m: v for m, v in runs.items() if len(v) > 1
                and m in est.model_ids}
    self.assertLen(repeated, 56)
    k = est.task_index('dtd')
    for model, values in repeated.items():
      self.assertAlmostEqual(est.scores[est.model_index(model), k],
                             np.mean(values), delta=1e-12)

  def test_transfergraph_text_keeps_full_fine_tunes_and_logs_drops(self):
    public._transfergraph_text.cache_clear()
    with self.assertLogs('absl', 'INFO') as logs:
      h = benchmarks.load_benchmark('transfergraph_text')
    log = '\n'.join(logs.output)
    rows = _raw('transfergraph', 'sequence_classification', 'records.csv')
    lora = sum(r['peft_method'] == 'lora' for r in rows)
    self.assertIn(f"dropped {lora} row(s): parameter-efficient fine-tunes "
                  "(peft_method 'lora')", log)
    self.assertIn('merged', log)
    full = collections.defaultdict(list)
    for r in rows:
      if not r['peft_method'] and r['eval_accuracy'] and (
          r['finetuned_dataset'] in h.task_ids):
        full[r['model'], r['finetuned_dataset']].append(
            float(r['eval_accuracy']))
    self.assertEqual(h.num_observed, len(full))
    for (m, t), values in full.items():
      self.assertAlmostEqual(h.scores[h.model_index(m), h.task_index(t)],
                             np.mean(values), delta=1e-12)
    self.assertNotIn('lora', h.task_ids)
    self.assertNotIn('0.1', h.task_ids)

  def test_imagenet_metadata(self):
    sfda = benchmarks.load_benchmark('sfda_group1')
    acc = dict(zip(sfda.model_ids, sfda.model_metadata['imagenet_acc']))
    params = dict(zip(sfda.model_ids, sfda.model_metadata['num_params']))
    # torchvision's documented IMAGENET1K_V1 numbers.
    self.assertEqual(acc['resnet50'], 76.13)
    self.assertEqual(acc['mobilenet_v2'], 71.878)
    self.assertEqual(params['resnet50'], 25_557_032)
    tg = benchmarks.load_benchmark('transfergraph_image')
    tg_acc = dict(zip(tg.model_ids, tg.model_metadata['imagenet_acc']))
    config = {r['model']: r for r in _raw(
        'transfergraph', 'image_classification', 'model_config_dataset.csv')}
    for model in tg.model_ids:
      row = config[model]
      if row['dataset'] == 'imagenet' and row['accuracy']:
        self.assertAlmostEqual(tg_acc[model], 100 * float(row['accuracy']))
      else:
        self.assertTrue(np.isnan(tg_acc[model]), model)
    self.assertEqual(
        dict(zip(tg.task_ids, tg.task_metadata['num_classes']))['dtd'], 47)

  def test_model_spider(self):
    single = benchmarks.load_benchmark('model_spider_single')
    self.assertNotIn('dSprites', single.task_ids)
    with_regression = benchmarks.load_benchmark('model_spider_single',
                                                include_regression=True)
    self.assertIn('dSprites', with_regression.task_ids)
    base = benchmarks.load_baseline_scores('model_spider_single')
    self.assertEqual(sorted(base), sorted(
        ['h_score', 'leep', 'logme', 'nce', 'nleep', 'otce',
         'pactran_dirichlet', 'gbc', 'lfc']))
    raw = {(r['Model'], r['Dataset']): float(r['LogME'])
           for r in _raw('model_spider', 'baseline_scores.csv')}
    logme = base['logme']
    self.assertEqual(logme.model_ids, single.model_ids)
    for (m, d), value in raw.items():
      self.assertEqual(logme.scores[logme.model_index(m),
                                    logme.task_index(d)], value)
    multi = benchmarks.load_benchmark('model_spider_multi')
    paper = benchmarks.load_benchmark('model_spider_multi', paper_zoo=True)
    self.assertEqual(paper.num_models, 42)
    sources = set(paper.model_metadata['source_dataset'])
    self.assertNotIn('Pet', sources)
    self.assertIn('FTD_resnet50_Pet', multi.model_ids)
    self.assertEqual(benchmarks.load_baseline_scores('model_spider_multi'), {})

  def test_parc_never_scores_a_model_on_its_source(self):
    h = benchmarks.load_benchmark('parc_all')
    sources = h.model_metadata['source_dataset']
    for j, target in enumerate(h.task_ids):
      self.assertFalse(h.mask[sources == target, j].any(), target)
      self.assertEqual(h.mask[:, j].sum(), 67)

  def test_corrupt_table_error_names_file_line_and_column(self):
    tmp = self.enterContext(tempfile.TemporaryDirectory())
    cases = {
        'dataset,model,finetune_top1_acc\ndtd,a,1\ndtd,b,oops\n':
            r"bad.csv: line 3, column 'finetune_top1_acc': 'oops' is not a "
            'number',
        'dataset,model\ndtd,a\n': r"bad.csv: line 1 \(header\) lacks "
                                   r"column\(s\) \['finetune_top1_acc'\]",
        'dataset,model,finetune_top1_acc\ndtd,a,1\ndtd,a,2\n':
            r"conflicting scores for model 'a' on task 'dtd'",
    }
    for text, message in cases.items():
      path = pathlib.Path(tmp, 'bad.csv')
      path.write_text(text)
      public._sfda_group1.cache_clear()
      self.addCleanup(public._sfda_group1.cache_clear)
      with self.subTest(message), mock.patch.object(
          public, 'third_party_path', side_effect=lambda *p, path=path: (
              path if p[0] == 'sfda' else self.real_path(*p))):
        with self.assertRaisesRegex(ValueError, message):
          benchmarks.load_benchmark('sfda_group1')

  def setUp(self):
    super().setUp()
    self.real_path = public.third_party_path

  def test_bundled_files_have_provenance(self):
    for source in ('transfergraph', 'model_spider', 'sfda', 'parc',
                   'torchvision'):
      text = public.third_party_path(source, 'README.md').read_text()
      self.assertRegex(text, r'(?i)licen[cs]e')
      self.assertIn('Origin', text)


if __name__ == '__main__':
  absltest.main()
