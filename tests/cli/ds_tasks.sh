#!/usr/bin/env bash
# Golden CLI test of ds-tasks: help/version/list, usage errors (exit 2), determinism, every subcommand's
# records, .zst round trip, and no output file after a failure. Usage: ds_tasks.sh PATH/TO/ds-tasks
set -u
BIN=${1:?usage: ds_tasks.sh PATH/TO/ds-tasks}
T=$(mktemp -d "${TMPDIR:-/tmp}/ds_tasks_cli.XXXXXX")
trap 'rm -rf "$T"' EXIT
fails=0

. "$(dirname "$0")/lib.sh"
lines() { wc -l < "$1" | tr -d ' '; }

# --help, --version, --list
expect 0 "--help" -- "$BIN" --help
for sub in prompts corpus coldstart chat; do contains "$T/out" "$sub" "--help lists $sub"; done
expect 0 "prompts --help" -- "$BIN" prompts --help
contains "$T/out" "--split" "prompts --help"
expect 0 "corpus --help" -- "$BIN" corpus --help
contains "$T/out" "--imperfect-share" "corpus --help"
contains "$T/out" "--mixed-language-share" "corpus --help"
expect 0 "--version" -- "$BIN" --version
contains "$T/out" "ds-tasks " "--version"
expect 0 "--list" -- "$BIN" --list
for w in countdown arithmetic numbers target expression coldstart chat; do contains "$T/out" "$w" "--list"; done

# usage errors (exit 2) with the program's prefix, and nothing on stdout
expect 2 "no subcommand" -- "$BIN"
contains "$T/err" "ds-tasks: error:" "usage error message"
expect 2 "unknown option" -- "$BIN" prompts --no-such-option
contains "$T/err" "ds-tasks: error:" "usage error message"
expect 2 "unknown subcommand" -- "$BIN" frobnicate
expect 2 "--n 0" -- "$BIN" prompts --n 0
expect 2 "--n -5" -- "$BIN" prompts --n -5
expect 2 "--n abc" -- "$BIN" corpus --n abc
[ -s "$T/out" ] && fail "a usage error wrote to stdout"
expect 2 "bad --task" -- "$BIN" prompts --task sudoku
expect 2 "bad --split" -- "$BIN" prompts --split valid
expect 2 "bad --difficulty" -- "$BIN" prompts --difficulty extreme
expect 2 "share above 1" -- "$BIN" corpus --imperfect-share 1.5
expect 2 "template + prose > 1" -- "$BIN" corpus --template-share 0.7 --prose-share 0.6
expect 2 "bad --seed" -- "$BIN" chat --seed minus-one

# prompts: one JSON object per line, the documented fields, deterministic, seed-dependent
expect 0 "prompts" -- "$BIN" prompts --task countdown --split train --n 50 --seed 7
cp "$T/out" "$T/p1.jsonl"
[ "$(lines "$T/p1.jsonl")" -eq 50 ] || fail "prompts: 50 lines"
contains "$T/p1.jsonl" '{"id":"countdown-train-000000","task":"countdown","split":"train"' "prompt record start"
contains "$T/p1.jsonl" '"numbers":[' "countdown numbers"
contains "$T/p1.jsonl" 'create an equation that equals' "TinyZero wording"
expect 0 "prompts again (seed after the subcommand)" -- "$BIN" prompts --task countdown --n 50 --seed 7
cmp -s "$T/out" "$T/p1.jsonl" || fail "the same seed gave different output"
expect 0 "prompts (seed before the subcommand)" -- "$BIN" --seed 7 prompts --task countdown --n 50
cmp -s "$T/out" "$T/p1.jsonl" || fail "--seed before the subcommand gave different output"
expect 0 "prompts, another seed" -- "$BIN" prompts --task countdown --n 50 --seed 8
cmp -s "$T/out" "$T/p1.jsonl" && fail "another seed gave the same output"
expect 0 "prompts test hard arithmetic" -- "$BIN" prompts --task arithmetic --split test --difficulty hard --n 20
contains "$T/out" '"id":"arithmetic-test-000019"' "test ids"
contains "$T/out" '"expression":"' "arithmetic expression"
# a shorter run is a prefix of a longer one
"$BIN" prompts --n 100 --seed 3 > "$T/long.jsonl" && "$BIN" prompts --n 40 --seed 3 > "$T/short.jsonl"
head -40 "$T/long.jsonl" | cmp -s - "$T/short.jsonl" || fail "--n 40 is not a prefix of --n 100"

