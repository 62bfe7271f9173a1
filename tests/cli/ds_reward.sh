#!/usr/bin/env bash
# Golden CLI test of ds-reward: help/usage, byte-exact pass-through of every input field, reward fields,
# summary numbers on a hand-made fixture (computed by hand in the comments below), a bad record in the
# middle (exit 3 with file:line, the good records before it committed), --skip-bad, .zst in/out, '-' pipes,
# idempotent re-scoring. Usage: ds_reward.sh PATH/TO/ds-reward
set -u
BIN=${1:?usage: ds_reward.sh PATH/TO/ds-reward}
FIX=$(cd "$(dirname "$0")/fixtures" && pwd)
T=$(mktemp -d "${TMPDIR:-/tmp}/ds_reward_cli.XXXXXX")
trap 'rm -rf "$T"' EXIT
fails=0

. "$(dirname "$0")/lib.sh"
lacks() { ! grep -qF -- "$2" "$1" || fail "$3: '$2' found in $(basename "$1")"; }
lines() { wc -l < "$1" | tr -d ' '; }
line() { sed -n "$2p" "$1"; }

ROLL="$FIX/rl_rollouts.jsonl"
BAD="$FIX/rl_bad.jsonl"

# --help, --version, usage errors (exit 2)
expect 0 "--help" -- "$BIN" --help
contains "$T/out" "--accuracy-weight" "--help lists the weights"
contains "$T/out" "--skip-bad" "--help lists --skip-bad"
expect 0 "--version" -- "$BIN" --version
contains "$T/out" "ds-reward " "--version"
expect 2 "unknown option" -- "$BIN" --no-such-option "$ROLL"
contains "$T/err" "ds-reward: error:" "usage error message"
expect 2 "unknown language" -- "$BIN" --language klingon --language-weight 1 "$ROLL"
expect 2 "unknown extraction rule" -- "$BIN" --extract regex "$ROLL"
expect 2 "overlong without --max-length" -- "$BIN" --length-penalty overlong "$ROLL"
expect 2 "k = 0" -- "$BIN" --k 0 "$ROLL"
expect 2 "positive repetition penalty" -- "$BIN" --repetition-penalty 1 "$ROLL"

# scoring: every record, every field passed through byte for byte, the reward fields appended
expect 0 "score" -- "$BIN" "$ROLL" -o "$T/scored.jsonl" --summary --k 1,2,4,8 --summary-json "$T/summary.json"
[ "$(lines "$T/scored.jsonl")" -eq "$(lines "$ROLL")" ] || fail "one output line per input record"
n=$(lines "$ROLL")
for i in $(seq 1 "$n"); do
  [ "$i" -eq 5 ] && continue  # record 5 carries old reward fields, which are replaced
  in=$(line "$ROLL" "$i"); out=$(line "$T/scored.jsonl" "$i")
  case "$out" in "${in%\}},\"reward\":"*) ;; *) fail "record $i is not passed through unchanged";; esac
