#!/usr/bin/env bash
# make demo: the CPU demo on a fresh machine.
#   pipelines/demo.sh [BUILD_DIR]     (default: build; outputs under demo/, or $DEMO_DIR)
# The first half of the R1-Zero pipeline, with every stage a ds program:
#   ds-tasks corpus (worked arithmetic solutions)  -> ds-tokenize train -> ds-pretrain --preset small
#   ds-tasks prompts (held-out test split)         -> ds-rollout (R1-Zero template) -> ds-reward --summary
# It prints the held-out loss as it falls and the base model's pass@1 / pass@4 / maj@4 and format rate.
# GRPO (ds-grpo, issue 4) takes the base checkpoint from here.
set -euo pipefail
build=${1:-build}
bin=$build/cmd
out=${DEMO_DIR:-demo}
steps=${DEMO_STEPS:-60}
n_eval=${DEMO_EVAL_PROMPTS:-32}
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
mkdir -p "$out"

if [ ! -s "$out/corpus.jsonl" ]; then
  "$bin/ds-tasks/ds-tasks" --seed 7 corpus --task arithmetic --n 4000 -o "$out/corpus.jsonl"
fi
echo "== corpus: $(wc -l < "$out/corpus.jsonl") worked solutions in $out/corpus.jsonl"

"$bin/ds-tokenize/ds-tokenize" train -i "$out/corpus.jsonl" -o "$out/tokenizer" --vocab-size 512 --log-level warn
echo "== tokenizer: $out/tokenizer"

rm -f "$out/metrics.jsonl"
"$bin/ds-pretrain/ds-pretrain" -i "$out/corpus.jsonl" -o "$out/base" --tokenizer "$out/tokenizer" --preset small \
  --seq-len 128 --batch-size 8 --max-steps "$steps" --lr 2e-3 --warmup 5 --eval-every 10 \
  --metrics "$out/metrics.jsonl" --expert-stats "$out/expert_stats.jsonl" --overwrite
echo "== held-out loss by step:"
grep eval_loss "$out/metrics.jsonl" | sed 's/[{}"]//g; s/,/  /'

"$bin/ds-tasks/ds-tasks" --seed 11 prompts --task arithmetic --split test --difficulty easy --n "$n_eval" \
  -o "$out/test_prompts.jsonl"
echo "== base model on $n_eval held-out problems (R1-Zero template, 4 samples each):"
"$bin/ds-rollout/ds-rollout" --ckpt "$out/base" -i "$out/test_prompts.jsonl" -n 4 --temperature 0.7 \
    --max-new-tokens 96 --prefill-think --log-level warn \
  | "$bin/ds-reward/ds-reward" --summary --summary-json "$out/base_eval.json" -o "$out/base_eval.jsonl"
echo "== checkpoint: $out/base ($(ls "$out/base" | tr '\n' ' '))"
