#!/usr/bin/env bash
# Pipeline smoke test: pipelines/r1-zero.sh end to end at tiny sizes (seconds), then a re-run that must skip
# every stage. Checks the evaluation summaries, the GRPO metrics, the table and the plot.
#   tests/pipelines/r1_zero_smoke.sh SOURCE_DIR BUILD_DIR
set -euo pipefail
src=$1 build=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export OUT=$work THREADS=2 PRESET=tiny CORPUS_N=300 SEQ_LEN=128 PRETRAIN_STEPS=8 PRETRAIN_BATCH=4 RL_STEPS=2 G=4 \
       PROMPTS_PER_STEP=2 MAX_NEW=24 EVAL_N=3 EVAL_K=4
"$src/pipelines/r1-zero.sh" "$build" > "$work/log" 2>&1 || { cat "$work/log"; exit 1; }
for f in base/model.safetensors final/model.safetensors base_eval.json final_eval.json summary.txt rl_steps.tsv; do
  [ -s "$work/$f" ] || { cat "$work/log"; echo "FAIL: no $f"; exit 1; }
done
[ "$(wc -l < "$work/grpo_metrics.jsonl")" -eq 2 ] || { echo "FAIL: expected 2 GRPO metric records"; exit 1; }
[ "$(wc -l < "$work/final_eval.jsonl")" -eq 12 ] || { echo "FAIL: expected 12 rewarded rollouts"; exit 1; }
grep -q '^final ' "$work/summary.txt" || { echo "FAIL: no final row in the table"; exit 1; }
if command -v gnuplot >/dev/null; then [ -s "$work/r1-zero.png" ] || { echo "FAIL: no plot"; exit 1; }; fi
"$src/pipelines/r1-zero.sh" "$build" > "$work/log2" 2>&1 || { cat "$work/log2"; exit 1; }
[ "$(grep -c 'skipped' "$work/log2")" -ge 6 ] || { cat "$work/log2"; echo "FAIL: the re-run did not skip the finished stages"; exit 1; }
cat "$work/summary.txt"
echo "PASS r1-zero smoke"
