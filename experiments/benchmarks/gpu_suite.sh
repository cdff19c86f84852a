#!/usr/bin/env bash
# The device checks in one run, for a lent GPU (see README "Measured on a GPU").
#
# Runs from the repository root on a machine with jax, flax, optax, chex, torch
# and timm but without jraph/ml_collections (carried as wheels in .whl/ when
# present). Each benchmark has its own time limit so the whole suite ends inside
# one 10-minute device call; results of all of them are packed into one archive,
# $OUT/gpu_suite.tgz (the device tool returns at most 8 files).
set -u
OUT=${OUT:?set OUT to the output directory}
export PYTHONUNBUFFERED=1 PYTHONPATH=.
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
    --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:.
fi
mkdir -p "$OUT/suite"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv \
  > "$OUT/suite/device.csv" 2>&1
python3 -c 'import jax, flax, torch; print(jax.__version__, flax.__version__, torch.__version__, jax.devices())' \
  > "$OUT/suite/versions.txt" 2>&1

run() {  # run NAME SECONDS CMD...: one benchmark, its log kept whatever happens
  local name=$1 secs=$2; shift 2
  echo "=== $name (limit ${secs}s)"
  local t0=$(date +%s)
  timeout "$secs" "$@" > "$OUT/suite/$name.log" 2>&1
  echo "$name rc=$? wall=$(( $(date +%s) - t0 ))s" | tee -a "$OUT/suite/summary.txt"
  tail -n 25 "$OUT/suite/$name.log"
}

R=experiments/benchmarks/results
run proxy_vit_b16 ${B16_SECS:-210} python3 experiments/benchmarks/proxy_throughput.py \
  --quick --out="$OUT/suite/proxy_vit_b16"
run estimators ${EST_SECS:-150} python3 experiments/benchmarks/estimators_bench.py \
  --out="$OUT/suite/estimators" --numpy_models=0 --repeats=3 \
  --numpy_json=$R/estimators_cpu.json,$R/estimators_cpu_leep_nce.json,$R/estimators_cpu_parc_nleep_m8.json,$R/estimators_cpu_linear_probe_m8.json
run proxy_vit_l14 ${L14_SECS:-170} python3 experiments/benchmarks/proxy_throughput.py \
  --quick --models=vit_l14 --out="$OUT/suite/proxy_vit_l14"

(cd "$OUT" && tar czf gpu_suite.tgz suite && rm -rf suite)
