"""The catalogue maps every row of the bundled public tables, or says why
not; its validation names the file, line and value."""

import csv
import os
import tempfile
from unittest import mock

from absl.testing import absltest
from absl.testing import parameterized

from fennec_jax.benchmarks import public
from fennec_jax.benchmarks.full import catalogue


class CoverageTest(parameterized.TestCase):

  @parameterized.parameters(*catalogue.BENCHMARKS)
  def test_every_table_row_is_mapped_or_explained(self, name):
    history = public.load_benchmark(name)
    cov = catalogue.coverage(name)
    self.assertEmpty(cov['tasks_missing'])
    self.assertEmpty(cov['models_missing'])
    # Each task and model of the table lands in exactly one list.
    self.assertCountEqual(
        [t for t, _ in cov['tasks_mapped'] + cov['tasks_unmapped']],
        history.task_ids)
    self.assertCountEqual(
        [m for m, _ in cov['models_mapped'] + cov['models_unmapped']],
        history.model_ids)
    for _, reason in cov['tasks_unmapped'] + cov['models_unmapped']:
      self.assertGreater(len(reason), 20)

  def test_torchvision_zoos_are_fully_mapped_to_their_weight_files(self):
    # The 11 torchvision CNNs of sfda_group1 and the 10 of Model Spider:
    # every model maps to torchvision's IMAGENET1K_V1 file of the same name.
    with open(public.third_party_path('torchvision', 'imagenet1k_v1.csv')
              ) as f:
      urls = {r['model']: r['weights_url'] for r in csv.DictReader(f)}
    for name, count in (('sfda_group1', 11), ('model_spider_single', 10)):
      rows = catalogue.checkpoints_of(name)
      self.assertLen(rows, count)
      for model, row in rows.items():
        self.assertEqual((row.arch, row.format, row.url),
                         (model, 'torchvision', urls[model]))
        self.assertEqual(row.file, os.path.basename(urls[model]))

  def test_parc_controlled_is_four_architectures_by_eight_sources(self):
    rows = catalogue.checkpoints_of('parc_controlled')
    self.assertLen(rows, 32)
    self.assertEqual({r.arch for r in rows.values()},
                     {'resnet50', 'resnet18', 'googlenet', 'alexnet'})
    self.assertTrue(all(r.mapped for r in rows.values()))

  def test_shared_tasks_share_one_key(self):
    keys = {(t.benchmark, t.task): t.key for t in catalogue.load_tasks()}
    self.assertEqual(keys[('sfda_group1', 'pets')],
                     keys[('model_spider_single', 'Pet')])
    self.assertEqual(keys[('parc_controlled', 'oxford_pets')],
                     'oxford_iiit_pet')

  def test_unknown_benchmark_names_the_valid_ones(self):
    with self.assertRaisesRegex(ValueError, 'text classification'):
      catalogue.tasks_of('transfergraph_text')
    with self.assertRaisesRegex(ValueError, 'sfda_group1'):
      catalogue.checkpoints_of('nope')


class ValidationTest(absltest.TestCase):

  def _with_tasks_csv(self, rows):
    root = self.enterContext(tempfile.TemporaryDirectory())
    os.makedirs(os.path.join(root, 'full_benchmark'))
    with open(os.path.join(root, *catalogue.TASKS_CSV), 'w',
              newline='') as f:
      w = csv.writer(f)
      w.writerow(catalogue._fields(catalogue.Task))  # pylint: disable=protected-access
      w.writerows(rows)
    return mock.patch.object(
        public, 'third_party_path',
        lambda *parts: os.path.join(root, *parts))

  def test_bad_status_names_line_and_value(self):
    row = ['b', 't', 'k', 'tfdz', 'x', '1', 'train', 'image', 'label', '']
    with self._with_tasks_csv([row]):
      with self.assertRaisesRegex(ValueError, r"line 2 \(b/t\).*'tfdz'"):
        catalogue.load_tasks()

  def test_folder_task_needs_a_reason(self):
    row = ['b', 't', 'k', 'image_folder', '', '', '', '', '', '']
    with self._with_tasks_csv([row]):
      with self.assertRaisesRegex(ValueError, 'needs a note'):
        catalogue.load_tasks()

  def test_duplicate_row(self):
    row = ['b', 't', 'k', 'tfds', 'x', '1', 'train', 'image', 'label', '']
    with self._with_tasks_csv([row, row]):
      with self.assertRaisesRegex(ValueError, 'line 3.*duplicated'):
        catalogue.load_tasks()


if __name__ == '__main__':
  absltest.main()
