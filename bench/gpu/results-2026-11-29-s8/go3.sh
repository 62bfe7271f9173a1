#!/usr/bin/env bash
# session 8 call 3: kernel timelines (CUPTI) of batch-1 and batch-64 decode steps, folds on and off
set -u
t0=$(date +%s); el() { echo "[$(( $(date +%s) - t0 ))s]"; }
BATCH=1 bash bench/gpu/trace_decode.sh .device/s8 $OUT/fold 2>&1 | head -60; echo "$(el)"
BATCH=1 ENVS="DS_MLA_FOLD=0" bash bench/gpu/trace_decode.sh .device/s8 $OUT/nofold 2>&1 | head -45; echo "$(el)"
BATCH=64 ENVS="DS_MLA_FOLD=0" bash bench/gpu/trace_decode.sh .device/s8 $OUT/b64 2>&1 | head -30; echo "$(el)"
cd $OUT && for d in fold nofold b64; do xz -9 $d/*.tsv; rm -f $d/kernel_trace.so; done
