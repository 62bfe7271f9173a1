#!/bin/bash
# ds versus Hugging Face transformers' DeepseekV3ForCausalLM on one GPU, side by side in one run (issue 5).
#
#   bench/gpu/run_bench.sh DATA_DIR OUT_DIR            (on the GPU machine, from the repository root)
#
# DATA_DIR holds bundle.tar.xz (../shared/tools/device-bundle of ds-pretrain, ds-rollout, ds-sft, ds_test_gpu_kl),
# tok/ (a 32000-piece ds-tokenize tokenizer), corpus.jsonl (the synthetic training text), prompts64.jsonl (64
# prompts of exactly 128 tokens with the raw template: {"id", "prompt", "ids"}; HF decodes the same "ids") and
# sft/ (base/ + sft.jsonl, the ds-sft GPU check). bench/README.md says how they are made.
#
# Model: bench/gpu/v3_bench_config.json for both (12 layers, 1 dense + 11 MoE with 32 routed experts top-4 and a
# shared one; no MTP, which transformers lacks). In order, each part under its own timeout so that one slow part
# leaves the rest standing:
#   1. ds_test_gpu_kl            logit-distillation op parity (CPU vs CUDA)
#   2. ds-pretrain               --device cuda --precision bf16, batch 16 x seq 1024, AdamW; tokens/s = median of
#                                the steps after DS_WARMUP warm-up steps (from --metrics); its checkpoint feeds 3.
#   3. ds-rollout                --device cuda, raw template, 128-token prompts, 256 new tokens (--ignore-eos),
#                                temperature 1; batch 1 and 64, bf16 (f32 if a bf16 run fails; BENCH_DECODE_PRECISIONS
#                                ="bf16 f32" runs both). Each batch size runs twice (1 then 5
#                                prompts at batch 1; 64 then 128 prompts at batch 64): "warm" tok/s = the extra
#                                tokens / the extra time (start-up costs cancel), "cold" = the single run. The
#                                four runs repeat BENCH_DECODE_REPS times (default 3) and summarize.py takes the
#                                median time of each: the first prompt's start-up varies by tens of ms a run.
#   4. ds-sft                    --device cuda f32 and bf16, 10 steps, against the CPU curve (bench/gpu_model)
#   5. hf_bench.py gemm,train,decode   bf16 GEMM ceiling; HF eager training; HF generate at batch 1 and 64; then
#                                HF eager training in BENCH_HF_TRAIN_REPS - 1 more processes (default 3 in all; the
#                                table's HF eager is their median)
#   6. hf_bench.py train_compile HF training under torch.compile (whatever time is left, at most 240 s)
#   7. summarize.py              one table with the ratios -> OUT_DIR/summary.txt
# Peak GPU memory of the ds programs: nvidia-smi memory.used sampled every 100 ms, minus the idle reading
# (includes the CUDA context); HF: torch.cuda.max_memory_allocated (also max_memory_reserved).
# OUT_DIR gets at most 8 files: log.txt, hf.jsonl, ds_train.jsonl, ds_decode.txt, kl_test.txt, sft_f32.jsonl,
# sft_bf16.jsonl, summary.txt. BENCH_BUDGET_S (default 420) caps the whole run. For a CPU smoke test of the script
# (no GPU, no torch): BENCH_DEVICE=cpu BENCH_CONFIG=tiny.json BENCH_SEQ=64 BENCH_BATCH=2 BENCH_NEW_TOKENS=8
# BENCH_TRAIN_PRECISION=f32 BENCH_DECODE_PRECISIONS=f32.
# BENCH_PARTS (default "kl train decode sft hf compile summary") picks parts; decode needs train's checkpoint, so a
# decode-only rerun is BENCH_PARTS="train decode" DS_STEPS=1 BENCH_BATCH=2 BENCH_SEQ=128 (a 1-step model: decode
# speed does not depend on the weights' values with --ignore-eos) and reuses an earlier run's HF figures.
set -u
D=$(cd "${1:?usage: run_bench.sh DATA_DIR OUT_DIR}" && pwd)
O=$(mkdir -p "${2:?usage: run_bench.sh DATA_DIR OUT_DIR}" && cd "$2" && pwd)
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
CFG=${BENCH_CONFIG:-$HERE/v3_bench_config.json}
DEV=${BENCH_DEVICE:-cuda} SEQ=${BENCH_SEQ:-1024} BATCH=${BENCH_BATCH:-16} NEW=${BENCH_NEW_TOKENS:-256}
TRAIN_PREC=${BENCH_TRAIN_PRECISION:-bf16} DECODE_PRECS=${BENCH_DECODE_PRECISIONS:-bf16}
BUDGET=${BENCH_BUDGET_S:-420}
PARTS=" ${BENCH_PARTS:-kl train decode sft hf compile summary} "
want() { [[ "$PARTS" == *" $1 "* ]]; }
DS_STEPS=${DS_STEPS:-15} DS_WARMUP=${DS_WARMUP:-3}
export OPENBLAS_CORETYPE=Haswell OMP_WAIT_POLICY=passive PYTHONUNBUFFERED=1
B=$(mktemp -d) && tar xJf "$D/bundle.tar.xz" -C "$B" || { echo "cannot unpack $D/bundle.tar.xz"; exit 1; }
R=$B/run
W=$(mktemp -d)
L=$O/log.txt
t0=$(date +%s)
elapsed() { echo $(( $(date +%s) - t0 )); }
st() { echo "== [$(elapsed)s] $*" | tee -a "$L"; }
left() { local l=$(( BUDGET - $(elapsed) )); [ $l -gt $1 ] && l=$1; [ $l -lt 5 ] && l=5; echo $l; }  # left CAP

