#!/usr/bin/env bash
# Builds bench/gpu/kernel_trace.cpp (the CUPTI injection library) into OUT_DIR/kernel_trace.so, on the GPU
# machine (its CUDA has CUPTI). Used by trace_decode.sh and trace_train.sh.
#
#   bench/gpu/build_kernel_trace.sh OUT_DIR
set -eu
CUDA=${CUDA_HOME:-/usr/local/cuda}
CUPTI_LIB=$(dirname "$(find "$CUDA"/ /usr/local/cuda*/ -name 'libcupti.so*' 2>/dev/null | head -1)")
g++ -O2 -shared -fPIC "$(dirname "$0")/kernel_trace.cpp" -I"$CUDA/include" -I"$CUDA/extras/CUPTI/include" \
  -L"$CUPTI_LIB" -lcupti -Wl,-rpath,"$CUPTI_LIB" -o "$1/kernel_trace.so"
