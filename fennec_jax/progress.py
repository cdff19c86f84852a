"""Progress of long loops: `what: step i/n, elapsed, ETA` through absl logging.

A step that takes minutes (embedding every task's probe, fine-tuning a zoo,
one benchmark target after another) logs where it is and how long the rest
should take, so a user can tell a slow run from a stuck one. Lines come at a
bounded rate: the first step (an early estimate), then at most one every
`every_s` seconds, and the last step. The ETA is the remaining steps times
the mean time per step of this run so far (steps done before it started,
e.g. resumed from a checkpoint, are not counted as fast ones).

  progress = Progress('fine-tune', total=len(todo))
  for job in todo:
    run(job)
    progress.update()

  for task in track(tasks, 'proxy features'):
    ...
"""

from collections.abc import Callable, Iterable, Iterator
import time
from typing import TypeVar

from absl import logging

_T = TypeVar('_T')


def format_seconds(seconds: float) -> str:
  """'42 s', '3 min 05 s', '2 h 07 min' (or '?' when unknown)."""
  if not seconds >= 0 or seconds == float('inf'):
    return '?'
  seconds = int(round(seconds))
  if seconds < 60:
    return f'{seconds} s'
  if seconds < 3600:
    return f'{seconds // 60} min {seconds % 60:02d} s'
  return f'{seconds // 3600} h {seconds % 3600 // 60:02d} min'


class Progress:
  """Counts the steps of a loop and logs `step i/n, elapsed, ETA`.

  Attributes:
    what: the loop's name, first on every line.
    total: the number of steps.
    done: steps done so far (including those done before this run).
  """

  def __init__(self, what: str, total: int, *, done: int = 0,
               every_s: float = 10.0,
               clock: Callable[[], float] = time.monotonic):
    """Args: as the attributes; `every_s` the least seconds between lines,
    `clock` the time source (tests pass a fake one)."""
    self.what, self.total, self.done = what, int(total), int(done)
    self._start_done = self.done
    self._every_s = float(every_s)
    self._clock = clock
    self._start = clock()
    self._last_line: float | None = None

  def eta(self) -> float:
    """Seconds left at this run's mean pace (inf before the first step)."""
    steps = self.done - self._start_done
    if steps <= 0:
      return float('inf')
    pace = (self._clock() - self._start) / steps
    return max(self.total - self.done, 0) * pace

  def line(self) -> str:
    """The text of a progress line."""
    return (f'{self.what}: step {self.done}/{self.total}, elapsed '
            f'{format_seconds(self._clock() - self._start)}, ETA '
            f'{format_seconds(self.eta())}')

  def update(self, steps: int = 1) -> None:
    """Counts `steps` more done; logs if the first, the last or due."""
    self.done += steps
    now = self._clock()
    due = (self._last_line is None or self.done >= self.total
           or now - self._last_line >= self._every_s)
    if due:
      self._last_line = now
      logging.info('%s', self.line())


def track(items: Iterable[_T], what: str, total: int | None = None,
          every_s: float = 10.0) -> Iterator[_T]:
  """Yields `items`, logging progress after each one (see `Progress`).

  Args:
    items: the loop's items.
    what: the loop's name.
    total: the number of items (default: `len(items)`).
    every_s: the least seconds between lines.
  """
  progress = Progress(what, len(items) if total is None else total,
                      every_s=every_s)
  for item in items:
    yield item
    progress.update()