# train and test never share a problem (whatever the seeds): compare the prompts
"$BIN" prompts --split train --n 2000 --seed 1 --difficulty easy | grep -o '"prompt":"[^"]*' | sort > "$T/train.txt"
"$BIN" prompts --split test --n 1000 --seed 2 --difficulty easy | grep -o '"prompt":"[^"]*' | sort > "$T/test.txt"
[ "$(comm -12 "$T/train.txt" "$T/test.txt" | wc -l)" -eq 0 ] || fail "train and test overlap"

# corpus, coldstart, chat
expect 0 "corpus" -- "$BIN" corpus --n 200 --seed 4 --imperfect-share 0.2 --mixed-language-share 0.2
[ "$(lines "$T/out")" -eq 200 ] || fail "corpus: 200 lines"
contains "$T/out" '{"text":"' "corpus text"
contains "$T/out" '<think>' "corpus R1 format"
contains "$T/out" '"mixed_language":true' "corpus mixed-language share"
contains "$T/out" '"correct":false' "corpus wrong answers"
expect 0 "corpus without imperfect or mixed documents" -- "$BIN" corpus --n 200 --imperfect-share 0 --mixed-language-share 0
grep -q '"imperfect":true\|"mixed_language":true' "$T/out" && fail "shares of 0 still gave flawed documents"
expect 0 "corpus --drill-share 1" -- "$BIN" corpus --n 20 --drill-share 1
[ "$(grep -c '"style":"drill"' "$T/out")" -eq 20 ] || fail "--drill-share 1: every document a drill"
contains "$T/out" 'Arithmetic facts:' "drill title"
expect 0 "corpus r1-zero style options" -- "$BIN" corpus --n 50 --task arithmetic --uniform-wording --detail-share 1 \
  --tagged-detail-share 0.2
expect 2 "--tagged-detail-share below -1" -- "$BIN" corpus --tagged-detail-share -2
expect 0 "coldstart" -- "$BIN" coldstart --n 20 --seed 4
contains "$T/out" '{"id":"coldstart-000000","messages":[{"role":"user","content":"' "coldstart record"
contains "$T/out" '{"role":"assistant","content":"<think>\n' "coldstart assistant turn"
contains "$T/out" '</answer>"}]' "coldstart answer at the end"
expect 0 "chat" -- "$BIN" chat --n 400 --seed 4
[ "$(lines "$T/out")" -eq 400 ] || fail "chat: 400 lines"
[ "$(sort -u "$T/out" | wc -l)" -ge 380 ] || fail "chat: too many repeats"
contains "$T/out" '"task":"chat"' "chat record"
grep -q '<think>' "$T/out" && fail "chat answers carry a chain of thought"

# -o: a .zst file round trip equals stdout; a plain file too
"$BIN" corpus --n 300 --seed 9 > "$T/plain.jsonl"
expect 0 "-o .zst" -- "$BIN" corpus --n 300 --seed 9 -o "$T/c.jsonl.zst"
[ -s "$T/out" ] && fail "-o still wrote to stdout"
if command -v zstd >/dev/null; then
  zstd -dc "$T/c.jsonl.zst" | cmp -s - "$T/plain.jsonl" || fail ".zst round trip differs"
fi
expect 0 "-o file" -- "$BIN" corpus --n 300 --seed 9 -o "$T/c.jsonl"
cmp -s "$T/c.jsonl" "$T/plain.jsonl" || fail "-o file differs from stdout"

# failures leave no output file
expect 3 "unwritable output" -- "$BIN" chat --n 5 -o "$T/no/such/dir/x.jsonl"
contains "$T/err" "ds-tasks: error:" "unwritable output message"
contains "$T/err" "no/such/dir/x.jsonl" "unwritable output named"
expect 2 "more distinct problems than the split holds" -- \
  "$BIN" prompts --task arithmetic --difficulty easy --split test --n 5000 -o "$T/too_many.jsonl"
contains "$T/err" "ask for fewer" "exhausted split message"
[ -e "$T/too_many.jsonl" ] && fail "a failed run left $T/too_many.jsonl"
ls "$T" | grep -q '\.tmp\.' && fail "a temporary file was left behind"

if [ "$fails" -ne 0 ]; then
  echo "ds_tasks.sh: $fails failure(s)" >&2
  exit 1
fi
echo "ds_tasks.sh: all checks passed"
