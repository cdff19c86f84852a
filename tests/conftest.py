"""pytest set-up shared by the whole suite.

Eight fake CPU devices, so sharded code paths (mesh data-parallel extraction,
NamedSharding) are exercised on a CPU exactly as on an 8-chip host. This must run
before any JAX backend is initialized, which conftest guarantees.
"""

import jax

jax.config.update('jax_num_cpu_devices', 8)
