#!/usr/bin/env bash
# DeepSeek-R1-Zero in miniature: pure RL from a base model, no SFT.
#   pipelines/r1-zero.sh [BUILD_DIR]          (default build; outputs under demo/r1-zero/, or $OUT)
#
# Stages (each skipped when its output exists, so a re-run resumes; delete a stage's output to redo it):
#   1. ds-tasks corpus        worked solutions, a fifth in the R1-Zero template-> $OUT/corpus.jsonl
#   2. ds-tokenize train      byte-fallback BPE tokenizer                      -> $OUT/tokenizer/
#   3. ds-pretrain            base model from a preset                         -> $OUT/base/
#   4. ds-grpo (loop mode)    GRPO with the accuracy + format rewards only     -> $OUT/final/, $OUT/grpo_metrics.jsonl
#   5. ds-rollout | ds-reward base vs final on held-out test prompts          -> $OUT/{base,final}_eval.json
# It ends with a summary table ($OUT/summary.txt) and a plot of reward, accuracy and completion length over
# the RL steps ($OUT/r1-zero.png, gnuplot).
#
# Scale with environment variables (defaults run on a 2-core CPU in a few minutes):
#   OUT=demo/r1-zero DEVICE=cpu THREADS=2 TASK=arithmetic DIFFICULTY=basic CORPUS_N=12000 VOCAB=1024 SEQ_LEN=192
#   TEMPLATE_SHARE=0.2 PROSE_SHARE=0.4 VERIFY_SHARE=0 IMPERFECT_SHARE=0.05 (corpus styles: ds-tasks corpus)
#   PRESET=small (or CONFIG=path/to/config.json) PRETRAIN_STEPS=800 PRETRAIN_BATCH=8 PRETRAIN_LR=3e-3
#   RL_STEPS=80 G=8 PROMPTS_PER_STEP=4 RL_LR=1e-4 MAX_NEW=80 EVAL_N=32 EVAL_K=16 SEED=7
# Completions stop at the template's "</answer>" (kept in the text, so the format reward sees it) or at EOS.
# LAUNCH="srun ..." runs every compute stage as a job step (pipelines/slurm/r1-zero.sbatch).
# OPENBLAS_CORETYPE=SkylakeX is exported when the CPU has AVX-512 (matrix products ~4x faster on the
# reference machine's CPU); set OPENBLAS_CORETYPE yourself to override.
set -euo pipefail
build=${1:-${BUILD:-build}}
bin=$build/cmd
OUT=${OUT:-demo/r1-zero}
DEVICE=${DEVICE:-cpu}
THREADS=${THREADS:-2}
TASK=${TASK:-arithmetic}
DIFFICULTY=${DIFFICULTY:-basic}
CORPUS_N=${CORPUS_N:-12000}
TEMPLATE_SHARE=${TEMPLATE_SHARE:-0.2}
PROSE_SHARE=${PROSE_SHARE:-0.4}
VERIFY_SHARE=${VERIFY_SHARE:-0}
IMPERFECT_SHARE=${IMPERFECT_SHARE:-0.05}
VOCAB=${VOCAB:-1024}
PRESET=${PRESET:-small}
CONFIG=${CONFIG:-}
SEQ_LEN=${SEQ_LEN:-192}
PRETRAIN_STEPS=${PRETRAIN_STEPS:-800}
PRETRAIN_BATCH=${PRETRAIN_BATCH:-8}
PRETRAIN_LR=${PRETRAIN_LR:-3e-3}
RL_STEPS=${RL_STEPS:-80}
G=${G:-8}
PROMPTS_PER_STEP=${PROMPTS_PER_STEP:-4}
RL_LR=${RL_LR:-1e-4}
TEMP=${TEMP:-1.0}
MAX_NEW=${MAX_NEW:-80}
EVAL_N=${EVAL_N:-32}
EVAL_K=${EVAL_K:-16}
EVAL_TEMP=${EVAL_TEMP:-0.7}
SEED=${SEED:-7}

export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
LAUNCH=${LAUNCH:-}  # prefix of the compute stages, e.g. "srun --ntasks=1" (pipelines/slurm/*.sbatch)
if [ -z "${OPENBLAS_CORETYPE:-}" ] && grep -qw avx512f /proc/cpuinfo 2>/dev/null; then
  export OPENBLAS_CORETYPE=SkylakeX
fi
common=(--device "$DEVICE" --threads "$THREADS" --log-level warn)
mkdir -p "$OUT"
t0=$(date +%s)
stage() { echo "== [$(( $(date +%s) - t0 ))s] $*"; }

