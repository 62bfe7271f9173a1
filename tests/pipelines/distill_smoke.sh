#!/usr/bin/env bash
# Pipeline smoke test: pipelines/distill.sh end to end at tiny sizes (its teacher from pipelines/r1.sh, tiny),
# then a re-run that must skip every stage. A tiny teacher solves nothing, so ds-distill keeps no trace and
# the pipeline must report that and go on; the RL-only student, evaluations, table and plot must exist.
#   tests/pipelines/distill_smoke.sh SOURCE_DIR BUILD_DIR
set -euo pipefail
src=$1 build=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export OUT=$work THREADS=2 PRESET=tiny CORPUS_N=300 SEQ_LEN=192 PRETRAIN_STEPS=8 PRETRAIN_BATCH=4 COLD_N=20 SFT_STEPS=4 \
       SFT_BATCH=2 RL_STEPS=2 G=4 PROMPTS_PER_STEP=2 MAX_NEW=24 REJ_PROMPTS=2 CHAT_N=10 EVAL_N=3 EVAL_K=4 \
       STUDENT_STEPS=4 DISTILL_PROMPTS=4 DISTILL_N=2 DISTILL_STEPS=3
"$src/pipelines/distill.sh" "$build" > "$work/log" 2>&1 || { cat "$work/log"; exit 1; }
for f in r1/final/model.safetensors student_base/model.safetensors rl_only/model.safetensors traces.jsonl \
         traces.report.json student_base_eval.json rl_only_eval.json teacher_eval.json summary.txt rl_steps.tsv; do
  [ -s "$work/$f" ] || { cat "$work/log"; echo "FAIL: no $f"; exit 1; }
done
[ "$(wc -l < "$work/traces.jsonl")" -eq 8 ] || { echo "FAIL: expected 8 teacher traces"; exit 1; }
if [ -s "$work/distilled/model.safetensors" ]; then grep -q '^distilled ' "$work/summary.txt" || { echo "FAIL: no distilled row"; exit 1; }
else grep -q 'no teacher trace kept' "$work/log" || { cat "$work/log"; echo "FAIL: no distilled student and no report why"; exit 1; }; fi
grep -q '^rl_only ' "$work/summary.txt" || { echo "FAIL: no rl_only row in the table"; exit 1; }
if command -v gnuplot >/dev/null; then [ -s "$work/distill.png" ] || { echo "FAIL: no plot"; exit 1; }; fi
"$src/pipelines/distill.sh" "$build" > "$work/log2" 2>&1 || { cat "$work/log2"; exit 1; }
grep -q 'RL-only student: exists, skipped' "$work/log2" && grep -q 'student base: exists, skipped' "$work/log2" \
  || { cat "$work/log2"; echo "FAIL: the re-run did not skip the finished stages"; exit 1; }
cat "$work/summary.txt"
echo "PASS distill smoke"
