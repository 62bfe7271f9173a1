#!/usr/bin/env bash
# DeepSeek-R1-Zero in miniature: pure RL from a base model, no SFT.
#   pipelines/r1-zero.sh [BUILD_DIR]          (default build; outputs under demo/r1-zero/, or $OUT)
#
# Stages (each skipped when its output exists, so a re-run resumes; delete a stage's output to redo it):
#   1. ds-tasks corpus        worked solutions and drills (below)              -> $OUT/corpus.jsonl
#   2. ds-tokenize train      byte-fallback BPE tokenizer                      -> $OUT/tokenizer/
#   3. ds-pretrain            base model (configs/r1-zero-cpu.json)            -> $OUT/base/
#   4. ds-grpo (loop mode)    GRPO with the accuracy + format rewards only     -> $OUT/final/, $OUT/grpo_metrics.jsonl
#   5. ds-rollout | ds-reward base vs final on held-out test prompts          -> $OUT/{base,final}_eval.json
# It ends with a summary table ($OUT/summary.txt) and a plot of reward, accuracy and completion length over
# the RL steps ($OUT/r1-zero.png, gnuplot).
#
# The base model's corpus is R1-Zero's starting point in miniature: prose works every problem digit by digit,
# the few tagged documents (a tenth in the R1-Zero template, three tenths question + <think>/<answer>) mostly
# answer in one line (DRILL_SHARE adds documents of one-step facts; off by default). So the base can reason at length but rarely
# does so inside the template; GRPO, rewarded for accuracy and format only, finds that it pays, and the
# completions grow longer as accuracy rises (pipelines/README.md has the measured run).
#
# Scale with environment variables (defaults: about 9 minutes on a 2-core CPU):
#   OUT=demo/r1-zero DEVICE=cpu THREADS=2 TASK=arithmetic DIFFICULTY=basic CORPUS_N=36000 VOCAB=1024 SEQ_LEN=192
#   TEMPLATE_SHARE=0.1 PROSE_SHARE=0.6 VERIFY_SHARE=0 DETAIL_SHARE=1 TAGGED_DETAIL_SHARE=0.2 DRILL_SHARE=0
#   UNIFORM_WORDING=1 IMPERFECT_SHARE=0.05 (corpus styles: ds-tasks corpus --help)
#   CONFIG=pipelines/configs/r1-zero-cpu.json (or PRESET=small|tiny) PRETRAIN_STEPS=1300 PRETRAIN_BATCH=16
#   PRETRAIN_LR=3e-3 PRETRAIN_SCHEDULE=cosine RL_STEPS=60 G=16 PROMPTS_PER_STEP=4 RL_LR=1e-4 MAX_NEW=192 EVAL_N=32 EVAL_K=16 EVAL_TEMP=0.7
#   EVAL_TOP_P=1 SEED=7
# MAX_NEW must leave room for a worked solution (median ~100 tokens, the longest ~240): a cap that truncates
# them makes RL learn to skip the reasoning (an earlier default of 80 did exactly that).
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
CORPUS_N=${CORPUS_N:-36000}
TEMPLATE_SHARE=${TEMPLATE_SHARE:-0.1}
PROSE_SHARE=${PROSE_SHARE:-0.6}
VERIFY_SHARE=${VERIFY_SHARE:-0}
DETAIL_SHARE=${DETAIL_SHARE:-1}
TAGGED_DETAIL_SHARE=${TAGGED_DETAIL_SHARE:-0.2}
DRILL_SHARE=${DRILL_SHARE:-0}
UNIFORM_WORDING=${UNIFORM_WORDING:-1}
IMPERFECT_SHARE=${IMPERFECT_SHARE:-0.05}
VOCAB=${VOCAB:-1024}
PRESET=${PRESET:-}
CONFIG=${CONFIG:-$(dirname "$0")/configs/r1-zero-cpu.json}
SEQ_LEN=${SEQ_LEN:-192}
PRETRAIN_STEPS=${PRETRAIN_STEPS:-1300}
PRETRAIN_BATCH=${PRETRAIN_BATCH:-16}
PRETRAIN_LR=${PRETRAIN_LR:-3e-3}
PRETRAIN_SCHEDULE=${PRETRAIN_SCHEDULE:-cosine}
RL_STEPS=${RL_STEPS:-60}
G=${G:-16}
PROMPTS_PER_STEP=${PROMPTS_PER_STEP:-4}
RL_LR=${RL_LR:-1e-4}
TEMP=${TEMP:-1.0}
MAX_NEW=${MAX_NEW:-192}
EVAL_N=${EVAL_N:-32}
EVAL_K=${EVAL_K:-16}
EVAL_TEMP=${EVAL_TEMP:-0.7}
EVAL_TOP_P=${EVAL_TOP_P:-1}
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

