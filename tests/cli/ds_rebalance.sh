#!/usr/bin/env bash
# Golden CLI test of ds-rebalance: EPLB's README example (MODEL.md §5.4) reproduced exactly by --exact-eplb,
# the balanced policy better on it, usage errors (bad shapes, exit 2), bad statistics (exit 3 with file:line),
# atomic output (a failed run leaves the old placement), --every keeping the current placement below
# --min-improvement and the last good placement when the statistics turn bad.
# Usage: ds_rebalance.sh PATH/TO/ds-rebalance
set -u
BIN=${1:?usage: ds_rebalance.sh PATH/TO/ds-rebalance}
FIX=$(cd "$(dirname "$0")/fixtures" && pwd)
T=$(mktemp -d "${TMPDIR:-/tmp}/ds_rebalance_cli.XXXXXX")
trap 'rm -rf "$T"' EXIT
fails=0
. "$(dirname "$0")/lib.sh"

README="$FIX/rebalance_readme.jsonl"
SHAPE=(--slots 16 --groups 4 --nodes 2 --gpus 8)

expect 0 "--help" -- "$BIN" --help
contains "$T/out" "--exact-eplb" "--help lists --exact-eplb"
contains "$T/out" "--min-improvement" "--help lists --min-improvement"
expect 0 "--version" -- "$BIN" --version
contains "$T/out" "ds-rebalance " "--version"

# the README example, exactly
expect 0 "exact EPLB" -- "$BIN" "$README" --exact-eplb "${SHAPE[@]}" -o "$T/p.json"
P="$T/p.json"
contains "$P" '"policy":"hierarchical","slots":16,"groups":4,"nodes":2,"gpus":8,"experts":12' "placement header"
contains "$P" '{"layer":0,"phy2log":[5,6,5,7,8,4,3,4,10,9,10,2,0,1,11,1],' "README phy2log layer 0"
contains "$P" '"log2phy":[[12,-1],[15,13],[11,-1],[6,-1],[7,5],[0,2],[1,-1],[3,-1],[4,-1],[9,-1],[8,10],[14,-1]]' \
  "README log2phy layer 0"
contains "$P" '"logcnt":[1,2,1,1,2,2,1,1,1,1,2,1],"gpu_load":[121.5,86.5,125,113,147.5,131.5,156,152]}' \
  "README logcnt and GPU loads layer 0"
contains "$P" '{"layer":1,"phy2log":[7,10,6,8,6,11,8,9,2,4,5,1,5,0,3,1],' "README phy2log layer 1"
contains "$T/out" "policy hierarchical" "report names the policy"
contains "$T/out" "     0         1.8509         1.2081" "report: layer 0 before/after"
contains "$T/out" "replicas added 8" "report: replicas added"
contains "$T/out" "10(2.1x,r2)" "report: hot expert 10 replicated"
check "placement is valid JSON" python3 -c "import json,sys; json.load(open(sys.argv[1]))" "$P"
expect 0 "explicit hierarchical = exact" -- "$BIN" "$README" --policy hierarchical "${SHAPE[@]}" -o "$T/h.json" -q
check "same bytes" cmp -s "$P" "$T/h.json"
expect 0 "global" -- "$BIN" "$README" --exact-eplb --policy global "${SHAPE[@]}" -o "$T/g.json" -q
contains "$T/g.json" '"policy":"global"' "global policy"

# the default policy: better than EPLB on the README input
expect 0 "balanced" -- "$BIN" "$README" "${SHAPE[@]}" -o "$T/b.json"
contains "$T/out" "policy balanced" "balanced report"
contains "$T/out" "     0         1.8509         1.0726" "balanced layer 0: 1.0726 < EPLB's 1.2081"
expect 0 "placement to stdout" -- "$BIN" "$README" "${SHAPE[@]}" -o -
contains "$T/out" '"policy":"balanced"' "JSON on stdout"
contains "$T/err" "overall:" "report on stderr when the placement is on stdout"
expect 0 "default slots (E + E/8, multiple of --gpus)" -- "$BIN" "$README" --gpus 4 -o "$T/d.json" -q
contains "$T/d.json" '"slots":16' "12 + 2 rounded up to 16"

