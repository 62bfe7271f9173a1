#!/usr/bin/env bash
# make demo: the CPU demo on a fresh machine.
#   pipelines/demo.sh [BUILD_DIR]     (default: build; outputs under demo/)
# Today it runs the foundation of the R1-Zero pipeline: a built-in corpus of worked arithmetic solutions ->
# a tokenizer -> pre-training of the "small" DeepSeek-V3-style preset (MLA, grouped sigmoid MoE with a shared
# expert and bias balancing, MTP), printing the held-out loss as it falls. Sampling, rewards and GRPO join
# here as their programs land (see README.md, "Status").
set -euo pipefail
build=${1:-build}
bin=$build/cmd
out=${DEMO_DIR:-demo}
steps=${DEMO_STEPS:-60}
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
mkdir -p "$out"

# A deterministic corpus of worked solutions (awk's srand(seed) makes it reproducible).
if [ ! -s "$out/corpus.jsonl" ]; then
  awk 'BEGIN { srand(7);
    for (i = 0; i < 4000; i++) {
      a = int(rand() * 100); b = int(rand() * 100); k = int(rand() * 3);
      if (k == 0) { op = "+"; r = a + b } else if (k == 1) { op = "-"; r = a - b } else { op = "*"; r = a * b }
      printf "{\"text\": \"Question: what is %d %s %d? <think> %d %s %d = %d </think> <answer> %d </answer>\"}\n", a, op, b, a, op, b, r, r
    } }' > "$out/corpus.jsonl"
fi
echo "== corpus: $(wc -l < "$out/corpus.jsonl") documents in $out/corpus.jsonl"

"$bin/ds-tokenize/ds-tokenize" train -i "$out/corpus.jsonl" -o "$out/tokenizer" --vocab-size 512 --log-level warn
echo "== tokenizer: $out/tokenizer"

rm -f "$out/metrics.jsonl"
"$bin/ds-pretrain/ds-pretrain" -i "$out/corpus.jsonl" -o "$out/base" --tokenizer "$out/tokenizer" --preset small \
  --seq-len 128 --batch-size 8 --max-steps "$steps" --lr 2e-3 --warmup 5 --eval-every 10 \
  --metrics "$out/metrics.jsonl" --expert-stats "$out/expert_stats.jsonl" --overwrite
echo "== held-out loss by step:"
grep eval_loss "$out/metrics.jsonl" | sed 's/[{}"]//g; s/,/  /'
echo "== checkpoint: $out/base ($(ls "$out/base" | tr '\n' ' '))"
