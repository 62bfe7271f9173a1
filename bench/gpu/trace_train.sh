#!/usr/bin/env bash
# Kernel timeline of bf16 training steps on the bench config (issue 5): how much of a step the GPU sits idle
# between kernels, and where (ncu serialises kernels and hides this; nsys is not on the machine).
#
#   [BATCH=16 SEQ=1024 STEPS=4 TRACE_API=1] bench/gpu/trace_train.sh DATA_DIR OUT_DIR     (on the GPU machine)
#
# TRACE_API=1: the host's CUDA calls too (OUT_DIR/trace_train.tsv.api): where the GPU waited for the host.
#
# DATA_DIR as for profile_train.sh (bundle.tar.xz with ds-pretrain, tok/, corpus.jsonl). Builds
# bench/gpu/kernel_trace.cpp (a CUPTI injection library), trains STEPS steps with it and prints trace_train.py's
# summary of the last full step (memsets and copies included). Writes OUT_DIR/trace_train.tsv(.txt).
set -eu
D=$1 O=$2
mkdir -p "$O"
bash "$(dirname "$0")/build_kernel_trace.sh" "$O"
B=$(mktemp -d) && tar xJf "$D/bundle.tar.xz" -C "$B"
W=$(mktemp -d)
T="$O/trace_train.tsv"
env ${TRACE_API:+DS_TRACE_API=1} DS_TRACE_MEMOPS=1 CUDA_INJECTION64_PATH="$O/kernel_trace.so" DS_KERNEL_TRACE="$T" \
  "$B/run" "${PRETRAIN:-ds-pretrain}" --device cuda --precision bf16 --config bench/gpu/v3_bench_config.json \
  -i "$D/corpus.jsonl" --tokenizer "$D/tok" -o "$W/ck" --seq-len "${SEQ:-1024}" --batch-size "${BATCH:-16}" \
  --max-steps "${STEPS:-4}" --warmup 2 --lr 3e-4 --eval-fraction 0.02 --eval-batches 1 --save-dtype bf16 --seed 7 \
  --log-level warn
python3 bench/gpu/trace_train.py "$T" | tee "$T.txt"
