"""The paper's archi2vec baseline: WL subtree labels -> PV-DBOW -> k-means.

graph2vec (Narayanan et al., 2017), as the Fennec paper used it:

1. Weisfeiler-Lehman relabeling (`wl_labels`, 2 iterations): a node's new
   label hashes its label with the sorted labels of its neighbours. On DAGs the
   direction matters, so by default predecessors and successors are hashed as
   two separate multisets (`direction='both'`, the same refinement as
   networkx >= 3.5 `weisfeiler_lehman_subgraph_hashes` on a DiGraph);
   `'successors'`/`'predecessors'` use one side only.
2. Each graph becomes a "document" whose words are all its nodes' labels at
   every iteration (rooted subtrees of depth 0..k).
3. PV-DBOW (doc2vec without word order): a vector per document is trained to
   predict the document's words against negative samples drawn from the
   unigram^0.75 distribution (`Graph2Vec`, in JAX with optax).
4. k-means on the 128-d document vectors gives architecture clusters
   (`kmeans`, NumPy, k-means++ seeding).

`ridge_fit_predict` is the regressor used on top of the embeddings in the
NAS-Bench-201 check.
"""

from collections.abc import Sequence
import hashlib

from absl import logging
import jax
import jax.numpy as jnp
import networkx as nx
import numpy as np
import optax

_DIRECTIONS = ('both', 'successors', 'predecessors')


def _hash(text: str) -> str:
  return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def wl_labels(g: nx.DiGraph, iterations: int = 2, label_attr: str = 'op',
              direction: str = 'both') -> list[dict[object, str]]:
  """Weisfeiler-Lehman labels of every node, per iteration.

  Args:
    g: directed graph whose nodes have `label_attr`.
    iterations: number of refinement steps.
    label_attr: node attribute holding the initial label.
    direction: 'both' (predecessor and successor multisets kept apart),
      'successors' or 'predecessors'.

  Returns:
    `iterations + 1` dicts node -> label (index 0 = the initial labels).

  Raises:
    ValueError: unknown direction or a node without `label_attr`.
  """
  if direction not in _DIRECTIONS:
    raise ValueError(f'direction must be one of {_DIRECTIONS}, got '
                     f'{direction!r}.')
  labels = {}
  for n, a in g.nodes(data=True):
    if label_attr not in a:
      raise ValueError(f'Node {n!r} has no {label_attr!r} attribute.')
    labels[n] = str(a[label_attr])
  out = [labels]
  for _ in range(iterations):
    prev, labels = labels, {}
    for n in g.nodes:
      parts = [prev[n]]
      if direction in ('both', 'predecessors'):
        parts.append(','.join(sorted(prev[p] for p in g.predecessors(n))))
      if direction in ('both', 'successors'):
        parts.append(','.join(sorted(prev[s] for s in g.successors(n))))
      labels[n] = _hash('|'.join(parts))
    out.append(labels)
  return out


def wl_document(g: nx.DiGraph, iterations: int = 2, label_attr: str = 'op',
                direction: str = 'both') -> list[str]:
  """The graph2vec "document": every node's label at every iteration."""
  words = []
  for t, labels in enumerate(wl_labels(g, iterations, label_attr, direction)):
    words += [f'{t}:{labels[n]}' for n in sorted(labels, key=str)]
  return words


def feature_counts(docs: Sequence[Sequence[str]],
                   vocab: dict[str, int]) -> np.ndarray:
  """Bag-of-subtrees counts `[n_docs, len(vocab)]`; unknown words dropped."""
  x = np.zeros((len(docs), len(vocab)), np.float32)
  for i, doc in enumerate(docs):
    for w in doc:
      j = vocab.get(w)
      if j is not None:
        x[i, j] += 1
  return x


