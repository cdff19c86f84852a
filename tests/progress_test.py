"""Progress lines: what they say, the ETA arithmetic and their bounded rate."""

from absl.testing import absltest

from fennec_jax import progress


class FakeClock:

  def __init__(self):
    self.now = 100.0

  def __call__(self):
    return self.now


class ProgressTest(absltest.TestCase):

  def test_lines_come_first_then_every_interval_then_last(self):
    clock = FakeClock()
    p = progress.Progress('fine-tune', total=10, every_s=10.0, clock=clock)
    with self.assertLogs('absl', 'INFO') as logs:
      for _ in range(10):
        clock.now += 3.0  # Each step takes 3 s.
        p.update()
    lines = [r.getMessage() for r in logs.records]
    # Step 1 (first), then the first step >= 10 s after the last line
    # (steps 5 and 9), then step 10 (last).
    self.assertEqual([l.split(',')[0] for l in lines],
                     ['fine-tune: step 1/10', 'fine-tune: step 5/10',
                      'fine-tune: step 9/10', 'fine-tune: step 10/10'])
    # After 5 steps of 3 s, 15 s elapsed and 5 steps left: 15 s more.
    self.assertEqual(lines[1], 'fine-tune: step 5/10, elapsed 15 s, ETA 15 s')
    self.assertEqual(lines[-1], 'fine-tune: step 10/10, elapsed 30 s, ETA 0 s')

  def test_resumed_steps_do_not_count_in_the_pace(self):
    clock = FakeClock()
    p = progress.Progress('pretrain', total=100, done=90, clock=clock)
    self.assertEqual(p.eta(), float('inf'))
    clock.now += 120.0
    with self.assertLogs('absl', 'INFO') as logs:
      p.update(2)
    # 2 steps in 120 s (not 92): 8 left at 60 s each.
    self.assertEqual(p.eta(), 480.0)
    self.assertEqual(logs.records[0].getMessage(),
                     'pretrain: step 92/100, elapsed 2 min 00 s, ETA 8 min '
                     '00 s')

  def test_track_yields_every_item_and_formats(self):
    with self.assertLogs('absl', 'INFO') as logs:
      self.assertEqual(list(progress.track('abc', 'letters')), list('abc'))
    self.assertTrue(logs.records[-1].getMessage().startswith(
        'letters: step 3/3, elapsed'))
    self.assertEqual([progress.format_seconds(s) for s in
                      (0.4, 59, 61, 3599, 3600 + 7 * 60, float('inf'))],
                     ['0 s', '59 s', '1 min 01 s', '59 min 59 s', '1 h 07 min',
                      '?'])


if __name__ == '__main__':
  absltest.main()