# usage errors
expect 2 "unknown option" -- "$BIN" --frobnicate "$README"
contains "$T/err" "ds-rebalance: error:" "usage message prefix"
expect 2 "no input" -- "$BIN"
expect 2 "R % P" -- "$BIN" "$README" --slots 18 --gpus 8
contains "$T/err" "R % P" "R % P message"
expect 2 "R < E" -- "$BIN" "$README" --slots 8 --gpus 8
expect 2 "P % N" -- "$BIN" "$README" --slots 16 --gpus 8 --nodes 3
expect 2 "hierarchical E % G" -- "$BIN" "$README" --policy hierarchical --slots 16 --gpus 8 --groups 5
contains "$T/err" "E % G" "E % G message"
expect 2 "hierarchical G % N" -- "$BIN" "$README" --policy hierarchical --slots 16 --gpus 8 --groups 4 --nodes 8
expect 2 "--exact-eplb with --policy balanced" -- "$BIN" "$README" --exact-eplb --policy balanced "${SHAPE[@]}"
expect 2 "unknown policy" -- "$BIN" "$README" --policy best
expect 2 "--max-iterations without --every" -- "$BIN" "$README" --max-iterations 2

# bad statistics: exit 3 with file:line; the existing placement is left as it was
cp "$P" "$T/keep.json"
expect 3 "wrong width" -- "$BIN" "$FIX/rebalance_bad_width.jsonl" --gpus 4 -o "$T/keep.json"
contains "$T/err" "rebalance_bad_width.jsonl:2)" "width error names file:line"
check "failed run leaves the old placement" cmp -s "$P" "$T/keep.json"
check "no temporary left" test "$(ls "$T" | grep -c tmp)" -eq 0
expect 3 "negative count" -- "$BIN" "$FIX/rebalance_bad_negative.jsonl" --gpus 4
contains "$T/err" "rebalance_bad_negative.jsonl:1)" "negative count names file:line"
expect 3 "NaN" -- "$BIN" "$FIX/rebalance_bad_nan.jsonl" --gpus 4
contains "$T/err" "rebalance_bad_nan.jsonl:1" "NaN names file:line"
expect 3 "empty" -- "$BIN" "$FIX/rebalance_empty.jsonl" --gpus 4
contains "$T/err" "empty" "empty statistics"
expect 3 "missing layer" -- "$BIN" "$FIX/rebalance_missing_layer.jsonl" --gpus 4
contains "$T/err" "no record for layer 4" "missing layer named"
expect 3 "missing file" -- "$BIN" "$T/nope.jsonl" --gpus 4

# --every: iteration 1 plans, 2 keeps (same statistics: no improvement), 3 bad -> keeps the last good one
cp "$README" "$T/live.jsonl"
( for _ in $(seq 400); do grep -q "iteration 2" "$T/err" 2>/dev/null && break; sleep 0.05; done
  cp "$FIX/rebalance_bad_width.jsonl" "$T/live.jsonl" ) &
expect 0 "--every" -- "$BIN" "$T/live.jsonl" "${SHAPE[@]}" --every 1 --max-iterations 3 -o "$T/live.json" \
  --log-level info
wait
contains "$T/err" "iteration 1: new placement" "first plan written"
contains "$T/err" "iteration 2: keeping the current placement" "no improvement: kept"
contains "$T/err" "live.jsonl:2)" "bad statistics logged with file:line"
contains "$T/err" "keeping the last good placement" "last good placement kept"
check "the placement is the balanced one" cmp -s "$T/b.json" "$T/live.json"
# a changed load that EPLB's plan handles worse is adopted with --min-improvement 0
cp "$README" "$T/live2.jsonl"
expect 0 "--every, threshold 0" -- "$BIN" "$T/live2.jsonl" "${SHAPE[@]}" --exact-eplb --every 0 --max-iterations 2 \
  --min-improvement 0 -o "$T/live2.json" -q
check "placement written" test -s "$T/live2.json"
expect 3 "--every with only bad statistics" -- "$BIN" "$FIX/rebalance_empty.jsonl" --gpus 4 --every 0 \
  --max-iterations 2 -o "$T/never.json"
check "nothing written" test ! -e "$T/never.json"

echo "$fails failure(s)"
exit "$fails"
