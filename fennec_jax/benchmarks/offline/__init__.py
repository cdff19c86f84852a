"""The offline benchmark: a zoo, targets and ground truth built on this machine.

* `loader`: the committed artifacts in `benchmarks/offline_data/` (ground
  truth, zoo weights, probes, graphs); needs no optimizer. Its functions are
  re-exported here (`offline.load()`, `offline.load_model(...)`).
* `zoo`: architectures, source assignment, the classifier, input scaling.
* `build`: pretrain the zoo and fine-tune it on every target (resumable).
* `export`: the committed artifacts and data card from a build's workdir.
* `source`: the images protocol's `ImageSource` over the committed artifacts.
* `demo`: `fennec demo` and recommending from a user's images.
"""

from fennec_jax.benchmarks.offline.loader import DATA_DIR
from fennec_jax.benchmarks.offline.loader import load
from fennec_jax.benchmarks.offline.loader import load_graph
from fennec_jax.benchmarks.offline.loader import load_model
from fennec_jax.benchmarks.offline.loader import load_probe
from fennec_jax.benchmarks.offline.loader import load_proxy
from fennec_jax.benchmarks.offline.loader import model_table
from fennec_jax.benchmarks.offline.loader import preprocess
from fennec_jax.benchmarks.offline.loader import PROXY_ID
from fennec_jax.benchmarks.offline.loader import task_images
from fennec_jax.benchmarks.offline.loader import task_table
