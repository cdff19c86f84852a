"""Flax architectures behind one name registry (`get_model`, `num_params`).

Importing this package registers every architecture module listed below.
"""

# pylint: disable=unused-import
from fennec_jax.models import alexnet
from fennec_jax.models import convnext
from fennec_jax.models import densenet
from fennec_jax.models import inception
from fennec_jax.models import mobilenet
from fennec_jax.models import resnet
from fennec_jax.models import small
from fennec_jax.models import swin
from fennec_jax.models import vit
from fennec_jax.models.registry import get_model
from fennec_jax.models.registry import get_spec
from fennec_jax.models.registry import init_shapes
from fennec_jax.models.registry import list_models
from fennec_jax.models.registry import ModelSpec
from fennec_jax.models.registry import num_params
from fennec_jax.models.registry import register_model
