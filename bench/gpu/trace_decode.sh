#!/usr/bin/env bash
# Kernel timeline of CUDA-graph decode steps on the bench config (issue 5): where a step's time goes, kernel by
# kernel, with the kernels overlapping as they do in a real run (ncu serialises them; nsys is not on the machine).
#
#   [BATCH=1] [ENVS="DS_MLA_FOLD=0"] bench/gpu/trace_decode.sh DATA_DIR OUT_DIR     (on the GPU machine)
#
# DATA_DIR as for profile_decode.sh (bundle.tar.xz of ds-pretrain and ds-rollout, tok/, corpus.jsonl,
# prompts64.jsonl). Builds bench/gpu/kernel_trace.cpp (a CUPTI injection library), decodes 256 tokens for BATCH
# prompts with it, and prints trace_step.py's table and one median step. Writes OUT_DIR/trace_bBATCH.tsv(.txt).
set -eu
D=$1 O=$2
mkdir -p "$O"
bash "$(dirname "$0")/build_kernel_trace.sh" "$O"
B=$(mktemp -d) && tar xJf "$D/bundle.tar.xz" -C "$B"
W=$(mktemp -d)
"$B/run" ds-pretrain --device cuda --precision bf16 --config bench/gpu/v3_bench_config.json -i "$D/corpus.jsonl" \
  --tokenizer "$D/tok" -o "$W/ck" --seq-len 128 --batch-size 2 --max-steps 1 --log-level warn
BATCH=${BATCH:-1}
head -"$BATCH" "$D/prompts64.jsonl" >"$W/prompts.jsonl"
T="$O/trace_b$BATCH.tsv"
env ${ENVS:-} CUDA_INJECTION64_PATH="$O/kernel_trace.so" DS_KERNEL_TRACE="$T" \
  "$B/run" ds-rollout --device cuda --precision bf16 --ckpt "$W/ck" -i "$W/prompts.jsonl" -o "$W/r.jsonl" -n 1 \
  --max-batch "$BATCH" --template raw --ignore-eos --temperature 1 --max-new-tokens 256 --max-context 512 --seed 7 \
  2>&1 | grep -o "decode [0-9.]* s.*" || true
python3 bench/gpu/trace_step.py "$T" --list | tee "$T.txt"
