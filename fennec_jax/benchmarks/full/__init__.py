"""The full benchmark: public tasks from tfds, real candidate checkpoints,
every estimator and Fennec from images, resumable and multi-process.

Modules, one concept each: `catalogue` (which tfds set and which checkpoint
file each bundled table row needs), `tasks` (probes read by shards),
`checkpoints` (reading and converting candidates; the twin's random files),
`store` (atomic, resumable units of work), `compute` (the device work),
`evaluate` (leave one task out from stored work), `plan` (what a config
asks for; the dry run), `run` (the runner), `distributed` (starting
`jax.distributed`), `recommend` (serving a saved run for new images).
"""
