#!/usr/bin/env bash
# DeepSeek-R1's four stages in miniature, on the built-in tasks.
#   pipelines/r1.sh [BUILD_DIR]          (default build; outputs under demo/r1/, or $OUT)
#
#   0. base: ds-tasks corpus (with a share of mixed-language reasoning) -> ds-tokenize -> ds-pretrain  -> base/
#   1. cold start: ds-sft of base on ds-tasks coldstart (long-CoT examples, R1 output format; COLD_MIXED_SHARE
#      of them mix Chinese into the reasoning, so the small cold model mixes languages as R1-Zero did)  -> cold/
#   2. reasoning RL: ds-grpo on reasoning prompts, accuracy + format + language-consistency rewards
#      (ds-reward through --reward-cmd)                                                                 -> rl1/
#      ablation (LANG_ABLATION=1): the same RL without the language reward                             -> rl1_nolang/
#   3. rejection sampling: rl1 samples on train prompts -> ds-reward -> ds-rejsample (correct, readable,
#      single-language) + ds-tasks chat (non-reasoning data) -> ds-sft from the BASE                    -> sft2/
#   4. RL for all scenarios: reasoning prompts (rule rewards, language consistency) and general chat
#      prompts (a simple rule-based helpfulness reward: the reference reply in the answer tags)        -> final/
# Evaluation on held-out reasoning prompts of cold, rl1 (and rl1_nolang) and final: pass@1, maj@k, format rate, length and
# the mixed-language rate of the chains of thought (share of samples whose language reward is below 1).
# Every stage is skipped when its output exists. Ends with a table and a plot (r1.png) of both RL stages.
#
# Environment (defaults run on a 2-core CPU): OUT=demo/r1 DEVICE=cpu THREADS=2 TASK=arithmetic DIFFICULTY=basic
#   CORPUS_N=4000 MIXED_SHARE=0.3 VOCAB=1024 PRESET=small (or CONFIG=config.json) SEQ_LEN=256
#   PRETRAIN_STEPS=300 PRETRAIN_BATCH=8 COLD_N=400 COLD_MIXED_SHARE=0.3 SFT_STEPS=40 SFT_BATCH=8 SFT_LR=5e-4
#   RL_STEPS=24 G=8 PROMPTS_PER_STEP=4 RL_LR=1e-4 LANG_WEIGHT=1 LANG_ABLATION=1 MAX_NEW=192 REJ_PROMPTS=32 CHAT_N=200
#   EVAL_N=16 EVAL_K=8 SEED=7
# LAUNCH="srun ..." runs every compute stage as a job step (pipelines/slurm/r1.sbatch).
# OPENBLAS_CORETYPE=SkylakeX is exported when the CPU has AVX-512 (faster matrix products); override by
# setting it.
set -euo pipefail
build=${1:-${BUILD:-build}}
bin=$build/cmd
here=$(dirname "$0")
OUT=${OUT:-demo/r1} DEVICE=${DEVICE:-cpu} THREADS=${THREADS:-2} TASK=${TASK:-arithmetic} DIFFICULTY=${DIFFICULTY:-basic}
CORPUS_N=${CORPUS_N:-4000} MIXED_SHARE=${MIXED_SHARE:-0.3} VOCAB=${VOCAB:-1024} PRESET=${PRESET:-small} CONFIG=${CONFIG:-}
SEQ_LEN=${SEQ_LEN:-256} PRETRAIN_STEPS=${PRETRAIN_STEPS:-300} PRETRAIN_BATCH=${PRETRAIN_BATCH:-8}
COLD_N=${COLD_N:-400} COLD_MIXED_SHARE=${COLD_MIXED_SHARE:-0.3} LANG_ABLATION=${LANG_ABLATION:-1} SFT_STEPS=${SFT_STEPS:-40} SFT_BATCH=${SFT_BATCH:-8} SFT_LR=${SFT_LR:-5e-4}
RL_STEPS=${RL_STEPS:-24} G=${G:-8} PROMPTS_PER_STEP=${PROMPTS_PER_STEP:-4} RL_LR=${RL_LR:-1e-4} LANG_WEIGHT=${LANG_WEIGHT:-1}
MAX_NEW=${MAX_NEW:-192} REJ_PROMPTS=${REJ_PROMPTS:-32} CHAT_N=${CHAT_N:-200} EVAL_N=${EVAL_N:-16} EVAL_K=${EVAL_K:-8}
SEED=${SEED:-7}
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
LAUNCH=${LAUNCH:-}  # prefix of the compute stages, e.g. "srun --ntasks=1" (pipelines/slurm/*.sbatch)
if [ -z "${OPENBLAS_CORETYPE:-}" ] && grep -qw avx512f /proc/cpuinfo 2>/dev/null; then export OPENBLAS_CORETYPE=SkylakeX; fi
common=(--device "$DEVICE" --threads "$THREADS" --log-level warn)
tasks=("$bin/ds-tasks/ds-tasks" --seed "$SEED" --log-level warn)
mkdir -p "$OUT"
t0=$(date +%s)
stage() { echo "== [$(( $(date +%s) - t0 ))s] $*"; }
done_ckpt() { [ -s "$1/model.safetensors" ] && { stage "$2: exists, skipped"; true; }; }

