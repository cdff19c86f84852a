"""Proxy feature extraction: a large vision model run over a task's images.

`load_proxy(name, checkpoint_path)` builds a frozen `Proxy` (ViT / CLIP /
DINOv2 / ResNet with imported weights); `Proxy.embed(images)` runs the
mesh-sharded jitted extraction; `task_embedding` summarizes the features and
`probe_indices` picks the class-balanced probe.
"""

from fennec_jax.proxy.embed import probe_indices
from fennec_jax.proxy.embed import task_embedding
from fennec_jax.proxy.embed import TaskEmbedding
from fennec_jax.proxy.extract import FeatureExtractor
from fennec_jax.proxy.extract import make_mesh
from fennec_jax.proxy.extract import Preprocessing
from fennec_jax.proxy.proxy import default_preprocessing
from fennec_jax.proxy.proxy import load_proxy
from fennec_jax.proxy.proxy import Proxy
from fennec_jax.proxy.weights import load_variables
from fennec_jax.proxy.weights import read_checkpoint