done
S="$T/scored.jsonl"
line "$S" 1 > "$T/l1"
contains "$T/l1" '"score":1.50,"meta":{"nested":[1,{"x":"y"}],"e":"\u00e9"},"logprobs":[-0.5,-1e-3]' "unknown fields kept exactly"
contains "$T/l1" '"reward":2,"rewards":{"accuracy":1,"format":1},"extracted_answer":"12"}' "correct and well formed"
line "$S" 3 > "$T/l3"
contains "$T/l3" '"reward":1,"rewards":{"accuracy":1,"format":0},"extracted_answer":"12"}' "answer line, no tags"
line "$S" 4 > "$T/l4"
contains "$T/l4" '"reward":1,"rewards":{"accuracy":1,"format":0}' "empty think gets no format credit"
line "$S" 5 > "$T/l5"
contains "$T/l5" '"answer":"7/2","reward":1,"rewards":{"accuracy":0,"format":1},"extracted_answer":"3"}' "old reward fields replaced"
lacks "$T/l5" '"old"' "old rewards object"
line "$S" 6 > "$T/l6"
contains "$T/l6" '"reward":2,"rewards":{"accuracy":1,"format":1},"extracted_answer":"\\frac{7}{2}"}' "\\frac equals 7/2"
line "$S" 7 > "$T/l7"
contains "$T/l7" '"extracted_answer":"3.50"}' "3.50 extracted"
contains "$T/l7" '"reward":2,' "3.50 equals 7/2"
line "$S" 9 > "$T/l9"
contains "$T/l9" '"reward":2,"rewards":{"accuracy":1,"format":1},"extracted_answer":"(2 + 3) * 4"}' "countdown correct"
line "$S" 10 > "$T/l10"
contains "$T/l10" '"reward":1,"rewards":{"accuracy":0,"format":1}' "countdown wrong value"
line "$S" 12 > "$T/l12"
contains "$T/l12" '"reward":0,"rewards":{"accuracy":0,"format":0},"extracted_answer":null}' "answer hidden in think"
line "$S" 13 > "$T/l13"
contains "$T/l13" '"reward":null,"rewards":{"accuracy":null,"format":1},"reward_skip_reason":"gold answer cannot be parsed: unbalanced brackets"' "unparseable gold is a skip"

# summary, by hand:
#  arithmetic: a0 n=4 c=3 (rewards 2,1,1,1), a1 n=4 c=2 (1,2,2,1), a2 skipped (2 samples)
#    mean reward 11/8 = 1.375; pass@1 (3/4 + 2/4)/2 = 0.625; pass@2 (1 + (1 - 1/6))/2 = 0.91667; pass@4 1
#    maj: a0 votes 12 (right); a1 votes 3,7/2,7/2,3: ties go to the first seen, "3" (wrong) -> 0.5 for k=1,2,4
#  countdown: c0 n=4 c=1 (2,1,1,0): mean 1, pass@1 0.25, pass@2 1 - C(3,2)/C(4,2) = 0.5, pass@4 1, maj 1
#  k = 8 is clipped to the group size 4
contains "$T/err" "task arithmetic: prompts 2, samples 10, skipped 2, mean reward 1.3750, pass@1 0.6250, pass@2 0.9167, pass@4 1.0000, maj@1 0.5000, maj@2 0.5000, maj@4 0.5000" "arithmetic summary"
contains "$T/err" "task countdown: prompts 1, samples 4, skipped 0, mean reward 1.0000, pass@1 0.2500, pass@2 0.5000, pass@4 1.0000, maj@1 1.0000, maj@2 1.0000, maj@4 1.0000" "countdown summary"
contains "$T/err" "task all: prompts 3, samples 14, skipped 2, mean reward 1.2500, pass@1 0.5000, pass@2 0.7778" "overall summary"
contains "$T/summary.json" '"mean_reward": 1.375' "summary JSON mean reward"
contains "$T/summary.json" '"2": 0.9166666666666666' "summary JSON pass@2"
contains "$T/summary.json" '"max_group": 4' "summary JSON group size"
lacks "$T/summary.json" '"8":' "k = 8 clipped"

# weights and optional terms
expect 0 "weights" -- "$BIN" "$ROLL" --accuracy-weight 2 --format-weight 0
line "$T/out" 1 > "$T/w1"
contains "$T/w1" '"reward":2,"rewards":{"accuracy":1},' "format off, accuracy x2"
expect 0 "language term" -- "$BIN" "$ROLL" --language-weight 1 --language en
contains "$T/out" '"language":' "language term reported"
expect 0 "overlong term" -- "$BIN" "$ROLL" --length-penalty overlong --max-length 40 --overlong-buffer 10 --length-unit chars
line "$T/out" 3 > "$T/o3"
contains "$T/o3" '"length":0}' "short completion: no length penalty"
line "$T/out" 1 > "$T/o1"
contains "$T/o1" '"length":-1}' "long completion: -1"
expect 0 "kimi term" -- "$BIN" "$ROLL" --length-penalty kimi
contains "$T/out" '"length":0.5' "kimi: the shortest correct sample gets 0.5"
expect 0 "repetition term" -- "$BIN" "$ROLL" --repetition-penalty -1
contains "$T/out" '"repetition":' "repetition term reported"
expect 0 "prefilled think" -- "$BIN" "$ROLL" --prepend-think
line "$T/out" 1 > "$T/p1"
contains "$T/p1" '"rewards":{"accuracy":1,"format":0}' "a second <think> breaks the format"