class Graph2Vec:
  """WL documents + PV-DBOW with negative sampling, trained in JAX.

  Attributes (after `fit`): `embeddings` float32 `[n_graphs, dim]`, `vocab`
  word -> id, `docs` the documents, `losses` the mean loss per epoch.
  """

  def __init__(self, dim: int = 128, iterations: int = 2, epochs: int = 20,
               negatives: int = 5, learning_rate: float = 0.02,
               batch_size: int = 4096, min_count: int = 1, seed: int = 0,
               direction: str = 'both', label_attr: str = 'op'):
    self.dim, self.iterations, self.epochs = dim, iterations, epochs
    self.negatives, self.learning_rate = negatives, learning_rate
    self.batch_size, self.min_count, self.seed = batch_size, min_count, seed
    self.direction, self.label_attr = direction, label_attr
    self.embeddings = None

  def fit(self, graphs: Sequence[nx.DiGraph]) -> 'Graph2Vec':
    """Builds the documents of `graphs` and trains their vectors."""
    if not graphs:
      raise ValueError('Graph2Vec.fit: no graphs given.')
    docs = [wl_document(g, self.iterations, self.label_attr, self.direction)
            for g in graphs]
    return self.fit_documents(docs)

  def fit_documents(self, docs: Sequence[Sequence[str]]) -> 'Graph2Vec':
    """Trains PV-DBOW document vectors for `docs` (lists of words)."""
    counts: dict[str, int] = {}
    for doc in docs:
      for w in doc:
        counts[w] = counts.get(w, 0) + 1
    words = sorted(w for w, c in counts.items() if c >= self.min_count)
    dropped = len(counts) - len(words)
    if dropped:
      logging.info('Graph2Vec: dropped %d words seen < %d times.', dropped,
                   self.min_count)
    self.vocab = {w: i for i, w in enumerate(words)}
    self.docs = docs
    pairs = np.array([(i, self.vocab[w]) for i, doc in enumerate(docs)
                      for w in doc if w in self.vocab], np.int32)
    if len(pairs) == 0:
      raise ValueError('Graph2Vec: the documents have no words.')
    freq = np.array([counts[w] for w in words], np.float64) ** 0.75
    # Inverse-CDF sampling: O(log V) per draw (categorical would build a
    # [batch, negatives, V] Gumbel tensor).
    noise_cdf = jnp.asarray(np.cumsum(freq / freq.sum()), jnp.float32)
    n_docs, n_words, dim = len(docs), len(words), self.dim
    root = jax.random.key(self.seed)
    params = {
        'doc': jax.random.uniform(jax.random.fold_in(root, 0),
                                  (n_docs, dim), jnp.float32,
                                  -0.5 / dim, 0.5 / dim),
        'word': jnp.zeros((n_words, dim), jnp.float32),
    }
    tx = optax.adam(self.learning_rate)
    opt = tx.init(params)
    b, k = self.batch_size, self.negatives
    steps = int(np.ceil(len(pairs) / b))

    def loss_fn(p, doc_ids, word_ids, mask, rng):
      d = p['doc'][doc_ids]                                    # [b, dim]
      pos = jnp.einsum('bd,bd->b', d, p['word'][word_ids])
      u = jax.random.uniform(rng, (b, k)) * noise_cdf[-1]
      neg_ids = jnp.minimum(jnp.searchsorted(noise_cdf, u), n_words - 1)
      neg = jnp.einsum('bd,bkd->bk', d, p['word'][neg_ids])
      loss = -jax.nn.log_sigmoid(pos) - jax.nn.log_sigmoid(-neg).sum(-1)
      return (loss * mask).sum() / jnp.maximum(mask.sum(), 1.0)

    @jax.jit
    def epoch(p, o, batches, masks, rng):
      def body(carry, xs):
        p, o = carry
        (doc_ids, word_ids), mask, i = xs
        loss, g = jax.value_and_grad(loss_fn)(p, doc_ids, word_ids, mask,
                                              jax.random.fold_in(rng, i))
        u, o = tx.update(g, o, p)
        return (optax.apply_updates(p, u), o), loss
      (p, o), losses = jax.lax.scan(
          body, (p, o), (batches, masks, jnp.arange(steps)))
      return p, o, losses.mean()

    rs = np.random.default_rng(self.seed)
    self.losses = []
    for e in range(self.epochs):
      perm = rs.permutation(len(pairs))
      padded = np.zeros((steps * b, 2), np.int32)
      padded[:len(pairs)] = pairs[perm]
      mask = np.zeros(steps * b, np.float32)
      mask[:len(pairs)] = 1.0
      batches = (padded[:, 0].reshape(steps, b), padded[:, 1].reshape(steps, b))
      params, opt, loss = epoch(params, opt, batches, mask.reshape(steps, b),
                                jax.random.fold_in(root, e + 1))
      self.losses.append(float(loss))
    logging.info('Graph2Vec: %d docs, %d words, %d pairs, %d epochs, loss '
                 '%.4f -> %.4f', n_docs, n_words, len(pairs), self.epochs,
                 self.losses[0], self.losses[-1])
    self.embeddings = np.asarray(params['doc'])
    self.word_vectors = np.asarray(params['word'])
    return self