# nvidia-smi sampling of the device's used memory (MiB) while a program runs
mem_idle=$(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits 2>/dev/null | head -1)
MW=
mem_start() { nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 100 >"$W/mem_$1.txt" 2>/dev/null & MW=$!; }
mem_stop() {  # prints "mem NAME PEAK_MIB_ABOVE_IDLE" into the log and ds_decode.txt
  [ -n "$MW" ] && kill "$MW" 2>/dev/null && wait "$MW" 2>/dev/null
  MW=
  local peak; peak=$(sort -n "$W/mem_$1.txt" 2>/dev/null | tail -1)
  echo "mem $1 $(( ${peak:-0} - ${mem_idle:-0} ))" | tee -a "$L" >>"$O/ds_decode.txt"
}

{ nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader
  echo "idle memory.used ${mem_idle} MiB"; uname -r; nproc; } >>"$L" 2>&1

if want kl; then
st "1. ds_test_gpu_kl"
timeout -k 10 "$(left 90)" "$R" ds_test_gpu_kl >"$O/kl_test.txt" 2>&1; echo "rc=$?" >>"$O/kl_test.txt"
tail -3 "$O/kl_test.txt" | tee -a "$L"
fi

have_ck() { [ -f "$W/ck/model.safetensors" ] || ls "$W/ck"/model-*.safetensors >/dev/null 2>&1; }
pretrain() {  # pretrain PRECISION
  mem_start train
  timeout -k 10 "$(left 200)" "$R" ds-pretrain --device "$DEV" --precision "$1" --config "$CFG" --tokenizer "$D/tok" \
    -i "$D/corpus.jsonl" -o "$W/ck" --overwrite --seq-len "$SEQ" --batch-size "$BATCH" --max-steps "$DS_STEPS" \
    --lr 3e-4 --warmup 2 --eval-fraction 0.02 --eval-batches 1 --save-dtype bf16 --seed 7 \
    --metrics "$O/ds_train.jsonl" >>"$L" 2>&1
  echo "ds-pretrain $1 rc=$?" | tee -a "$L"
  mem_stop train
}
if want train; then
st "2. ds-pretrain $TRAIN_PREC, B$BATCH x T$SEQ, $DS_STEPS steps"
pretrain "$TRAIN_PREC"
fi
if want train && ! have_ck && [ "$TRAIN_PREC" != f32 ]; then  # a checkpoint for the decode runs (and f32 training numbers)
  st "2b. ds-pretrain $TRAIN_PREC failed: f32 instead"
  echo '{"run":"f32 after a failed bf16 run"}' >>"$O/ds_train.jsonl"
  pretrain f32
fi