# a bad record in the middle: exit 3 naming file:line, the good records before it are written and committed
expect 3 "bad record" -- "$BIN" "$BAD" -o "$T/bad_out.jsonl"
contains "$T/err" "rl_bad.jsonl:3" "bad record location"
[ -f "$T/bad_out.jsonl" ] || fail "the good records before the bad one were not committed"
[ -f "$T/bad_out.jsonl" ] && [ "$(lines "$T/bad_out.jsonl")" -eq 2 ] || fail "expected the 2 good records before line 3"
ls "$T" | grep -q '\.tmp\.' && fail "a temporary file was left behind"
expect 3 "bad record to stdout" -- "$BIN" "$BAD"
[ "$(lines "$T/out")" -eq 2 ] || fail "stdout: the 2 good records before line 3"
expect 3 "missing completion" -- sh -c "sed -n 5p '$BAD' | '$BIN' -"
contains "$T/err" "missing field 'completion' (<stdin>:1)" "missing field message"
expect 3 "countdown numbers of the wrong type" -- sh -c "sed -n 6p '$BAD' | '$BIN' -"
contains "$T/err" "'numbers'" "wrong numbers type named"
expect 0 "--skip-bad" -- "$BIN" "$BAD" --skip-bad -o "$T/skip.jsonl"
[ "$(lines "$T/skip.jsonl")" -eq 4 ] || fail "--skip-bad keeps the 4 good records"
contains "$T/err" "skipped 3 bad record(s)" "--skip-bad count"
contains "$T/err" "rl_bad.jsonl:3" "--skip-bad first bad line"
line "$T/skip.jsonl" 3 > "$T/s3"
contains "$T/s3" '"answer":1,"reward":1,"rewards":{"accuracy":1,"format":0}' "numeric gold answer"
expect 3 "missing input" -- "$BIN" "$T/nope.jsonl" -o "$T/nope_out.jsonl"
contains "$T/err" "nope.jsonl" "missing input named"
[ -e "$T/nope_out.jsonl" ] && fail "a missing input left an output file"
printf '%s\n%s\n%s\n' "$(line "$ROLL" 1)" "$(line "$ROLL" 9)" "$(line "$ROLL" 2)" > "$T/split_group.jsonl"
expect 3 "kimi needs contiguous groups" -- "$BIN" "$T/split_group.jsonl" --length-penalty kimi -o "$T/kimi.jsonl"
contains "$T/err" "split_group.jsonl:3" "non-contiguous group location"

# .zst in and out, '-' pipes, idempotent re-scoring
expect 0 "zst out" -- "$BIN" "$ROLL" -o "$T/scored.jsonl.zst"
zstd -qdc "$T/scored.jsonl.zst" > "$T/unz.jsonl" && cmp -s "$T/unz.jsonl" "$S" || fail ".zst output differs"
zstd -q "$ROLL" -o "$T/in.jsonl.zst"
expect 0 "zst in" -- "$BIN" "$T/in.jsonl.zst" -o "$T/from_zst.jsonl"
cmp -s "$T/from_zst.jsonl" "$S" || fail ".zst input gives different output"
expect 0 "pipe" -- sh -c "cat '$ROLL' | '$BIN' - | '$BIN' > '$T/piped.jsonl'"
cmp -s "$T/piped.jsonl" "$S" || fail "scoring twice through a pipe is not idempotent"
: > "$T/empty.jsonl"
expect 0 "empty input" -- sh -c "'$BIN' < '$T/empty.jsonl'"
[ -s "$T/out" ] && fail "empty input gives output"

if [ "$fails" -ne 0 ]; then echo "$fails check(s) failed" >&2; exit 1; fi
echo "ds-reward CLI: all checks passed"