# 1. corpus: worked solutions in several styles; a fifth in the R1-Zero template, so the base model knows the tags
#    but does not always use them (RL has a format to teach, as with a real base model).
if [ ! -s "$OUT/corpus.jsonl" ]; then
  stage "corpus: $CORPUS_N $TASK ($DIFFICULTY) documents"
  "$bin/ds-tasks/ds-tasks" --seed "$SEED" --log-level warn corpus --task "$TASK" --difficulty "$DIFFICULTY" \
    --n "$CORPUS_N" --template-share "$TEMPLATE_SHARE" --prose-share "$PROSE_SHARE" --verify-share "$VERIFY_SHARE" \
    --imperfect-share "$IMPERFECT_SHARE" --mixed-language-share 0 -o "$OUT/corpus.jsonl"
else stage "corpus: exists, skipped"; fi

# 2. tokenizer
if [ ! -s "$OUT/tokenizer/tokenizer.model" ]; then
  stage "tokenizer: vocab $VOCAB"
  "$bin/ds-tokenize/ds-tokenize" train -i "$OUT/corpus.jsonl" -o "$OUT/tokenizer" --vocab-size "$VOCAB" --log-level warn
else stage "tokenizer: exists, skipped"; fi

# 3. base model
if [ ! -s "$OUT/base/model.safetensors" ]; then
  model=(--preset "$PRESET"); [ -n "$CONFIG" ] && model=(--config "$CONFIG")
  stage "pre-training: ${model[*]}, $PRETRAIN_STEPS steps"
  rm -f "$OUT/pretrain_metrics.jsonl"
  $LAUNCH "$bin/ds-pretrain/ds-pretrain" "${common[@]}" -i "$OUT/corpus.jsonl" -o "$OUT/base" --tokenizer "$OUT/tokenizer" \
    "${model[@]}" --seq-len "$SEQ_LEN" --batch-size "$PRETRAIN_BATCH" --max-steps "$PRETRAIN_STEPS" \
    --lr "$PRETRAIN_LR" --warmup 10 --eval-every 50 --metrics "$OUT/pretrain_metrics.jsonl" --overwrite
else stage "base model: exists, skipped"; fi

# prompts: RL on the train split, evaluation on the disjoint test split
[ -s "$OUT/train_prompts.jsonl" ] || "$bin/ds-tasks/ds-tasks" --seed "$SEED" --log-level warn prompts --task "$TASK" \
  --split train --difficulty "$DIFFICULTY" --n $(( RL_STEPS * PROMPTS_PER_STEP + 64 )) -o "$OUT/train_prompts.jsonl"
[ -s "$OUT/test_prompts.jsonl" ] || "$bin/ds-tasks/ds-tasks" --seed "$(( SEED + 1 ))" --log-level warn prompts --task "$TASK" \
  --split test --difficulty "$DIFFICULTY" --n "$EVAL_N" -o "$OUT/test_prompts.jsonl"

# 4. GRPO, accuracy + format rewards only (ds-reward's default rules, in process), no SFT, no KL term
if [ ! -s "$OUT/final/model.safetensors" ]; then
  stage "GRPO: $RL_STEPS steps x $PROMPTS_PER_STEP prompts x G=$G"
  rm -f "$OUT/grpo_metrics.jsonl" "$OUT/grpo_rollouts.jsonl"
  $LAUNCH "$bin/ds-grpo/ds-grpo" "${common[@]}" --seed "$SEED" --ckpt "$OUT/base" -o "$OUT/final" --overwrite \
    --steps "$RL_STEPS" --prompts "$OUT/train_prompts.jsonl" --prompts-per-step "$PROMPTS_PER_STEP" -n "$G" \
    --temperature "$TEMP" --max-new-tokens "$MAX_NEW" --prefill-think --lr "$RL_LR" --save-every 0 \
    --metrics "$OUT/grpo_metrics.jsonl" --rollouts-out "$OUT/grpo_rollouts.jsonl"
else stage "GRPO: exists, skipped"; fi

# 5. evaluation of base vs final on the held-out prompts: EVAL_K samples each
for m in base final; do
  if [ ! -s "$OUT/${m}_eval.json" ]; then
    stage "evaluating $m: $EVAL_N held-out prompts x $EVAL_K samples"
    $LAUNCH "$bin/ds-rollout/ds-rollout" "${common[@]}" --seed "$SEED" --ckpt "$OUT/$m" -i "$OUT/test_prompts.jsonl" \
      -n "$EVAL_K" --temperature "$EVAL_TEMP" --max-new-tokens "$MAX_NEW" --prefill-think -o "$OUT/${m}_rollouts.jsonl"
    "$bin/ds-reward/ds-reward" --log-level warn --k 1 "$EVAL_K" --summary-json "$OUT/${m}_eval.json" \
      -o "$OUT/${m}_eval.jsonl" "$OUT/${m}_rollouts.jsonl"
  else stage "evaluation of $m: exists, skipped"; fi
done

# summary table and plot
"$(dirname "$0")/lib/summary.sh" "$OUT" "$EVAL_K" r1-zero "$(( $(date +%s) - t0 ))" "$OUT/grpo_metrics.jsonl" base final
