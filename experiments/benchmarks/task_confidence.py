r"""Task-map confidence on the committed offline benchmark.

Measures what the confidence checks of `fennec_jax.task_maps` rest on, on the
26 offline tasks:
- the leave-one-task-out distances and image spreads the thresholds come from;
- which held-out task (its 100 probe images against the other 25 tasks) the
  checks flag, and whether the prior then ranks it better than the map;
- the neighbour votes' mean squared error and weighted tau with n new images
  per task (5 draws of n images outside the probe), against the prior: the
  image count from which the error stops falling.

  PYTHONPATH=. python experiments/benchmarks/task_confidence.py

Leave one task out with the space fit on all tasks, as `neighbors.fit`'s own
leave-one-out choice of k. Prints its table; 121 s on the shared 2-core CPU.
"""

from absl import app
import jax.numpy as jnp
import numpy as np
from scipy import stats

from fennec_jax import neighbors as nb
from fennec_jax import recommender
from fennec_jax import space as space_lib
from fennec_jax.benchmarks.offline import loader
from fennec_jax.benchmarks.offline import source as source_lib


def main(argv):
  del argv
  h = loader.load()
  src = source_lib.OfflineSource()
  feats, _ = source_lib.proxy_task_features(src, h.task_ids, 100, 0)
  full = {t: src.proxy_features(src.probe(t)[0]) for t in h.task_ids}
  fen = recommender.Fennec().fit(h, task_embeddings=feats)
  nmap, num_tasks = fen.task_map.nmap, len(h.task_ids)
  print('LOO distance median %.4f max %.4f; least spread %.4f' % (
      np.median(nmap.loo_distance), nmap.loo_distance.max(),
      nmap.spread.min()))
  normed, _, _ = space_lib.normalize(h.scores, h.mask,
                                     fen.space.config.normalization)
  cols = np.where(h.mask, normed, np.asarray(fen.space.predict_normalized()))

  def prior(j):
    return (np.arange(num_tasks) != j) / (num_tasks - 1.0)

  def loo_affinity(j, unit):
    _, own = nb.search(unit, np.full(len(unit), j, np.int32), nmap.pool,
                       nmap.owner, k=nmap.k, exclude=True)
    votes = np.asarray(nb._votes(own[None], jnp.ones((1, len(unit)), bool),  # pylint: disable=protected-access
                                 nmap.k, num_tasks))[0]
    a = (votes + nmap.smoothing) * (np.arange(num_tasks) != j)
    return a / a.sum()

  def tau(pred, j):
    return stats.weightedtau(pred, h.scores[:, j])[0]

  units = nb.unit_sets([feats[t] for t in h.task_ids])
  for j, t in enumerate(h.task_ids):
    rest = [i for i in range(num_tasks) if i != j]
    sub, _ = nb.fit([units[i] for i in rest], cols[:, rest], h.mask[:, rest],
                    ((nmap.k, nmap.smoothing),))
    d = nb.set_distances(sub, [units[j]])[0]
    s = nb.set_spread(units[j])
    if d > sub.loo_distance.max() or s < np.nanmin(sub.spread):
      print(f'{t}: distance {d:.4f} (max {sub.loo_distance.max():.4f}), '
            f'spread {s:.4f} (least {np.nanmin(sub.spread):.4f}); weighted '
            f'tau map {tau(cols @ loo_affinity(j, units[j]), j):.3f}, '
            f'prior {tau(cols @ prior(j), j):.3f}')

  rng = np.random.default_rng(0)
  for n in (1, 3, 5, 8, 20, 100):
    taus, mses = [], []
    for _ in range(5):
      for j, t in enumerate(h.task_ids):
        pick = full[t][100 + rng.choice(len(full[t]) - 100, n, replace=False)]
        pred = cols @ loo_affinity(j, nb.unit_sets([pick])[0])
        taus.append(tau(pred, j))
        mses.append(np.mean((pred - normed[:, j]) ** 2))
    print(f'{n} images: MSE {np.mean(mses):.3f}, weighted tau '
          f'{np.mean(taus):.3f}')
  preds = [cols @ prior(j) for j in range(num_tasks)]
  print('prior: MSE %.3f, weighted tau %.3f' % (
      np.mean([np.mean((p - normed[:, j]) ** 2) for j, p in enumerate(preds)]),
      np.mean([tau(p, j) for j, p in enumerate(preds)])))


if __name__ == '__main__':
  app.run(main)