if want decode; then
st "3. ds-rollout (128-token prompts, $NEW new tokens, sampling)"
head -1 "$D/prompts64.jsonl" >"$W/p1.jsonl"
head -5 "$D/prompts64.jsonl" >"$W/p5.jsonl"
cp "$D/prompts64.jsonl" "$W/p64.jsonl"
cat "$D/prompts64.jsonl" "$D/prompts64.jsonl" >"$W/p128.jsonl"   # two waves of the same 64 prompts
rollout() {  # rollout PRECISION MAXBATCH PROMPTS TAG
  [ "$(left 60)" -le 10 ] && { echo "skip $4 (time)" | tee -a "$L"; return; }
  mem_start "$4"
  timeout -k 10 "$(left 60)" "$R" ds-rollout --device "$DEV" --precision "$1" --ckpt "$W/ck" -i "$W/$3.jsonl" \
    -o "$W/r_$4.jsonl" -n 1 --max-batch "$2" --template raw --ignore-eos --temperature 1 --max-new-tokens "$NEW" \
    --max-context 512 --seed 7 >"$W/r_$4.log" 2>&1
  local rc=$?
  [ $rc -ne 0 ] && decode_failed=1
  mem_stop "$4"
  echo "$4 rc=$rc $(grep -h 'prompts,' "$W/r_$4.log" | tail -1)" | tee -a "$L" >>"$O/ds_decode.txt"
  [ $rc -ne 0 ] && tail -5 "$W/r_$4.log" | tee -a "$L" >>"$O/ds_decode.txt"
  grep -h 'CUDA graph' "$W/r_$4.log" | sed "s/^/$4 /" | tee -a "$L" >>"$O/ds_decode.txt"
  [ -f "$W/r_$4.jsonl" ] && python3 -c "
import json, sys
r = [json.loads(l) for l in open(sys.argv[1])]
print('$4 check: samples', len(r), 'prompt_tokens', sorted({x['prompt_tokens'] for x in r}), 'new tokens',
      sorted({len(x['completion_tokens']) for x in r}), 'finish', sorted({x['finish_reason'] for x in r}))
" "$W/r_$4.jsonl" | tee -a "$L" >>"$O/ds_decode.txt"
}
if have_ck; then
  decode_failed=0
  for rep in $(seq "${BENCH_DECODE_REPS:-3}"); do
    for prec in $DECODE_PRECS; do
      rollout $prec 1 p1 ${prec}_b1_n1
      rollout $prec 1 p5 ${prec}_b1_n5
      rollout $prec 64 p64 ${prec}_b64_n64
      rollout $prec 64 p128 ${prec}_b64_n128
    done
  done
  if [ $decode_failed = 1 ] && [[ " $DECODE_PRECS " != *" f32 "* ]]; then  # bf16 failed: the f32 engine instead
    echo "a decode run failed: f32 runs follow" | tee -a "$L"
    rollout f32 1 p1 f32_b1_n1
    rollout f32 1 p5 f32_b1_n5
    rollout f32 64 p64 f32_b64_n64
    rollout f32 64 p128 f32_b64_n128
  fi
else
  echo "no checkpoint from ds-pretrain: decode skipped" | tee -a "$L" "$O/ds_decode.txt"
fi
fi

if want sft; then
st "4. ds-sft on the GPU (f32, bf16) vs the CPU curve"
S=(-i "$D/sft/sft.jsonl" --init-from "$D/sft/base" --overwrite --max-steps 10 --batch-size 8 --seq-len 256 --lr 1e-3
   --warmup 2 --seed 7 --log-level warn --device "$DEV")
for prec in f32 $([ "$DEV" = cpu ] || echo bf16); do
  timeout -k 10 "$(left 60)" "$R" ds-sft "${S[@]}" --precision $prec -o "$W/sft_$prec" --metrics "$O/sft_$prec.jsonl" >>"$L" 2>&1
  echo "ds-sft $prec rc=$?" | tee -a "$L"
done
fi

if want hf; then
st "5. HF eager: GEMM ceiling, training, decode"
timeout -k 10 "$(left 240)" python3 "$HERE/hf_bench.py" --config "$CFG" --prompts "$D/prompts64.jsonl" --out "$O/hf.jsonl" \
  --parts gemm,train,decode --batch "$BATCH" --seq "$SEQ" --new-tokens "$NEW" >>"$L" 2>&1
echo "hf eager rc=$?" | tee -a "$L"
# More HF eager training processes (BENCH_HF_TRAIN_REPS in all, default 3): summarize.py takes their median, as HF
# eager's tokens/s moves by up to ~15% from one process to the next.
for rep in $(seq 2 "${BENCH_HF_TRAIN_REPS:-3}"); do
  timeout -k 10 "$(left 60)" python3 "$HERE/hf_bench.py" --config "$CFG" --out "$O/hf.jsonl" --parts train \
    --batch "$BATCH" --seq "$SEQ" >>"$L" 2>&1
  echo "hf eager train $rep rc=$?" | tee -a "$L"
done
fi

if want compile; then
st "6. HF torch.compile training"
timeout -k 10 "$(left 240)" python3 "$HERE/hf_bench.py" --config "$CFG" --out "$O/hf.jsonl" --parts train_compile --batch "$BATCH" --seq "$SEQ" >>"$L" 2>&1
echo "hf compile rc=$?" | tee -a "$L"
fi

if want summary; then
st "7. summary"
python3 "$HERE/summarize.py" --out "$O" --config "$CFG" --ds-warmup "$DS_WARMUP" \
  --sft-cpu "$ROOT/bench/gpu_model/sft_cpu.jsonl" >"$O/summary.txt" 2>>"$L"
cat "$O/summary.txt"
fi
st "done"
