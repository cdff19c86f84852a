"""Transferability estimators (LogME, LEEP, SFDA, ...) batched over models.

`get_estimator(name)` returns a single-model function (higher = better);
`score_models(name, features[m, n, d], labels[n])` scores many models in one
jitted, vmapped call. See `registry` for the API and each module for the
method's equations and its documented degenerate cases.
"""

from fennec_jax.estimators.preprocess import pca
from fennec_jax.estimators.preprocess import pca_basis
from fennec_jax.estimators.registry import get_estimator
from fennec_jax.estimators.registry import list_estimators
from fennec_jax.estimators.registry import score_models
from fennec_jax.estimators.registry import score_table
