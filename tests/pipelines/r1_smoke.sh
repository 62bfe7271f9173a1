#!/usr/bin/env bash
# Pipeline smoke test: pipelines/r1.sh (four stages) end to end at tiny sizes (seconds), then a re-run that must skip
# every stage. Checks the evaluation summaries, the GRPO metrics, the table and the plot.
#   tests/pipelines/r1_zero_smoke.sh SOURCE_DIR BUILD_DIR
set -euo pipefail
src=$1 build=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export OUT=$work THREADS=2 PRESET=tiny CORPUS_N=300 SEQ_LEN=192 PRETRAIN_STEPS=8 PRETRAIN_BATCH=4 COLD_N=20 SFT_STEPS=4 \
       SFT_BATCH=2 RL_STEPS=2 G=4 PROMPTS_PER_STEP=2 MAX_NEW=24 REJ_PROMPTS=2 CHAT_N=10 EVAL_N=3 EVAL_K=4
"$src/pipelines/r1.sh" "$build" > "$work/log" 2>&1 || { cat "$work/log"; exit 1; }
for f in base/model.safetensors cold/model.safetensors rl1/model.safetensors sft2/model.safetensors \
         final/model.safetensors rl1_nolang/model.safetensors rl1_nolang_eval.json cold_eval.json rl1_eval.json rejsample_report.json final_eval.json summary.txt rl_steps.tsv; do
  [ -s "$work/$f" ] || { cat "$work/log"; echo "FAIL: no $f"; exit 1; }
done
[ "$(cat "$work/rl1_metrics.jsonl" "$work/rl2_metrics.jsonl" | wc -l)" -eq 4 ] || { echo "FAIL: expected 2+2 GRPO metric records"; exit 1; }
grep -q "chat" "$work/rl2_prompts.jsonl" || { echo "FAIL: no chat prompts in the last RL stage"; exit 1; }
grep -q "mixed-language rate" "$work/summary.txt" || { echo "FAIL: no mixed-language rate"; exit 1; }
[ "$(wc -l < "$work/final_eval.jsonl")" -eq 12 ] || { echo "FAIL: expected 12 rewarded rollouts"; exit 1; }
grep -q '^final ' "$work/summary.txt" || { echo "FAIL: no final row in the table"; exit 1; }
grep -q '^  rl1_nolang: ' "$work/summary.txt" || { echo "FAIL: no mixed-language rate of the ablation"; exit 1; }
if command -v gnuplot >/dev/null; then [ -s "$work/r1.png" ] || { echo "FAIL: no plot"; exit 1; }; fi
"$src/pipelines/r1.sh" "$build" > "$work/log2" 2>&1 || { cat "$work/log2"; exit 1; }
[ "$(grep -c 'skipped' "$work/log2")" -ge 9 ] || { cat "$work/log2"; echo "FAIL: the re-run did not skip the finished stages"; exit 1; }
cat "$work/summary.txt"
echo "PASS r1 smoke"
