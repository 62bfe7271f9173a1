#!/usr/bin/env bash
# Training A/B on the bench config (issue 5): bf16 ds-pretrain binaries run in turn in one call, each REPS times,
# and the median tokens/s after step 3 of each run with its losses (equal losses say the change kept the numbers).
#
#   [REPS=2 STEPS=12] bench/gpu/ab_train.sh DATA_DIR OUT_DIR BIN...     (on the GPU machine, from the repository root)
#
# DATA_DIR as for trace_train.sh (bundle.tar.xz, tok/, corpus.jsonl). BIN is a program name in the bundle's bin/
# (ds-pretrain) or a path to another build of it (run with the bundle's libraries); their file names must differ
# (they name the runs). A switch A/B needs no second build: BIN may be a wrapper script in DATA_DIR, e.g.
# `DS_OPTIM_OVERLAP=0 exec ds-pretrain "$@"` (the bundle's bin/ is on PATH; results-2026-11-30-s17/scripts.tar.xz). Runs alternate (A B A B ...) so that a drift of the clocks over the call falls on both.
# Writes OUT_DIR/train_<name>_<rep>.jsonl (--metrics).
set -u
D=${1:?usage: ab_train.sh DATA_DIR OUT_DIR BIN...} O=${2:?usage: ab_train.sh DATA_DIR OUT_DIR BIN...}
shift 2
[ $# -ge 1 ] || { echo "ab_train.sh: error: no binary given" >&2; exit 3; }
mkdir -p "$O"
B=$(mktemp -d)
if ! tar xJf "$D/bundle.tar.xz" -C "$B"; then echo "ab_train.sh: error: cannot unpack $D/bundle.tar.xz" >&2; exit 3; fi
W=$(mktemp -d)
for r in $(seq 1 "${REPS:-2}"); do
  for bin in "$@"; do
    name=$(basename "$bin")
    timeout "${TRAIN_TIMEOUT:-150}" "$B/run" "$bin" --device cuda --precision bf16 --config bench/gpu/v3_bench_config.json \
      --tokenizer "$D/tok" -i "$D/corpus.jsonl" -o "$W/ck_$name" --overwrite --seq-len 1024 --batch-size 16 \
      --max-steps "${STEPS:-12}" --lr 3e-4 --warmup 2 --eval-fraction 0.02 --eval-batches 1 --save-dtype bf16 \
      --seed 7 --metrics "$O/train_${name}_$r.jsonl" >"$W/log_$name.txt" 2>&1
    echo "[$name run $r] rc=$? $(tail -1 "$W/log_$name.txt")"
  done
done
python3 - "$O" <<'PY'
import glob, json, statistics, sys
for f in sorted(glob.glob(sys.argv[1] + "/train_*.jsonl")):
    rows = [json.loads(l) for l in open(f) if l.strip()]
    tps = [r["tokens_per_s"] for r in rows if r.get("step", 0) > 3 and "tokens_per_s" in r]
    med = "%.0f" % statistics.median(tps) if tps else "n/a"
    print(f.rsplit("/", 1)[-1], "median tok/s after step 3:", med)
    print("  losses:", [round(r["loss"], 4) for r in rows if "loss" in r and "step" in r][:12])
PY
