#!/usr/bin/env bash
# Variants of pipelines/r1-zero.sh run side by side with DEVICE=cuda on the GPU machine (issue 4's tuning). The
# GPU run follows the CPU run's recipe step for step (same configs, batches and step counts; f32 on the GPU tracks
# the CPU loss curve), so one ~4-minute call answers what eight 9-minute CPU runs would.
#
#   bench/gpu/r1_zero_sweep.sh BUNDLE VARIANTS OUT_DIR     (on the GPU machine, from the repository root)
#
# BUNDLE: ../shared/tools/device-bundle output (bundle.tar.xz) of ds-tasks, ds-tokenize, ds-pretrain, ds-grpo,
# ds-rollout, ds-reward. VARIANTS: one line per run, environment assignments for r1-zero.sh, e.g.
#   SEED=8 TAGGED_DETAIL_SHARE=0.3
# Every run gets DEVICE=cuda THREADS=2 and EVAL_N=64 (unless the line sets it); at most 8 lines (16 CPU cores).
# OUT_DIR/res.tgz holds each run's log, evaluations and metrics; stdout: pass@1, maj@16, format rate, mean length
# and per-operation accuracy of base and final, and the share of samples that work digit by digit.
set -u
bundle=$1 variants=$2 out=$3
mkdir -p "$out"
B=$(mktemp -d) && tar xJf "$bundle" -C "$B"
W=$(mktemp -d) R=$(mktemp -d)
for p in ds-tasks ds-tokenize ds-pretrain ds-grpo ds-rollout ds-reward; do  # the build-dir layout r1-zero.sh expects
  mkdir -p "$W/cmd/$p"; printf '#!/bin/sh\nexec %s/run %s "$@"\n' "$B" "$p" >"$W/cmd/$p/$p"; chmod +x "$W/cmd/$p/$p"
done
i=0
while read -r line; do
  [ -z "$line" ] && continue
  i=$((i + 1))
  ( export OUT=$R/v$i DEVICE=cuda THREADS=2 EVAL_N=64; eval "export $line"; t0=$(date +%s)
    timeout "${SWEEP_LIMIT_S:-500}" pipelines/r1-zero.sh "$W" >"$R/v$i.log" 2>&1
    echo "rc=$? wall=$(( $(date +%s) - t0 ))s :: $line" >>"$R/v$i.log" ) &
done <"$variants"
wait
(cd "$R" && tar czf "$out/res.tgz" v*.log v*/*_eval.json* v*/*metrics.jsonl 2>/dev/null)
for d in "$R"/v*/; do
  n=$(basename "$d"); tail -1 "$R/$n.log"
  python3 - "$d" <<'PY'
import collections, json, os, sys
d = sys.argv[1]
def worked(c): return "digit by digit" in c or "column by column" in c or "Long division" in c
for m in ("base", "final"):
    f = os.path.join(d, m + "_eval.jsonl")
    if not os.path.exists(f): continue
    rs = [json.loads(l) for l in open(f)]
    acc = [r["rewards"].get("accuracy", 0) > 0 for r in rs]
    ops = collections.defaultdict(list)
    for r, a in zip(rs, acc): ops[next((c for c in "+-*/" if " %s " % c in r["prompt"]), "?")].append(a)
    try: maj = json.load(open(os.path.join(d, m + "_eval.json")))["all"]["maj@k"].get("16", -1)
    except Exception: maj = -1
    print("  %-5s pass@1 %.3f maj@16 %.3f format %.3f len %.0f worked %.2f  %s" % (
        m, sum(acc) / len(rs), maj, sum(r["rewards"].get("format", 0) > 0 for r in rs) / len(rs),
        sum(len(r["completion_tokens"]) for r in rs) / len(rs), sum(worked(r["completion"]) for r in rs) / len(rs),
        " ".join("%s:%.2f" % (k, sum(v) / len(v)) for k, v in sorted(ops.items()))))
PY
done