def kmeans(x: np.ndarray, k: int, seed: int = 0, iterations: int = 100,
           n_init: int = 4) -> tuple[np.ndarray, np.ndarray]:
  """Lloyd's k-means with k-means++ seeding; best of `n_init` restarts.

  Args:
    x: `[n, d]` points.
    k: number of clusters (1 <= k <= n).
    seed: random seed.
    iterations: max Lloyd iterations per restart.
    n_init: restarts; the lowest inertia wins.

  Returns:
    `(centers [k, d], labels [n])`.
  """
  x = np.asarray(x, np.float64)
  n = len(x)
  if not 1 <= k <= n:
    raise ValueError(f'kmeans: k must be in [1, {n}], got {k}.')
  rs = np.random.default_rng(seed)
  best = None
  for _ in range(n_init):
    centers = [x[rs.integers(n)]]
    d2 = ((x - centers[0]) ** 2).sum(1)
    for _ in range(1, k):
      p = d2 / d2.sum() if d2.sum() > 0 else np.full(n, 1.0 / n)
      centers.append(x[rs.choice(n, p=p)])
      d2 = np.minimum(d2, ((x - centers[-1]) ** 2).sum(1))
    c = np.stack(centers)
    labels = None
    for _ in range(iterations):
      dist = ((x[:, None, :] - c[None]) ** 2).sum(-1)
      new = dist.argmin(1)
      if labels is not None and np.array_equal(new, labels):
        break
      labels = new
      for j in range(k):
        if np.any(labels == j):
          c[j] = x[labels == j].mean(0)
    inertia = ((x - c[labels]) ** 2).sum()
    if best is None or inertia < best[0]:
      best = (inertia, c.copy(), labels.copy())
  return best[1], best[2]


def archi2vec_clusters(graphs: Sequence[nx.DiGraph], k: int, seed: int = 0,
                       **graph2vec_kwargs) -> tuple[np.ndarray, np.ndarray]:
  """The paper's pipeline: graph2vec embeddings, then k-means cluster ids.

  Returns:
    `(embeddings [n, dim], cluster ids [n])`.
  """
  model = Graph2Vec(seed=seed, **graph2vec_kwargs).fit(graphs)
  _, labels = kmeans(model.embeddings, k, seed=seed)
  return model.embeddings, labels


def ridge_fit_predict(x_train: np.ndarray, y_train: np.ndarray,
                      x_test: np.ndarray,
                      alphas: Sequence[float] = (1e-3, 1e-2, 0.1, 1.0, 10.0,
                                                 100.0, 1000.0)) -> np.ndarray:
  """Ridge regression, alpha picked by exact leave-one-out error on train.

  Features are standardized with training statistics; the intercept is not
  penalized (targets are centred).
  """
  x_train = np.asarray(x_train, np.float64)
  x_test = np.asarray(x_test, np.float64)
  mu, sd = x_train.mean(0), x_train.std(0)
  sd[sd == 0] = 1.0
  a, t = (x_train - mu) / sd, (x_test - mu) / sd
  y_mu = float(np.mean(y_train))
  y = np.asarray(y_train, np.float64) - y_mu
  best = None
  for alpha in alphas:
    # Hat matrix in the n x n dual form (n is small: 1% of a benchmark).
    kmat = a @ a.T
    inv = np.linalg.inv(kmat + alpha * np.eye(len(a)))
    hat = kmat @ inv
    resid = (y - hat @ y) / np.maximum(1.0 - np.diag(hat), 1e-9)
    err = float(np.mean(resid ** 2))
    if best is None or err < best[0]:
      best = (err, alpha, inv)
  _, alpha, inv = best
  dual = inv @ y
  return t @ (a.T @ dual) + y_mu
