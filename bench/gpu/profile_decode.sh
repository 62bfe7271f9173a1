#!/usr/bin/env bash
# Per-kernel GPU time of one eager decode step on the bench config, with Nsight Compute (issue 5).
#
#   [BATCH=64] bench/gpu/profile_decode.sh DATA_DIR OUT_DIR        (on the GPU machine, from the repository root)
#
# DATA_DIR holds bundle.tar.xz (../shared/tools/device-bundle of ds-pretrain and ds-rollout), tok/ (the bench
# tokenizer), corpus.jsonl (a few hundred lines are enough: one training step makes the checkpoint) and
# prompts64.jsonl (bench/README.md says how they are made). BATCH (1..64) prompts decode together. Writes
# OUT_DIR/ncu_bBATCH.csv (gpu__time_duration of 1500 kernels from inside the prefill: the first decode steps) and
# prints one step's kernels by total time.
# ncu needs the Firecracker runtime (KINDS.md) and --clock-control none (the clocks are left alone). 191 weight
# conversions come first, then one prefill forward of all BATCH prompts (~400 kernels), hence the skip; the
# step is counted from the kernel after one sample_kernel to the next sample_kernel.
set -u
D=$1 O=$2
mkdir -p "$O"
B=$(mktemp -d) && tar xJf "$D/bundle.tar.xz" -C "$B"
W=$(mktemp -d)
"$B/run" ds-pretrain --device cuda --precision bf16 --config bench/gpu/v3_bench_config.json -i "$D/corpus.jsonl" \
  --tokenizer "$D/tok" -o "$W/ck" --seq-len 128 --batch-size 2 --max-steps 1 --log-level warn
BATCH=${BATCH:-64}
SKIP=${SKIP:-$((191 + 300))}
head -"$BATCH" "$D/prompts64.jsonl" >"$W/prompts.jsonl"
timeout 300 ncu --clock-control none --metrics gpu__time_duration.sum --csv --launch-skip "$SKIP" --launch-count 1500 \
  "$B/run" ds-rollout --device cuda --precision bf16 --ckpt "$W/ck" -i "$W/prompts.jsonl" -o "$W/r.jsonl" -n 1 \
  --max-batch "$BATCH" --template raw --ignore-eos --temperature 1 --max-new-tokens 3 --max-context 512 --seed 7 \
  --no-cuda-graph >"$O/ncu_b$BATCH.csv" 2>"$O/ncu.err" || { tail -5 "$O/ncu.err"; exit 1; }
python3 - "$O/ncu_b$BATCH.csv" <<'PY'
import collections, csv, sys
rows = list(csv.DictReader(l for l in open(sys.argv[1]) if l.startswith('"')))
names = [r["Kernel Name"].split("(")[0][:70] for r in rows]
ns = [float(r["Metric Value"].replace(",", "")) for r in rows]
smp = [i for i, n in enumerate(names) if "sample_kernel" in n or "sample_split_kernel" in n]  # one per step (and prefill)
if len(smp) < 2:
    sys.exit("no complete decode step in the profile: adjust SKIP")
a, b = smp[-2] + 1, smp[-1] + 1  # the last complete step: embedding ... sampling
total, count = collections.Counter(), collections.Counter()
for n, t in zip(names[a:b], ns[a:b]):
    total[n] += t; count[n] += 1
step = sum(ns[a:b])
print("decode step: %d kernels, %.3f ms of GPU time" % (b - a, step / 1e6))
for n, t in total.most_common(20):
    print("%8.1f us %5.1f%%  x%-3d %s" % (t / 1e3, 100 * t / step, count[n], n))
PY
