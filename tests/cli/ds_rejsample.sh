#!/usr/bin/env bash
# Golden CLI test of ds-rejsample: help/usage, one drop reason of each kind on a hand-made fixture (with the
# counts on stderr and in --report-json), the chat JSONL format (string and message-list prompts), a bad
# record (exit 3 with file:line after committing the good records), --skip-bad, .zst, and the
# ds-reward | ds-rejsample pipe. Usage: ds_rejsample.sh PATH/TO/ds-rejsample PATH/TO/ds-reward
set -u
BIN=${1:?usage: ds_rejsample.sh PATH/TO/ds-rejsample PATH/TO/ds-reward}
REWARD=${2:?usage: ds_rejsample.sh PATH/TO/ds-rejsample PATH/TO/ds-reward}
FIX=$(cd "$(dirname "$0")/fixtures" && pwd)
T=$(mktemp -d "${TMPDIR:-/tmp}/ds_rejsample_cli.XXXXXX")
trap 'rm -rf "$T"' EXIT
fails=0

. "$(dirname "$0")/lib.sh"
lines() { wc -l < "$1" | tr -d ' '; }
line() { sed -n "$2p" "$1"; }

RW="$FIX/rl_rewarded.jsonl"
OPTS=(--max-per-prompt 2 --language en --max-mixed-share 0.2 --max-paragraph-chars 200 --drop-code-blocks
      --min-reward 1.5)

expect 0 "--help" -- "$BIN" --help
contains "$T/out" "--max-per-prompt" "--help lists the options"
expect 0 "--version" -- "$BIN" --version
contains "$T/out" "ds-rejsample " "--version"
expect 2 "unknown option" -- "$BIN" --no-such-option "$RW"
expect 2 "unknown language" -- "$BIN" --language klingon "$RW"
expect 2 "share out of range" -- "$BIN" --max-mixed-share 2 "$RW"

# the fixture has one sample per drop reason (see the comments in its generator, in order):
# keep, duplicate, incorrect, unscored, truncated, think_tags, code_block, long_paragraph, mixed_language,
# keep, keep, over_cap, low_reward, keep (message-list prompt)
expect 0 "filter" -- "$BIN" "$RW" "${OPTS[@]}" -o "$T/kept.jsonl" --report-json "$T/report.json"
[ "$(lines "$T/kept.jsonl")" -eq 4 ] || fail "4 samples kept"
contains "$T/err" "read 14, kept 4, dropped 10: unscored 1, incorrect 1, low_reward 1, truncated 1, think_tags 1, code_block 1, long_paragraph 1, mixed_language 1, duplicate 1, over_cap 1" "drop report"
for r in unscored incorrect low_reward truncated think_tags code_block long_paragraph mixed_language duplicate over_cap; do
  contains "$T/report.json" "\"$r\": 1" "report JSON $r"
done
contains "$T/report.json" '"kept": 4' "report JSON kept"
contains "$T/report.json" '"repetitive": 0' "report JSON lists every reason"
line "$T/kept.jsonl" 1 > "$T/k1"
contains "$T/k1" '{"messages":[{"role":"user","content":"What is 3 times 4?"},{"role":"assistant","content":"<think>\nthree times four is twelve\n</think>\n<answer>12</answer>"}],"id":"r0","task":"arithmetic","source":"rejsample"}' "chat record"
line "$T/kept.jsonl" 4 > "$T/k4"
contains "$T/k4" '{"messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"3*4?"},{"role":"assistant","content":' "message-list prompt"

# the filters are off unless asked for: only correctness, truncation, think tags and dedupe remain
expect 0 "defaults" -- "$BIN" "$RW" -o "$T/default.jsonl"
contains "$T/err" "read 14, kept 9, dropped 5: unscored 1, incorrect 1, truncated 1, think_tags 1, duplicate 1" "default filters"
expect 0 "no dedupe, keep truncated, no think check" -- "$BIN" "$RW" --no-dedupe --keep-truncated --allow-missing-think
contains "$T/err" "kept 12, dropped 2: unscored 1, incorrect 1" "switches"

# bad records
printf '%s\n{"prompt":"p","completion":"x","reward":"high"}\n%s\n' "$(line "$RW" 1)" "$(line "$RW" 10)" > "$T/bad.jsonl"
expect 3 "bad record" -- "$BIN" "$T/bad.jsonl" -o "$T/bad_out.jsonl"
contains "$T/err" "field 'reward' must be a number or null (" "bad reward type"
contains "$T/err" "bad.jsonl:2" "bad record location"
[ -f "$T/bad_out.jsonl" ] && [ "$(lines "$T/bad_out.jsonl")" -eq 1 ] || fail "the good record before the bad one was committed"
expect 0 "--skip-bad" -- "$BIN" "$T/bad.jsonl" --skip-bad -o "$T/skip.jsonl"
[ "$(lines "$T/skip.jsonl")" -eq 2 ] || fail "--skip-bad keeps both good records"
contains "$T/err" "skipped 1 bad record(s), first: field 'reward' must be a number or null" "--skip-bad report"
printf '{"prompt":"p","completion":"x","reward":1,"rewards":{"accuracy":"yes"}}\n' > "$T/bad2.jsonl"
expect 3 "bad nested field" -- "$BIN" "$T/bad2.jsonl"
contains "$T/err" "rewards.accuracy" "nested field named"
expect 3 "missing input" -- "$BIN" "$T/nope.jsonl" -o "$T/nope_out.jsonl"
[ -e "$T/nope_out.jsonl" ] && fail "a missing input left an output file"

# .zst and the pipe from ds-reward
expect 0 "zst" -- "$BIN" "$RW" "${OPTS[@]}" -o "$T/kept.jsonl.zst"
zstd -qdc "$T/kept.jsonl.zst" | cmp -s - "$T/kept.jsonl" || fail ".zst output differs"
expect 0 "pipe" -- sh -c "'$REWARD' '$FIX/rl_rollouts.jsonl' | '$BIN' - > '$T/piped.jsonl'"
contains "$T/err" "read 14, kept 4, dropped 10: unscored 2, incorrect 6, think_tags 2" "pipe report"
[ "$(lines "$T/piped.jsonl")" -eq 4 ] || fail "pipe keeps the 4 correct, well-formed samples"

if [ "$fails" -ne 0 ]; then echo "$fails check(s) failed" >&2; exit 1; fi
echo "ds-rejsample CLI: all checks passed"