# 0. base model
if [ ! -s "$OUT/base/model.safetensors" ]; then
  stage "base: corpus $CORPUS_N, tokenizer $VOCAB, pre-training $PRETRAIN_STEPS steps"
  "${tasks[@]}" corpus --task "$TASK" --difficulty "$DIFFICULTY" --n "$CORPUS_N" --template-share 0.5 \
    --mixed-language-share "$MIXED_SHARE" -o "$OUT/corpus.jsonl"
  "$bin/ds-tokenize/ds-tokenize" train -i "$OUT/corpus.jsonl" -o "$OUT/tokenizer" --vocab-size "$VOCAB" --log-level warn
  model=(--preset "$PRESET"); [ -n "$CONFIG" ] && model=(--config "$CONFIG")
  $LAUNCH "$bin/ds-pretrain/ds-pretrain" "${common[@]}" -i "$OUT/corpus.jsonl" -o "$OUT/base" --tokenizer "$OUT/tokenizer" \
    "${model[@]}" --seq-len "$SEQ_LEN" --batch-size "$PRETRAIN_BATCH" --max-steps "$PRETRAIN_STEPS" --lr 2e-3 --warmup 10 \
    --overwrite
else stage "base: exists, skipped"; fi

[ -s "$OUT/train_prompts.jsonl" ] || "${tasks[@]}" prompts --task "$TASK" --split train --difficulty "$DIFFICULTY" \
  --n $(( 2 * RL_STEPS * PROMPTS_PER_STEP + REJ_PROMPTS )) -o "$OUT/train_prompts.jsonl"
[ -s "$OUT/test_prompts.jsonl" ] || "$bin/ds-tasks/ds-tasks" --seed $(( SEED + 1 )) --log-level warn prompts --task "$TASK" \
  --split test --difficulty "$DIFFICULTY" --n "$EVAL_N" -o "$OUT/test_prompts.jsonl"

rewards="$bin/ds-reward/ds-reward --log-level warn --language-weight $LANG_WEIGHT --language en"
grpo() {  # grpo INIT OUTPUT PROMPTS METRICS [REWARD_CMD]
  rm -f "$4"
  $LAUNCH "$bin/ds-grpo/ds-grpo" "${common[@]}" --seed "$SEED" --ckpt "$1" -o "$2" --overwrite --steps "$RL_STEPS" \
    --prompts "$3" --prompts-per-step "$PROMPTS_PER_STEP" -n "$G" --template chat --prefill-think \
    --max-new-tokens "$MAX_NEW" --lr "$RL_LR" --save-every 0 --reward-cmd "${5:-$rewards}" --metrics "$4"
}
sft() {  # sft INIT DATA OUTPUT
  $LAUNCH "$bin/ds-sft/ds-sft" "${common[@]}" --init-from "$1" -i "$2" -o "$3" --overwrite --seq-len "$SEQ_LEN" \
    --batch-size "$SFT_BATCH" --max-steps "$SFT_STEPS" --lr "$SFT_LR" --prefill-think
}

# 1. cold start
if ! done_ckpt "$OUT/cold" "cold-start SFT"; then
  stage "cold-start SFT: $COLD_N long-CoT examples, $SFT_STEPS steps"
  "${tasks[@]}" coldstart --task "$TASK" --difficulty "$DIFFICULTY" --n "$COLD_N" --no-summary \
    --mixed-language-share "$COLD_MIXED_SHARE" -o "$OUT/coldstart.jsonl"
  sft "$OUT/base" "$OUT/coldstart.jsonl" "$OUT/cold"
fi

# 2. reasoning RL with the language-consistency reward
if ! done_ckpt "$OUT/rl1" "reasoning RL"; then
  stage "reasoning RL: $RL_STEPS steps x $PROMPTS_PER_STEP prompts x G=$G, language weight $LANG_WEIGHT"
  head -n $(( RL_STEPS * PROMPTS_PER_STEP )) "$OUT/train_prompts.jsonl" > "$OUT/rl1_prompts.jsonl"
  grpo "$OUT/cold" "$OUT/rl1" "$OUT/rl1_prompts.jsonl" "$OUT/rl1_metrics.jsonl"
fi

