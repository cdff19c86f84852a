"""fennec_jax: which pre-trained model to fine-tune, in JAX (Fennec).

The public API, re-exported from the modules that define it:

* data: `History` (models x tasks scores with a mask), `load_benchmark`,
  `list_benchmarks`, and the ranking `metrics` module;
* the transfer space: `SpaceConfig`, `TransferSpace`, `fit_space`;
* recommenders: `Fennec` / `FennecConfig` (this project's) and
  `FennecPaper` / `PaperConfig` (the paper's recipe, as a baseline);
* estimators: `get_estimator`, `score_models`, `list_estimators`;
* architectures: `get_model`, `num_params`, `list_models`, `trace`;
* the proxy: `load_proxy`.

Importing this package parses no flags, allocates no device memory and
configures no logging (tested in tests/import_test.py).
"""

from fennec_jax import metrics
from fennec_jax.archi2vec.trace import trace
from fennec_jax.benchmarks import list_benchmarks
from fennec_jax.benchmarks import load_benchmark
from fennec_jax.estimators import get_estimator
from fennec_jax.estimators import list_estimators
from fennec_jax.estimators import score_models
from fennec_jax.history import History
from fennec_jax.models import get_model
from fennec_jax.models import list_models
from fennec_jax.models import num_params
from fennec_jax.paper import FennecPaper
from fennec_jax.paper import PaperConfig
from fennec_jax.proxy import load_proxy
from fennec_jax.recommender import Fennec
from fennec_jax.recommender import FennecConfig
from fennec_jax.space import fit as fit_space
from fennec_jax.space import SpaceConfig
from fennec_jax.space import TransferSpace

__version__ = '0.1.0'

__all__ = [
    'Fennec',
    'FennecConfig',
    'FennecPaper',
    'History',
    'PaperConfig',
    'SpaceConfig',
    'TransferSpace',
    'fit_space',
    'get_estimator',
    'get_model',
    'list_benchmarks',
    'list_estimators',
    'list_models',
    'load_benchmark',
    'load_proxy',
    'metrics',
    'num_params',
    'score_models',
    'trace',
]
