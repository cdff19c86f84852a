"""fennec_jax: which pre-trained model to fine-tune, in JAX (Fennec).

Importing this package parses no flags, allocates no device memory and
configures no logging; it only defines the public API listed in the README.
"""

__version__ = '0.1.0'
