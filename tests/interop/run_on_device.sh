#!/usr/bin/env bash
# Runs the transformers interoperability check on the GPU machine from a device bundle (see README.md).
#   tests/interop/run_on_device.sh BUNDLE_TAR OUT_DIR
set -euo pipefail
bundle=$1 out=$2
B=$(mktemp -d)
tar xJf "$bundle" -C "$B"
mkdir -p "$out"
export OPENBLAS_CORETYPE=Haswell OMP_WAIT_POLICY=passive PYTHONUNBUFFERED=1
python3 "$(dirname "$0")/hf_interop.py" --run "$B/run" --out "$out"
