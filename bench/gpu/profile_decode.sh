#!/usr/bin/env bash
# Per-kernel GPU time of one eager decode step at batch 64 on the bench config, with Nsight Compute (issue 5).
#
#   bench/gpu/profile_decode.sh DATA_DIR OUT_DIR        (on the GPU machine, from the repository root)
#
# DATA_DIR holds bundle.tar.xz (../shared/tools/device-bundle of ds-pretrain and ds-rollout), tok/ (the bench
# tokenizer), corpus.jsonl (a few hundred lines are enough: one training step makes the checkpoint) and
# prompts64.jsonl (bench/README.md says how they are made). Writes OUT_DIR/ncu.csv (gpu__time_duration of 900
# kernels: the first two decode steps) and prints the step's kernels by total time.
# ncu needs the Firecracker runtime (KINDS.md) and --clock-control none (the clocks are left alone). Prefill runs
# one prompt at a time, 378 kernels per forward on this config; 191 weight conversions come first, hence the skip.
set -u
D=$1 O=$2
mkdir -p "$O"
B=$(mktemp -d) && tar xJf "$D/bundle.tar.xz" -C "$B"
W=$(mktemp -d)
"$B/run" ds-pretrain --device cuda --precision bf16 --config bench/gpu/v3_bench_config.json -i "$D/corpus.jsonl" \
  --tokenizer "$D/tok" -o "$W/ck" --seq-len 128 --batch-size 2 --max-steps 1 --log-level warn
SKIP=${SKIP:-$((191 + 64 * 378))}
timeout 300 ncu --clock-control none --metrics gpu__time_duration.sum --csv --launch-skip "$SKIP" --launch-count 900 \
  "$B/run" ds-rollout --device cuda --precision bf16 --ckpt "$W/ck" -i "$D/prompts64.jsonl" -o "$W/r.jsonl" -n 1 \
  --max-batch 64 --template raw --ignore-eos --temperature 1 --max-new-tokens 3 --max-context 512 --seed 7 \
  --no-cuda-graph >"$O/ncu.csv" 2>"$O/ncu.err" || { tail -5 "$O/ncu.err"; exit 1; }
python3 - "$O/ncu.csv" <<'PY'
import collections, csv, sys
rows = list(csv.DictReader(l for l in open(sys.argv[1]) if l.startswith('"')))
names = [r["Kernel Name"].split("(")[0][:70] for r in rows]
ns = [float(r["Metric Value"].replace(",", "")) for r in rows]
emb = [i for i, n in enumerate(names) if "embedding_fwd" in n]
if len(emb) < 2:
    sys.exit("no complete decode step in the profile: adjust SKIP")
a, b = emb[0], emb[1]
total, count = collections.Counter(), collections.Counter()
for n, t in zip(names[a:b], ns[a:b]):
    total[n] += t; count[n] += 1
step = sum(ns[a:b])
print("decode step: %d kernels, %.3f ms of GPU time" % (b - a, step / 1e6))
for n, t in total.most_common(20):
    print("%8.1f us %5.1f%%  x%-3d %s" % (t / 1e3, 100 * t / step, count[n], n))
PY
