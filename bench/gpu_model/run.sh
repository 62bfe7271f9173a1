#!/bin/bash
# One GPU session: model parity test, f32 + bf16 training runs (CPU reference curve made beforehand), throughput,
# ds-rollout CPU vs GPU, a short ds-grpo loop on the GPU. Everything goes to $OUT (at most 8 files).
set -u
ROOT=$(pwd)
B=$(mktemp -d) && tar xJf .device/model/bundle.tar.xz -C $B
R=$B/run
export OPENBLAS_CORETYPE=Haswell OMP_WAIT_POLICY=passive
L=$OUT/log.txt
t0=$(date +%s)
st() { echo "== [$(( $(date +%s) - t0 ))s] $*" | tee -a $L; }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader >> $L 2>&1
cd .device/model/data
W=/tmp/w; mkdir -p $W

st "model parity test"
timeout 150 $R ds_test_gpu_model > $OUT/model_test.txt 2>&1; echo "rc=$?" >> $OUT/model_test.txt
tail -3 $OUT/model_test.txt >> $L

P=(-i corpus.jsonl --tokenizer tok --preset small --seq-len 128 --batch-size 8 --max-steps 30 --lr 2e-3 --warmup 10 --eval-every 10 --overwrite --log-level warn --seed 7 --device cuda)
st "pretrain f32 cuda"
timeout 120 $R ds-pretrain "${P[@]}" -o $W/ck_f32 --metrics $OUT/gpu_f32.jsonl >> $L 2>&1; echo "rc=$?" >> $L
st "pretrain bf16 cuda"
timeout 120 $R ds-pretrain "${P[@]}" -o $W/ck_bf16 --precision bf16 --metrics $OUT/gpu_bf16.jsonl >> $L 2>&1; echo "rc=$?" >> $L

T=(-i corpus.jsonl --tokenizer tok --preset small --seq-len 256 --batch-size 32 --max-steps 12 --lr 2e-3 --warmup 2 --overwrite --log-level warn --seed 7 --device cuda --eval-batches 1)
st "throughput f32 / bf16 (B32 T256)"
timeout 90 $R ds-pretrain "${T[@]}" -o $W/tp_f32 --metrics $OUT/tput.jsonl >> $L 2>&1; echo "rc=$?" >> $L
echo '{"run":"bf16"}' >> $OUT/tput.jsonl
timeout 90 $R ds-pretrain "${T[@]}" -o $W/tp_bf16 --precision bf16 --metrics $OUT/tput.jsonl >> $L 2>&1; echo "rc=$?" >> $L

st "rollout greedy: cpu, cuda, cuda+mtp"
RO=(--ckpt $W/ck_f32 -i prompts.jsonl -n 2 --temperature 0 --max-new-tokens 48 --seed 7)
timeout 60 $R ds-rollout "${RO[@]}" --device cpu -o $W/r_cpu.jsonl >> $L 2>&1; echo "rc=$?" >> $L
timeout 60 $R ds-rollout "${RO[@]}" --device cuda -o $W/r_gpu.jsonl >> $L 2>&1; echo "rc=$?" >> $L
timeout 60 $R ds-rollout "${RO[@]}" --device cuda --mtp-speculative -o $W/r_mtp.jsonl >> $L 2>&1; echo "rc=$?" >> $L
python3 - $W >> $L 2>&1 <<'EOF'
import json, sys
w = sys.argv[1]
def load(n):  # by sample id: speculative decoding finishes samples in another order
    return {r["id"]: r["completion_tokens"] for r in map(json.loads, open(f"{w}/{n}"))}
c, g, m = load("r_cpu.jsonl"), load("r_gpu.jsonl"), load("r_mtp.jsonl")
print("rollout samples", len(c), "gpu==cpu", sum(g[k] == c[k] for k in c), "mtp==gpu", sum(m[k] == g[k] for k in g))
EOF

st "grpo loop cuda (3 steps)"
timeout 90 $R ds-grpo --device cuda --ckpt $W/ck_f32 -o $W/grpo --overwrite --steps 3 --prompts train_prompts.jsonl --prompts-per-step 4 -n 8 --temperature 1.0 --max-new-tokens 64 --prefill-think --no-default-stop --lr 1e-4 --save-every 0 --metrics $OUT/grpo.jsonl --seed 7 >> $L 2>&1; echo "rc=$?" >> $L
st "done"
