"""archi2vec: architecture graphs from jaxprs and their embeddings.

Modules (import them directly; this package imports nothing heavy):

* `trace`: `trace(model_or_fn, input_shape) -> networkx.DiGraph` for Flax
  linen / NNX modules, JAX functions and registry names; `module_graph`.
* `graphs`: `OpVocab` (with an unknown-op slot), DAG -> padded
  `jraph.GraphsTuple`, `read_graph` / `write_graph` (JSON, GraphML).
* `gnn`: direction-aware jraph `GraphEncoder`, `make_encoder` -> `(init,
  embed)`, masked-op `pretrain`, `embed_all`.
* `compress`: exact colour-class compression of repeated structure and
  gather-only batches (`CompressedGraphs`), classes shared across the
  graphs of a batch (`colour_ids`, `shared_batches`): the encoder's fast
  path for traced networks.
* `wl`: the paper's graph2vec baseline (WL labels, PV-DBOW, k-means).
* `nas_bench`: NAS-Bench-201 cells -> DAGs and the Kendall-tau check.
"""
