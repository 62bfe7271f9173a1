#!/usr/bin/env bash
# bench/run.sh BUILD_DIR [ds-bench-train options...]: CPU training throughput of the "small" preset next to the
# sgemm ceiling of this machine (make bench). Runs on all cores; about a minute on 2 cores.
# The environment passes through (e.g. OPENBLAS_CORETYPE=SkylakeX make bench to force OpenBLAS's AVX-512 kernels).
set -euo pipefail
build=${1:-build}
shift || true
exe="$build/bench/ds-bench-train"
if [[ ! -x "$exe" ]]; then
  echo "bench/run.sh: $exe not found (build first: make build BUILD=$build)" >&2
  exit 1
fi
threads=$(nproc)
echo "== ds-bench-train on $(nproc) cores: $(lscpu | sed -n 's/^Model name: *//p' | head -1), $(date -u +%Y-%m-%dT%H:%MZ)"
# passive: idle OpenMP threads sleep instead of spinning, so BLAS and our OpenMP loops do not steal each
# other's cores between parallel regions.
export OMP_WAIT_POLICY=passive
exec "$exe" --preset small --threads "$threads" --steps 10 --warmup 2 --batch-size 8 --seq-len 256 --vocab 4096 "$@"
