#!/usr/bin/env bash
# Per-kernel GPU time of one bf16 training step on the bench config, with Nsight Compute (issue 5).
#
#   [BATCH=16 SEQ=1024] bench/gpu/profile_train.sh DATA_DIR OUT_DIR     (on the GPU machine, from the repository root)
#
# DATA_DIR as for profile_decode.sh (bundle.tar.xz with ds-pretrain, tok/, corpus.jsonl). Runs 3 optimizer steps
# under ncu (--clock-control none: the clocks are left alone) and prints the kernels of the second step
# (after step 1's last AdamW kernel up to step 2's) by total time. Writes OUT_DIR/ncu_train.csv.
set -u
D=$1 O=$2
mkdir -p "$O"
B=$(mktemp -d) && tar xJf "$D/bundle.tar.xz" -C "$B"
W=$(mktemp -d)
BATCH=${BATCH:-16} SEQ=${SEQ:-1024}
timeout "${PROFILE_TIMEOUT:-300}" ncu --clock-control none --metrics gpu__time_duration.sum --csv \
  "$B/run" ds-pretrain --device cuda --precision bf16 --config bench/gpu/v3_bench_config.json -i "$D/corpus.jsonl" \
  --tokenizer "$D/tok" -o "$W/ck" --seq-len "$SEQ" --batch-size "$BATCH" --max-steps 3 --warmup 2 --lr 3e-4 \
  --eval-fraction 0.02 --eval-batches 1 --save-dtype bf16 --seed 7 --log-level warn \
  >"$O/ncu_train.csv" 2>"$O/ncu_train.err" || { tail -5 "$O/ncu_train.err"; }
python3 - "$O/ncu_train.csv" <<'PY'
import collections, csv, sys
rows = list(csv.DictReader(l for l in open(sys.argv[1]) if l.startswith('"')))
names = [r["Kernel Name"].split("(")[0][:80] for r in rows]
ns = [float(r["Metric Value"].replace(",", "")) for r in rows]
ad = [i for i, n in enumerate(names) if "adamw_kernel" in n]  # one per parameter tensor, at each step's end
ends = [i for j, i in enumerate(ad) if j + 1 == len(ad) or ad[j + 1] - i > 20]
if len(ends) < 2:
    sys.exit("fewer than two optimizer steps in the profile (%d kernels)" % len(rows))
a, b = ends[0] + 1, ends[1] + 1  # step 2: forward, backward, gradient norm, AdamW
total, count = collections.Counter(), collections.Counter()
for n, t in zip(names[a:b], ns[a:b]):
    total[n] += t; count[n] += 1
step = sum(ns[a:b])
print("training step: %d kernels, %.2f ms of GPU time (%d kernels profiled, %d steps seen)" % (b - a, step / 1e6, len(rows), len(ends)))
for n, t in total.most_common(30):
    print("%9.1f us %5.1f%%  x%-4d %s" % (t / 1e3, 100 * t / step, count[n], n))
PY