# 1. corpus: worked solutions in three styles plus drills (see the header): the base knows the template and the
#    digit-by-digit methods, but rarely uses the methods inside the template.
if [ ! -s "$OUT/corpus.jsonl" ]; then
  wording=(); [ "$UNIFORM_WORDING" = 1 ] && wording=(--uniform-wording)
  stage "corpus: $CORPUS_N $TASK ($DIFFICULTY) documents"
  "$bin/ds-tasks/ds-tasks" --seed "$SEED" --log-level warn corpus --task "$TASK" --difficulty "$DIFFICULTY" \
    --n "$CORPUS_N" --template-share "$TEMPLATE_SHARE" --prose-share "$PROSE_SHARE" --verify-share "$VERIFY_SHARE" \
    --detail-share "$DETAIL_SHARE" \
    --tagged-detail-share "$TAGGED_DETAIL_SHARE" --drill-share "$DRILL_SHARE" --imperfect-share "$IMPERFECT_SHARE" --mixed-language-share 0 "${wording[@]}" -o "$OUT/corpus.jsonl"
else stage "corpus: exists, skipped"; fi

# 2. tokenizer
if [ ! -s "$OUT/tokenizer/tokenizer.model" ]; then
  stage "tokenizer: vocab $VOCAB"
  "$bin/ds-tokenize/ds-tokenize" train -i "$OUT/corpus.jsonl" -o "$OUT/tokenizer" --vocab-size "$VOCAB" --log-level warn
else stage "tokenizer: exists, skipped"; fi

# 3. base model
if [ ! -s "$OUT/base/model.safetensors" ]; then
  model=(--config "$CONFIG"); [ -n "$PRESET" ] && model=(--preset "$PRESET")
  stage "pre-training: ${model[*]}, $PRETRAIN_STEPS steps"
  rm -f "$OUT/pretrain_metrics.jsonl"
  $LAUNCH "$bin/ds-pretrain/ds-pretrain" "${common[@]}" -i "$OUT/corpus.jsonl" -o "$OUT/base" --tokenizer "$OUT/tokenizer" \
    "${model[@]}" --seq-len "$SEQ_LEN" --batch-size "$PRETRAIN_BATCH" --max-steps "$PRETRAIN_STEPS" \
    --lr "$PRETRAIN_LR" --schedule "$PRETRAIN_SCHEDULE" --warmup 10 --eval-every 100 --eval-batches 4 --metrics "$OUT/pretrain_metrics.jsonl" --overwrite
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
      -n "$EVAL_K" --temperature "$EVAL_TEMP" --top-p "$EVAL_TOP_P" --max-new-tokens "$MAX_NEW" --prefill-think -o "$OUT/${m}_rollouts.jsonl"
    "$bin/ds-reward/ds-reward" --log-level warn --k 1 "$EVAL_K" --summary-json "$OUT/${m}_eval.json" \
      -o "$OUT/${m}_eval.jsonl" "$OUT/${m}_rollouts.jsonl"
  else stage "evaluation of $m: exists, skipped"; fi
done

# summary table and plot
"$(dirname "$0")/lib/summary.sh" "$OUT" "$EVAL_K" r1-zero "$(( $(date +%s) - t0 ))" "$OUT/grpo_metrics.jsonl" base final
