#!/usr/bin/env bash
# Distillation (DeepSeek-R1 §4.1) in miniature: the R1 pipeline's final model teaches a smaller student.
#   pipelines/distill.sh [BUILD_DIR]          (default build; outputs under demo/distill/, or $OUT)
#
#   0. teacher: $TEACHER (default: pipelines/r1.sh is run into $OUT/r1 and its final/ checkpoint is used)
#   1. student base: ds-pretrain of a smaller preset on the teacher's corpus with the teacher's tokenizer -> student_base/
#   2. distilled student: ds-distill (teacher traces -> reward/rejection-sampling filter -> SFT)         -> distilled/
#      with KD_WEIGHT > 0 also the same SFT plus logit distillation (KL to the teacher, beyond the paper) -> distilled_kd/
#   3. RL-only student: ds-grpo from the same student base, accuracy + format rewards                    -> rl_only/
#   4. evaluation of student_base, distilled and rl_only (and the teacher) on held-out prompts
# Every stage is skipped when its output exists. Ends with a table and a plot (distill.png) of the RL-only
# student's GRPO steps. The compute of the two students is printed (wall seconds per stage) for comparison.
#
# Environment: OUT=demo/distill DEVICE=cpu THREADS=2 TEACHER= STUDENT_CONFIG=pipelines/configs/student-dense.json
#   (3 dense layers, hidden 128; or STUDENT_PRESET=tiny|small) STUDENT_STEPS=300 KD_WEIGHT=1 SEQ_LEN=256
#   DISTILL_PROMPTS=128 DISTILL_N=8 DISTILL_TEMP=0.7 DISTILL_STEPS=40 RL_STEPS=40 G=8
#   PROMPTS_PER_STEP=4 RL_LR=5e-5 MAX_NEW=192 EVAL_N=16 EVAL_K=8 SEED=7; the r1.sh variables size the teacher.
# LAUNCH="srun ..." runs every compute stage as a job step. OPENBLAS_CORETYPE=SkylakeX is exported when the
# CPU has AVX-512.
set -euo pipefail
build=${1:-${BUILD:-build}}
bin=$build/cmd
here=$(dirname "$0")
OUT=${OUT:-demo/distill} DEVICE=${DEVICE:-cpu} THREADS=${THREADS:-2} TEACHER=${TEACHER:-}
STUDENT_PRESET=${STUDENT_PRESET:-} STUDENT_CONFIG=${STUDENT_CONFIG:-$here/configs/student-dense.json} DISTILL_TEMP=${DISTILL_TEMP:-0.7} STUDENT_STEPS=${STUDENT_STEPS:-300} KD_WEIGHT=${KD_WEIGHT:-1}
SEQ_LEN=${SEQ_LEN:-256} DISTILL_PROMPTS=${DISTILL_PROMPTS:-128} DISTILL_N=${DISTILL_N:-8} DISTILL_STEPS=${DISTILL_STEPS:-40}
RL_STEPS=${RL_STEPS:-40} G=${G:-8} PROMPTS_PER_STEP=${PROMPTS_PER_STEP:-4} RL_LR=${RL_LR:-5e-5} MAX_NEW=${MAX_NEW:-192}
EVAL_N=${EVAL_N:-16} EVAL_K=${EVAL_K:-8} SEED=${SEED:-7} TASK=${TASK:-arithmetic} DIFFICULTY=${DIFFICULTY:-basic}
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
LAUNCH=${LAUNCH:-}
if [ -z "${OPENBLAS_CORETYPE:-}" ] && grep -qw avx512f /proc/cpuinfo 2>/dev/null; then export OPENBLAS_CORETYPE=SkylakeX; fi
common=(--device "$DEVICE" --threads "$THREADS" --log-level warn)
gen=(--template chat --prefill-think --max-new-tokens "$MAX_NEW")
mkdir -p "$OUT"
t0=$(date +%s)
stage() { echo "== [$(( $(date +%s) - t0 ))s] $*"; }
timed() { local s; s=$(date +%s); "$@" || return $?; echo "$(( $(date +%s) - s ))" > "$OUT/.seconds"; }

# 0. teacher
if [ -z "$TEACHER" ]; then
  stage "teacher: pipelines/r1.sh into $OUT/r1"
  OUT=$OUT/r1 "$here/r1.sh" "$build" | sed 's/^/   r1: /'
  TEACHER=$OUT/r1/final corpus=$OUT/r1/corpus.jsonl
else
  corpus=${CORPUS:-$OUT/corpus.jsonl}
  [ -s "$corpus" ] || "$bin/ds-tasks/ds-tasks" --seed "$SEED" --log-level warn corpus --task "$TASK" \
    --difficulty "$DIFFICULTY" --n 4000 -o "$corpus"
fi

[ -s "$OUT/train_prompts.jsonl" ] || "$bin/ds-tasks/ds-tasks" --seed $(( SEED + 2 )) --log-level warn prompts --task "$TASK" \
  --split train --difficulty "$DIFFICULTY" --n $(( DISTILL_PROMPTS + RL_STEPS * PROMPTS_PER_STEP )) -o "$OUT/train_prompts.jsonl"
[ -s "$OUT/test_prompts.jsonl" ] || "$bin/ds-tasks/ds-tasks" --seed $(( SEED + 3 )) --log-level warn prompts --task "$TASK" \
  --split test --difficulty "$DIFFICULTY" --n "$EVAL_N" -o "$OUT/test_prompts.jsonl"

