"""The text `fennec recommend` prints: rankings and what they rest on.

Kept apart from the command module (which defines absl flags at import) so
tests and other commands can format a `recommender.Recommendation` too.
"""

from collections.abc import Mapping, Sequence

import numpy as np

from fennec_jax import recommender
from fennec_jax import task_maps


def confidence_line(confidence: task_maps.TaskConfidence,
                    has_scores: bool) -> str:
  """One line: whether the images placed the task, and what ranked it."""
  c = confidence
  if not c.in_distribution:
    basis = ('the population prior updated by the observed scores'
             if has_scores else 'the population prior (the history\'s '
             'typical ranking)')
    return (f'WARNING: the images do not place this task among the '
            f'historical ones: {c.reason}. Ranked by {basis}, not by the '
            'images.')
  if np.isnan(c.distance):
    return f'images: {c.n_images}; {c.reason or "not checked"}.'
  return (f'images: {c.n_images}, distance to the history {c.distance:.4f} '
          f'(historical tasks: at most {c.threshold:.4f}); ranked by the '
          'image map.')


def format_recommendation(rec: recommender.Recommendation, tasks: Sequence[str],
                          observed: Mapping[str, Mapping[str, float]] | None
                          = None, top: int | None = None) -> str:
  """A plain-text block per task: observed models, then the ranking.

  With task embeddings, a line first says whether the task map could place
  the task (`recommender.Recommendation.confidence`); a task it could not is
  a WARNING line giving the reason and that the ranking is the prior's.

  Observed models come apart, with their observed score; the ranking holds
  the first `top` unobserved models of `rec`. Scores and std share one number
  of decimals per task: 4 significant digits of the largest score.

  Raises:
    ValueError: a non-finite prediction or std, naming the task and models.
  """
  lines = []
  for b, task in enumerate(tasks):
    seen = (observed or {}).get(task, {})
    rows = list(zip(rec.model_ids[b], rec.predicted[b], rec.std[b]))
    bad = [m for m, p, s in rows if not np.isfinite([p, s]).all()]
    if bad or not np.isfinite(rec.all_predicted[b]).all():
      raise ValueError(f'task {task}: non-finite predictions ({bad[:5]}); '
                       'check the scores for outliers and wrong units.')
    ranked = [r for r in rows if r[0] not in seen][:top]
    largest = max([abs(v) for v in list(seen.values())
                   + [p for _, p, _ in ranked]] + [1e-12])
    digits = max(0, 3 - int(np.floor(np.log10(largest))))
    if rec.confidence is not None:
      lines.append(confidence_line(rec.confidence[b], bool(seen)))
    lines.append(f'task {task}: {len(seen)} observed (obs), then unobserved '
                 'models ranked, predicted +- std:')
    for model, value in seen.items():
      lines.append(f'  obs: {model:52s} {value:9.{digits}f} observed')
    for r, (model, p, s) in enumerate(ranked):
      lines.append(f'  {r + 1:3d}. {model:52s} {p:9.{digits}f} '
                   f'+- {s:.{digits}f}')
  return '\n'.join(lines)