# 2b. ablation: the same reasoning RL without the language reward (same prompts, seed, steps)
if [ "$LANG_ABLATION" = 1 ] && ! done_ckpt "$OUT/rl1_nolang" "reasoning RL without the language reward"; then
  stage "ablation: reasoning RL without the language reward"
  grpo "$OUT/cold" "$OUT/rl1_nolang" "$OUT/rl1_prompts.jsonl" "$OUT/rl1_nolang_metrics.jsonl" \
    "$bin/ds-reward/ds-reward --log-level warn --language-weight 0"
fi

# 3. rejection sampling + non-reasoning data, SFT from the base
if ! done_ckpt "$OUT/sft2" "rejection-sampling SFT"; then
  stage "rejection sampling: $REJ_PROMPTS prompts x $G samples from rl1, + $CHAT_N chat examples, SFT from base"
  tail -n "$REJ_PROMPTS" "$OUT/train_prompts.jsonl" \
    | $LAUNCH "$bin/ds-rollout/ds-rollout" "${common[@]}" --seed "$SEED" --ckpt "$OUT/rl1" -n "$G" --template chat --prefill-think \
        --max-new-tokens "$MAX_NEW" \
    | $rewards -o "$OUT/rej_rewarded.jsonl"
  "$bin/ds-rejsample/ds-rejsample" --log-level warn --min-reward 1 --language en --max-per-prompt 4 \
    --report-json "$OUT/rejsample_report.json" -o "$OUT/rej_sft.jsonl" "$OUT/rej_rewarded.jsonl"
  "${tasks[@]}" chat --n "$CHAT_N" -o "$OUT/chat.jsonl"
  # the cold-start problems again, written without language mixing (R1 filters stage 3's reasoning data for it)
  "${tasks[@]}" coldstart --task "$TASK" --difficulty "$DIFFICULTY" --n "$COLD_N" --no-summary -o "$OUT/coldstart_clean.jsonl"
  cat "$OUT/rej_sft.jsonl" "$OUT/coldstart_clean.jsonl" "$OUT/chat.jsonl" > "$OUT/sft2_data.jsonl"
  echo "   kept $(wc -l < "$OUT/rej_sft.jsonl") rejection samples; SFT data $(wc -l < "$OUT/sft2_data.jsonl") conversations"
  sft "$OUT/base" "$OUT/sft2_data.jsonl" "$OUT/sft2"
fi

# 4. RL for all scenarios: reasoning prompts + general chat prompts
if ! done_ckpt "$OUT/final" "RL for all scenarios"; then
  stage "RL for all scenarios: reasoning + chat prompts"
  tail -n $(( (RL_STEPS * PROMPTS_PER_STEP + 1) / 2 )) "$OUT/rl1_prompts.jsonl" > "$OUT/rl2_reasoning.jsonl"
  "${tasks[@]}" chat --n $(( (RL_STEPS * PROMPTS_PER_STEP + 1) / 2 )) --multi-turn-share 0 \
    | jq -c '{id, task, prompt: .messages[0].content, answer: (.messages[1].content | rtrimstr("."))}' > "$OUT/rl2_chat.jsonl"
  paste -d '\n' "$OUT/rl2_reasoning.jsonl" "$OUT/rl2_chat.jsonl" | grep -v '^$' > "$OUT/rl2_prompts.jsonl"
  grpo "$OUT/sft2" "$OUT/final" "$OUT/rl2_prompts.jsonl" "$OUT/rl2_metrics.jsonl"
fi

# evaluation on held-out reasoning prompts
evaluated="cold rl1 final"
[ "$LANG_ABLATION" = 1 ] && evaluated="cold rl1 rl1_nolang final"
for m in $evaluated; do
  if [ ! -s "$OUT/${m}_eval.json" ]; then
    stage "evaluating $m: $EVAL_N held-out prompts x $EVAL_K samples"
    $LAUNCH "$bin/ds-rollout/ds-rollout" "${common[@]}" --seed "$SEED" --ckpt "$OUT/$m" -i "$OUT/test_prompts.jsonl" -n "$EVAL_K" \
      --temperature 0.7 --template chat --prefill-think --max-new-tokens "$MAX_NEW" \
      | $rewards --k 1 "$EVAL_K" --summary-json "$OUT/${m}_eval.json" -o "$OUT/${m}_eval.jsonl"
  else stage "evaluation of $m: exists, skipped"; fi
done
"$here/lib/summary.sh" "$OUT" "$EVAL_K" r1 "$(( $(date +%s) - t0 ))" "$OUT/rl1_metrics.jsonl $OUT/rl2_metrics.jsonl" $evaluated
echo "mixed-language rate of the chains of thought (language reward < 1):" | tee -a "$OUT/summary.txt"
for m in $evaluated; do
  jq -s --arg m "$m" '"  \($m): \(if length == 0 then 0 else (map(if (.rewards.language // 1) < 1 then 1 else 0 end) | add) / length end)"' \
    -r "$OUT/${m}_eval.jsonl"
done | tee -a "$OUT/summary.txt"
