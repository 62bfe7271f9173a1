#!/usr/bin/env bash
# Pipeline smoke test: the demo end to end at a reduced step count; the demo-size model's held-out loss
# must fall during the run (first evaluation at step 0 vs the last).
#   tests/pipelines/demo_smoke.sh SOURCE_DIR BUILD_DIR
set -euo pipefail
src=$1 build=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
DEMO_DIR=$work DEMO_STEPS=20 DEMO_EVAL_PROMPTS=4 "$src/pipelines/demo.sh" "$build" > "$work/log" 2>&1 || { cat "$work/log"; exit 1; }
first=$(grep eval_loss "$work/metrics.jsonl" | head -1 | sed 's/.*"eval_loss":\([0-9.e+-]*\).*/\1/')
last=$(grep eval_loss "$work/metrics.jsonl" | tail -1 | sed 's/.*"eval_loss":\([0-9.e+-]*\).*/\1/')
echo "held-out loss: step 0 $first -> step 20 $last"
awk -v a="$first" -v b="$last" 'BEGIN { exit !(b < a - 1.0) }' || { echo "FAIL: held-out loss did not fall by > 1 nat"; exit 1; }
[ -s "$work/base_eval.json" ] && grep -q pass "$work/base_eval.json" || { echo "FAIL: no evaluation summary"; exit 1; }
[ "$(wc -l < "$work/base_eval.jsonl")" -eq 16 ] || { echo "FAIL: expected 16 rewarded rollouts"; exit 1; }
for f in config.json model.safetensors tokenizer.model optimizer.safetensors trainer_state.json; do
  [ -s "$work/base/$f" ] || { echo "FAIL: checkpoint lacks $f"; exit 1; }
done
echo "PASS demo smoke"
