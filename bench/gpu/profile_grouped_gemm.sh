#!/usr/bin/env bash
# Nsight Compute sections of the training-shape grouped expert GEMM (the default TMA kernel) beside cuBLASLt's dense
# GEMM of the same FLOPs (issue 5): where the TMA kernel's time goes against cuBLASLt's on the same shapes (written
# when it ran at ~330-460 TFLOP/s against 600-700; its first runs, 14th session, led to the staged write-back:
# bench/gpu/SESSIONS.md). Answers what a tile change cannot: tensor-pipe use, shared-memory and L2 throughput, warp
# stall reasons.
#
#   bench/gpu/profile_grouped_gemm.sh DATA_DIR OUT_DIR      (on the GPU machine, from the repository root)
#
# DATA_DIR holds bundle.tar.xz (../shared/tools/device-bundle of bench/ds-bench-grouped-gemm). Runs
# `ds-bench-grouped-gemm --reps 1 --section train` under ncu (--clock-control none: the clocks are left alone;
# Firecracker machines, KINDS.md), profiling the first COUNT launches (default 24) of the TMA kernel (gate/up then
# down; per load and product: 3 warm-up launches, then the timed one) and the first 12 of cuBLASLt's (nvjet).
# Writes OUT_DIR/ncu_gg.txt (every section of every profiled launch) and prints one line per launch.
# STALLS=1: instead, the warp stall counters (smsp__average_warps_issue_stalled_*_per_issue_active: cycles a warp
# waited per issued instruction, by reason) of the first 3 TMA launches, into OUT_DIR/ncu_stall.txt (the pass that
# found the store queue limiting the write-back, 14th session; DS_GROUPED_GEMM_VARIANT picks the variant).
set -u
D=$1 O=$2
mkdir -p "$O"
B=$(mktemp -d) && tar xJf "$D/bundle.tar.xz" -C "$B"
if [ "${STALLS:-0}" = 1 ]; then
  timeout "${PROFILE_TIMEOUT:-120}" "$B/run" ncu --clock-control none --kernel-name regex:grouped_gemm_tma \
    --launch-count 3 --metrics 'regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio' \
    ds-bench-grouped-gemm --reps 1 --section train >"$O/ncu_stall.txt" 2>&1 || tail -5 "$O/ncu_stall.txt"
  grep -E "grouped_gemm_tma|stalled" "$O/ncu_stall.txt" |
    awk '{ if ($0 ~ /grouped/) print substr($0, 1, 90); else if ($NF + 0 > 0.05) print }'
  exit 0
fi
SECTIONS=(--section SpeedOfLight --section ComputeWorkloadAnalysis --section MemoryWorkloadAnalysis
  --section WarpStateStats --section SchedulerStats --section Occupancy --section LaunchStats)
timeout "${PROFILE_TIMEOUT:-400}" "$B/run" ncu --clock-control none "${SECTIONS[@]}" \
  --kernel-name "regex:grouped_gemm_tma|nvjet" --launch-count "$((${COUNT:-24} + 12))" \
  ds-bench-grouped-gemm --reps 1 --section train >"$O/ncu_gg.txt" 2>"$O/ncu_gg.err" || tail -5 "$O/ncu_gg.err"
# One line per profiled launch: the kernel, its duration and the Speed Of Light figures (the section lists Memory
# and DRAM throughput and the duration before the compute throughput, which closes it).
awk '/^  [^ ]/ && /Context/ { sub(/^  (void )?/, ""); name = $0 }
     /^ +Memory Throughput/ { mem = $NF }
     /^ +DRAM Throughput/ { dram = $NF }
     /^ +Duration/ { dur = $NF " " $(NF - 1) }
     /^ +Compute \(SM\) Throughput/ {
       printf "%-64s %12s  SM %6s%%  memory %6s%%  DRAM %6s%%\n", substr(name, 1, 64), dur, $NF, mem, dram }' \
  "$O/ncu_gg.txt"