# 1. student base: a smaller model with the teacher's tokenizer
if [ ! -s "$OUT/student_base/model.safetensors" ]; then
  model=(--config "$STUDENT_CONFIG"); [ -n "$STUDENT_PRESET" ] && model=(--preset "$STUDENT_PRESET")
  stage "student base: ${model[*]}, $STUDENT_STEPS steps"
  $LAUNCH "$bin/ds-pretrain/ds-pretrain" "${common[@]}" -i "$corpus" -o "$OUT/student_base" --tokenizer "$TEACHER" \
    "${model[@]}" --seq-len "$SEQ_LEN" --batch-size 8 --max-steps "$STUDENT_STEPS" --lr 2e-3 --warmup 10 --overwrite
else stage "student base: exists, skipped"; fi

# ds-distill from the student base into $OUT/NAME (extra options after NAME); the traces file is shared, so a second
# student reuses the first one's traces and filter.
distill_student() {
  local name=$1; shift
  timed $LAUNCH "$bin/ds-distill/ds-distill" "${common[@]}" --seed "$SEED" --teacher "$TEACHER" \
    --student "$OUT/student_base" --prompts "$OUT/distill_prompts.jsonl" -o "$OUT/$name" --overwrite -n "$DISTILL_N" \
    --temperature "$DISTILL_TEMP" "${gen[@]}" --language en --seq-len "$SEQ_LEN" --batch-size 8 \
    --max-steps "$DISTILL_STEPS" --lr 5e-4 --traces "$OUT/traces.jsonl" "$@"
}

# 2. distilled student
if [ ! -s "$OUT/distilled/model.safetensors" ]; then
  stage "distillation: $DISTILL_PROMPTS prompts x $DISTILL_N teacher traces, $DISTILL_STEPS SFT steps"
  head -n "$DISTILL_PROMPTS" "$OUT/train_prompts.jsonl" > "$OUT/distill_prompts.jsonl"
  # ds-distill stops with an error when no teacher trace passes the filter (a weak teacher): then there is no
  # distilled student, which is reported, and the rest of the pipeline still runs.
  if distill_student distilled; then
    mv "$OUT/.seconds" "$OUT/distilled.seconds"
  elif [ -s "$OUT/traces.report.json" ] && [ ! -s "$OUT/traces.kept.jsonl" ]; then
    echo "   no teacher trace kept ($(jq -c . "$OUT/traces.report.json")): no distilled student"
  else exit 1; fi
else stage "distilled student: exists, skipped"; fi

# 2b. distilled student with logit distillation: the same kept traces, SFT + KD_WEIGHT * KL(teacher || student)
if [ "$KD_WEIGHT" != 0 ] && [ -s "$OUT/traces.kept.jsonl" ] && [ ! -s "$OUT/distilled_kd/model.safetensors" ]; then
  stage "distillation + logit KD (weight $KD_WEIGHT): the same traces, $DISTILL_STEPS SFT steps"
  distill_student distilled_kd --kd-weight "$KD_WEIGHT"
  mv "$OUT/.seconds" "$OUT/distilled_kd.seconds"
fi

# 3. RL-only student
if [ ! -s "$OUT/rl_only/model.safetensors" ]; then
  stage "RL-only student: $RL_STEPS steps x $PROMPTS_PER_STEP prompts x G=$G"
  tail -n $(( RL_STEPS * PROMPTS_PER_STEP )) "$OUT/train_prompts.jsonl" > "$OUT/rl_prompts.jsonl"
  rm -f "$OUT/rl_metrics.jsonl"
  timed $LAUNCH "$bin/ds-grpo/ds-grpo" "${common[@]}" --seed "$SEED" --ckpt "$OUT/student_base" -o "$OUT/rl_only" --overwrite \
    --steps "$RL_STEPS" --prompts "$OUT/rl_prompts.jsonl" --prompts-per-step "$PROMPTS_PER_STEP" -n "$G" "${gen[@]}" \
    --lr "$RL_LR" --save-every 0 --metrics "$OUT/rl_metrics.jsonl"
  mv "$OUT/.seconds" "$OUT/rl_only.seconds"
else stage "RL-only student: exists, skipped"; fi

# 4. evaluation
ln -sfn "$(cd "$TEACHER" && pwd)" "$OUT/teacher"
for m in student_base distilled distilled_kd rl_only teacher; do
  [ -s "$OUT/$m/model.safetensors" ] || continue
  if [ ! -s "$OUT/${m}_eval.json" ]; then
    stage "evaluating $m: $EVAL_N held-out prompts x $EVAL_K samples"
    $LAUNCH "$bin/ds-rollout/ds-rollout" "${common[@]}" --seed "$SEED" --ckpt "$OUT/$m" -i "$OUT/test_prompts.jsonl" \
      -n "$EVAL_K" --temperature 0.7 "${gen[@]}" \
      | "$bin/ds-reward/ds-reward" --log-level warn --k 1 "$EVAL_K" --summary-json "$OUT/${m}_eval.json" -o "$OUT/${m}_eval.jsonl"
  else stage "evaluation of $m: exists, skipped"; fi
done
"$here/lib/summary.sh" "$OUT" "$EVAL_K" distill "$(( $(date +%s) - t0 ))" "$OUT/rl_metrics.jsonl" student_base distilled distilled_kd rl_only teacher
echo "student compute (wall s): distilled $(cat "$OUT/distilled.seconds" 2>/dev/null || echo ?) (teacher traces + SFT), distilled+KD $(cat "$OUT/distilled_kd.seconds" 2>/dev/null || echo -) (SFT + teacher forward), RL-only $(cat "$OUT/rl_only.seconds" 2>/dev/null || echo ?)" \
  | tee -a "$OUT/summary.txt"
