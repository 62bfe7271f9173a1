#!/usr/bin/env bash
# The end of every pipeline: a summary table of the evaluations and a PNG plot of the RL steps.
#   pipelines/lib/summary.sh OUT K NAME WALL_S "METRICS.jsonl ..." LABEL ...
# For each LABEL it reads OUT/LABEL_eval.json (ds-reward --summary-json) and OUT/LABEL_eval.jsonl (the
# rewarded rollouts) and prints pass@1, pass@K, maj@K, format rate and mean completion length in tokens.
# The metrics files (ds-grpo --metrics, one or more RL stages, in order) give OUT/NAME.png: reward,
# accuracy and mean completion length over the RL steps (steps of later stages continue the count).
# Writes OUT/summary.txt (the table) and OUT/rl_steps.tsv (the plotted data).
set -euo pipefail
out=$1 k=$2 name=$3 wall=$4 metrics=$5
shift 5
{
  printf '%-12s %8s %8s %8s %8s %10s\n' model pass@1 "pass@$k" "maj@$k" format mean_len
  for m in "$@"; do
    j=$out/${m}_eval.json r=$out/${m}_eval.jsonl
    [ -s "$j" ] || continue
    p1=$(jq -r '.all["pass@1"]' "$j"); pk=$(jq -r --arg k "$k" '.all["pass@k"][$k] // "-"' "$j")
    mk=$(jq -r --arg k "$k" '.all["maj@k"][$k] // "-"' "$j")
    fmt=$(jq -s 'if length == 0 then 0 else (map(if (.rewards.format // 0) > 0 then 1 else 0 end) | add) / length end' "$r")
    len=$(jq -s 'if length == 0 then 0 else (map(.completion_tokens | length) | add) / length end' "$r")
    printf '%-12s %8.3f %8.3f %8.3f %8.3f %10.1f\n' "$m" "$p1" "$pk" "$mk" "$fmt" "$len"
  done
  echo "wall time: ${wall}s"
} | tee "$out/summary.txt"

# RL curves: step, reward, accuracy, mean completion length (and the stage's file index)
: > "$out/rl_steps.tsv"
base=0 idx=0
for f in $metrics; do
  [ -s "$f" ] || continue
  idx=$((idx + 1))
  jq -r --argjson b "$base" --argjson i "$idx" '[.step + $b, .reward_mean, .accuracy, .completion_len_mean, $i] | @tsv' "$f" \
    >> "$out/rl_steps.tsv"
  base=$(tail -1 "$out/rl_steps.tsv" | cut -f1)
done
if [ -s "$out/rl_steps.tsv" ] && command -v gnuplot >/dev/null; then
  gnuplot <<GP
set terminal pngcairo size 900,500 noenhanced
set output "$out/$name.png"
set title "$name: GRPO over the RL steps"
set xlabel "RL step"
set ylabel "reward / accuracy"
set y2label "mean completion length (tokens)"
set ytics nomirror
set y2tics
set key left top
set grid
plot "$out/rl_steps.tsv" using 1:2 with linespoints title "reward (mean)", \
     "" using 1:3 with linespoints title "accuracy", \
     "" using 1:4 axes x1y2 with lines dashtype 2 title "completion length"
GP
  echo "plot: $out/$name.png   table: $out/summary.txt   RL steps: $out/rl_steps.tsv"
elif [ -s "$out/rl_steps.tsv" ]; then
  echo "gnuplot not found (scripts/deps.sh installs gnuplot-nox): no plot; RL steps in $out/rl_steps.tsv"
fi
